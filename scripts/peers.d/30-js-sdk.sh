# The TypeScript SDK's build and tests (crates/ferry-cli/tests/js_sdk.rs): typescript,
# esbuild, ws, react, react-dom and playwright-core from clients/js/package-lock.json;
# the browser part drives the Debian chromium that 10-base.sh installs.
apt_need chromium
npm_need clients/js
