#!/usr/bin/env bash
# Installs the pinned Deno (toolchain/package.json, kept out of the project root's node_modules so
# it never shadows `deno` inside `deno task`) and prints its directory for PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$root/toolchain/node_modules/.bin/deno" ]; then
  (cd "$root/toolchain" && npm ci --no-audit --no-fund --silent) >&2
fi
echo "$root/toolchain/node_modules/.bin"
