#!/usr/bin/env bash
# Provision every external peer the tests drive (the first half of README's test command,
# `bash scripts/peers.sh && cargo test --workspace --all-targets`). Works on a fresh Debian
# machine with Rust, Python 3 and Node; each step in scripts/peers.d/ is idempotent and
# quick when its peer is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/peers.d/lib.sh
source scripts/peers.d/lib.sh
for step in scripts/peers.d/[0-9]*.sh; do
    # shellcheck disable=SC1090
    source "$step"
done
echo "== test peers ready"
