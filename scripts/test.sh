#!/usr/bin/env bash
# The test command (README.md): provision every external peer the tests drive, then run
# every test. Works on a fresh Debian machine with Rust, Python 3 and Node; each step in
# scripts/peers.d/ is idempotent and quick when its peer is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/peers.d/lib.sh
source scripts/peers.d/lib.sh
for step in scripts/peers.d/[0-9]*.sh; do
    # shellcheck disable=SC1090
    source "$step"
done
echo "== tests"
exec cargo test --workspace --all-targets "$@"
