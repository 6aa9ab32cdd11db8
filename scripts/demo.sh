#!/usr/bin/env bash
# The main job: a live migration of a guest with open files between two QEMU, each virtiofsd
# behind its own vhost-user-proxy, its device state decoded; then a failed migration rehearsed
# with --fault and explained from the proxies' logs (tests/demo/migration.ts).
# `--single`: one guest on virtio-fs through one proxy, its decoded conversation
# (tests/demo/single_guest.ts). Exits non-zero, with a "demo FAILED: …" line, if any step fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup_peers.sh
PATH="$(bash scripts/bootstrap.sh):$PATH"
export PATH
deno task demo "$@"
