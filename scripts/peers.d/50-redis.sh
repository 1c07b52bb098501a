# Redis for the scale-out tests (crates/ferry-cli/tests/cluster.rs, crates/ferry-hub's
# Redis conformance): Debian redis-server, started by the tests on an ephemeral loopback
# port with a temporary directory. The package's own service is not needed and is stopped
# if the install started it.
if ! command -v redis-server >/dev/null 2>&1; then
    apt_need redis-server
    if command -v service >/dev/null 2>&1; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
fi
