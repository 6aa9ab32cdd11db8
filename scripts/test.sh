#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine (as root): installs the real peers (QEMU 10,
# virtiofsd 1.13, the C virtiofsd, DPDK, a guest kernel and initramfs), the pinned Deno, then runs
# the unit and end-to-end tests. Ends with "N passed, N failed". CI (.ci/run) runs it with a fresh,
# empty VUP_PEERS_DIR, so every run installs the peers from nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup_peers.sh
PATH="$(bash scripts/bootstrap.sh):$PATH"
export PATH
deno task test "$@"
