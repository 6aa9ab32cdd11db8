#!/usr/bin/env bash
# Installs the pinned Deno (toolchain/package.json, kept out of the project root's node_modules so
# it never shadows `deno` inside `deno task`) and prints its directory for PATH (the only line on
# stdout; everything else goes to stderr).
#
# Deno comes from the npm registry, so npm is needed: when it is missing (a fresh Debian 12 has
# neither node nor npm) it is installed from Debian's packages (`nodejs npm`, needs root).
# npm's own errors are shown; a failed install prints what failed and exits non-zero.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deno="$root/toolchain/node_modules/.bin/deno"
log() { printf '[bootstrap] %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

if [ ! -x "$deno" ] || ! "$deno" --version >/dev/null 2>&1; then
  if ! command -v npm >/dev/null; then
    log "npm not found: installing nodejs and npm from Debian's packages"
    [ "$(id -u)" = 0 ] || die "npm is missing and installing it needs root: apt-get install nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q --no-install-recommends nodejs npm >&2 ||
      { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends nodejs npm >&2; }; } ||
      die "apt-get install nodejs npm failed (see above)"
    command -v npm >/dev/null || die "npm still missing after apt-get install nodejs npm"
  fi
  log "installing the pinned Deno with npm ci (toolchain/package-lock.json) …"
  # Not --silent: with an unreachable registry that printed nothing at all. Errors only.
  if ! (cd "$root/toolchain" && npm ci --no-audit --no-fund --no-progress --loglevel=error) >&2; then
    die "npm ci in $root/toolchain failed (npm $(npm --version 2>/dev/null || echo '?'), registry $(npm config get registry 2>/dev/null || echo '?')): the pinned Deno is not installed"
  fi
  "$deno" --version >/dev/null 2>&1 || die "npm ci succeeded but $deno does not run"
fi
echo "$root/toolchain/node_modules/.bin"
