#!/usr/bin/env bash
# The main job: boots a Linux guest whose virtio-fs share is served by virtiofsd through the
# proxy, does file I/O in the guest, and shows the proxy's decoded conversation.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup_peers.sh
PATH="$(bash scripts/bootstrap.sh):$PATH"
export PATH
deno task demo "$@"
