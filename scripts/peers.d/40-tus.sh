# tus interop peers (crates/ferry-cli/tests/tus_interop.rs, bench/tus): npm tus-js-client,
# @tus/server and @tus/file-store (tests/tus/package-lock.json), PyPI tuspy, curl.
apt_need curl
npm_need tests/tus
if ! python3 -c "import tusclient" >/dev/null 2>&1; then
    echo "== installing PyPI package: tuspy==1.1.0"
    python3 -m pip install --quiet "tuspy==1.1.0" ||
        python3 -m pip install --quiet --break-system-packages "tuspy==1.1.0"
fi
