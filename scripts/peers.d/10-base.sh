# The peers of the first release's tests: chromium (browser test), curl (CLI tests),
# kosoku (Autobahn, both roles; pinned: docs/autobahn-*.md record its verdicts) and
# playwright-core, which drives the Debian chromium with no browser download.
apt_need chromium curl
pip_need "kosoku==0.1.0" kosoku
npm_need tests/browser
