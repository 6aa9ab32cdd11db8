#!/usr/bin/env bash
# Installs the real vhost-user peers the tests drive: QEMU 10 (bookworm-backports), the rust
# virtiofsd 1.13 (trixie, unpacked privately), the old C virtiofsd (bookworm's QEMU 7.2),
# dpdk-testpmd, and a busybox guest (Debian 6.1 kernel + initramfs with a command agent).
#
# Runs as root on a fresh Debian 12 (bookworm) x86_64 machine. Idempotent: every step leaves a
# stamp or checks its result, so a second run only verifies and prints the summary.
#
# Peers live outside the repository so a fresh clone (CI) reuses them:
#   VUP_PEERS_DIR  (default /var/cache/vhost-user-proxy/peers)
# Set VUP_SETUP_FORCE=1 to redo every step.
set -euo pipefail

PEERS="${VUP_PEERS_DIR:-/var/cache/vhost-user-proxy/peers}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GUEST_SRC="$REPO/tests/harness/guest"
STAMPS="$PEERS/stamps"
FORCE="${VUP_SETUP_FORCE:-0}"
export DEBIAN_FRONTEND=noninteractive
# apt-get download writes into our own directories, which the _apt sandbox user cannot access.
DL_OPTS=(-q -o APT::Sandbox::User=root)

# The guest modules the harness needs; their dependencies are resolved from modules.dep.
GUEST_MODULES=(virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev fuse
  virtiofs)

step_started=0
current_step=""
log() { printf '[setup_peers] %s\n' "$*" >&2; }
die() {
  printf '[setup_peers] ERROR%s: %s\n' "${current_step:+ in step '$current_step'}" "$*" >&2
  exit 1
}
trap 'rc=$?; if [ $rc -ne 0 ]; then printf "[setup_peers] FAILED%s (exit %s); see the output above\n" "${current_step:+ in step '"'"'$current_step'"'"'}" "$rc" >&2; fi' EXIT

begin() {
  current_step="$1"
  step_started=$(date +%s)
  log "== $1"
}
done_step() { log "   ok ($(($(date +%s) - step_started)) s)"; }
stamped() { [ "$FORCE" != 1 ] && [ -e "$STAMPS/$1" ]; }
stamp() { touch "$STAMPS/$1"; }

[ "$(id -u)" = 0 ] || die "must run as root (installs apt packages)"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported, this is $(uname -m)"
grep -q '^VERSION_CODENAME=bookworm' /etc/os-release || die "expects Debian 12 (bookworm)"
mkdir -p "$PEERS/bin" "$STAMPS" "$PEERS/debs" "$PEERS/guest"
t0=$(date +%s)

# ---------------------------------------------------------------------------------------------
begin "system packages (bookworm + QEMU from bookworm-backports)"
SYS_SOURCES=/etc/apt/sources.list.d/debian.sources
BPO_SOURCES=/etc/apt/sources.list.d/vup-bookworm-backports.sources
[ -r "$SYS_SOURCES" ] || die "cannot read $SYS_SOURCES to find the Debian mirror"
# The first stanza of debian.sources names the main archive (the second is debian-security).
MIRROR="$(awk '/^URIs:/ {print $2; exit}' "$SYS_SOURCES")"
KEYRING="$(awk '/^Signed-By:/ {print $2; exit}' "$SYS_SOURCES")"
[ -n "$MIRROR" ] || die "no URIs: line in $SYS_SOURCES"
KEYRING="${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
bpo_wanted="Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: $KEYRING"
need_update=0
if [ ! -e "$BPO_SOURCES" ] || [ "$(cat "$BPO_SOURCES")" != "$bpo_wanted" ]; then
  printf '%s\n' "$bpo_wanted" >"$BPO_SOURCES"
  need_update=1
fi
# dpdk-testpmd is in dpdk-dev; the vhost and virtio_user PMDs are separate plugin packages.
# python3 and procps (pgrep) serve the tests, gcc and libc6-dev the C baselines of the bench.
SYS_PKGS=(busybox-static cpio gzip xz-utils zstd socat kmod ca-certificates binutils python3 procps gcc libc6-dev
  dpdk dpdk-dev librte-net-vhost23 librte-net-virtio23 librte-mempool-ring23)
qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null &&
    qemu-system-x86_64 --version | grep -Eq 'version (1[0-9]|[2-9][0-9])\.' &&
    command -v qemu-img >/dev/null
}
pkgs_ok() {
  local p
  for p in "${SYS_PKGS[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || return 1
  done
}
if [ "$FORCE" = 1 ] || ! qemu_ok || ! pkgs_ok || [ $need_update = 1 ]; then
  apt-get update -q || die "apt-get update failed"
  apt-get install -y -q --no-install-recommends "${SYS_PKGS[@]}" || die "installing ${SYS_PKGS[*]} failed"
  apt-get install -y -q --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils ||
    die "installing qemu-system-x86 qemu-utils from bookworm-backports failed"
fi
qemu_ok || die "qemu-system-x86_64 >= 10 not found after install: $(qemu-system-x86_64 --version 2>&1 | head -1)"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd missing after installing dpdk"
done_step

# ---------------------------------------------------------------------------------------------
begin "rust virtiofsd from trixie (private apt, private root)"
VFSD_ROOT="$PEERS/virtiofsd-root"
TRIXIE_APT="$PEERS/apt-trixie"
vfsd_ok() { "$PEERS/bin/virtiofsd" --version >/dev/null 2>&1; }
if ! stamped virtiofsd || ! vfsd_ok; then
  # A private apt configuration: its own sources list, state, lists and cache, no system
  # preferences, and an empty dpkg status, so the system's apt never learns about trixie.
  mkdir -p "$TRIXIE_APT"/{lists/partial,cache/archives/partial,etc/preferences.d,etc/sources.list.d}
  : >"$TRIXIE_APT/status"
  printf 'deb [signed-by=%s] %s trixie main\n' "$KEYRING" "$MIRROR" >"$TRIXIE_APT/etc/sources.list"
  TAPT=(-o "Dir::Etc::SourceList=$TRIXIE_APT/etc/sources.list"
    -o "Dir::Etc::SourceParts=$TRIXIE_APT/etc/sources.list.d"
    -o "Dir::Etc::Preferences=$TRIXIE_APT/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$TRIXIE_APT/etc/preferences.d"
    -o "Dir::State::Lists=$TRIXIE_APT/lists"
    -o "Dir::State::status=$TRIXIE_APT/status"
    -o "Dir::Cache=$TRIXIE_APT/cache"
    -o "Dir::Cache::archives=$TRIXIE_APT/cache/archives"
    -o "APT::Default-Release=trixie"
    -o "Debug::NoLocking=1")
  apt-get "${TAPT[@]}" update -q || die "apt-get update of the private trixie sources failed"
  dl="$PEERS/debs/trixie"
  rm -rf "$dl" && mkdir -p "$dl"
  (cd "$dl" && apt-get "${TAPT[@]}" "${DL_OPTS[@]}" download virtiofsd libc6 libcap-ng0 libseccomp2 libgcc-s1) ||
    die "apt-get download from trixie failed"
  rm -rf "$VFSD_ROOT" && mkdir -p "$VFSD_ROOT"
  for deb in "$dl"/*.deb; do dpkg -x "$deb" "$VFSD_ROOT"; done
  [ -x "$VFSD_ROOT/usr/libexec/virtiofsd" ] || die "usr/libexec/virtiofsd not in the trixie package"
  # Every NEEDED library must come from the private root (bookworm's glibc 2.36 is too old).
  for lib in $(readelf -d "$VFSD_ROOT/usr/libexec/virtiofsd" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
    [ -e "$VFSD_ROOT/usr/lib/x86_64-linux-gnu/$lib" ] || [ -e "$VFSD_ROOT/lib/x86_64-linux-gnu/$lib" ] ||
      die "virtiofsd needs $lib, which is not in the downloaded trixie packages"
  done
  cat >"$PEERS/bin/virtiofsd" <<EOF
#!/bin/sh
# virtiofsd from Debian trixie, run with its own glibc through the private loader.
ROOT='$VFSD_ROOT'
exec "\$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \\
  --library-path "\$ROOT/usr/lib/x86_64-linux-gnu:\$ROOT/lib/x86_64-linux-gnu" \\
  "\$ROOT/usr/libexec/virtiofsd" "\$@"
EOF
  chmod +x "$PEERS/bin/virtiofsd"
  stamp virtiofsd
fi
vfsd_version="$("$PEERS/bin/virtiofsd" --version 2>&1 | head -1)" || die "virtiofsd --version failed: $vfsd_version"
vfsd_caps="$("$PEERS/bin/virtiofsd" --print-capabilities 2>&1)" || die "virtiofsd --print-capabilities failed: $vfsd_caps"
grep -q migrate-precopy <<<"$vfsd_caps" || die "virtiofsd capabilities lack migrate-precopy: $vfsd_caps"
done_step

# ---------------------------------------------------------------------------------------------
begin "C virtiofsd from bookworm's qemu-system-common 7.2"
cvfsd_ok() { "$PEERS/bin/virtiofsd-c" --version >/dev/null 2>&1; }
if ! stamped virtiofsd-c || ! cvfsd_ok; then
  ver="$(apt-cache madison qemu-system-common | awk -F'|' '$2 ~ /^ *1:7\.2/ {gsub(/ /, "", $2); print $2; exit}')"
  [ -n "$ver" ] || die "no qemu-system-common 1:7.2 version known to apt (is bookworm in the sources?)"
  dl="$PEERS/debs/qemu-7.2"
  rm -rf "$dl" && mkdir -p "$dl"
  (cd "$dl" && apt-get "${DL_OPTS[@]}" download "qemu-system-common=$ver") || die "apt-get download qemu-system-common=$ver failed"
  x="$(mktemp -d)"
  dpkg -x "$dl"/qemu-system-common_*.deb "$x"
  [ -x "$x/usr/lib/qemu/virtiofsd" ] || die "usr/lib/qemu/virtiofsd not in qemu-system-common=$ver"
  install -m 0755 "$x/usr/lib/qemu/virtiofsd" "$PEERS/bin/virtiofsd-c"
  rm -rf "$x"
  if ldd "$PEERS/bin/virtiofsd-c" | grep -q 'not found'; then
    die "virtiofsd-c misses libraries: $(ldd "$PEERS/bin/virtiofsd-c" | grep 'not found' | tr '\n' ' ')"
  fi
  echo "$ver" >"$PEERS/virtiofsd-c.version"
  stamp virtiofsd-c
fi
cvfsd_ok || die "virtiofsd-c --version failed: $("$PEERS/bin/virtiofsd-c" --version 2>&1 | head -3)"
done_step

# ---------------------------------------------------------------------------------------------
begin "guest kernel and modules (linux-image-amd64 from bookworm)"
GUEST="$PEERS/guest"
if ! stamped guest-kernel || [ ! -e "$GUEST/vmlinuz" ] || [ ! -e "$GUEST/kernel.package" ]; then
  kpkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6\.1\.[^ ]*-amd64$/ {print $2; exit}')"
  [ -n "$kpkg" ] || die "linux-image-amd64 does not depend on a linux-image-6.1.*-amd64 package"
  dl="$PEERS/debs/kernel"
  rm -rf "$dl" && mkdir -p "$dl"
  (cd "$dl" && apt-get "${DL_OPTS[@]}" download "$kpkg") || die "apt-get download $kpkg failed"
  kver="${kpkg#linux-image-}"
  x="$(mktemp -d)"
  dpkg-deb --fsys-tarfile "$dl/${kpkg}"_*.deb | tar -x -C "$x" "./boot/vmlinuz-$kver" ||
    die "boot/vmlinuz-$kver missing in $kpkg"
  cp "$x/boot/vmlinuz-$kver" "$GUEST/vmlinuz"
  rm -rf "$x" "$GUEST/kernel-root"
  echo "$kpkg" >"$GUEST/kernel.package"
  echo "$kver" >"$GUEST/kernel.version"
  stamp guest-kernel
fi
kver="$(cat "$GUEST/kernel.version")"
done_step

# ---------------------------------------------------------------------------------------------
begin "guest initramfs (busybox-static + modules + agent)"
# Rebuild when the guest sources or the kernel changed (hash of inputs as the stamp).
inputs_hash="$( (
  cat "$GUEST_SRC"/* "$GUEST/kernel.version" /bin/busybox
  printf '%s\n' "${GUEST_MODULES[@]}"
) | sha256sum | cut -c1-16)"
if ! stamped "initramfs-$inputs_hash" || [ ! -e "$GUEST/initramfs.cpio.gz" ]; then
  [ -d "$GUEST_SRC" ] || die "guest sources missing: $GUEST_SRC"
  build="$(mktemp -d)"
  # The module tree is unpacked only while building (it is ~400 MB); the .deb stays cached.
  kroot="$build/kernel-root"
  mkdir -p "$kroot"
  dpkg-deb --fsys-tarfile "$PEERS/debs/kernel/$(cat "$GUEST/kernel.package")"_*.deb |
    tar -x -C "$kroot" "./lib/modules/$kver" || die "cannot unpack the modules of $kver"
  # modules.dep is generated at install time, not shipped: build it for the unpacked tree.
  depmod -b "$kroot" "$kver" || die "depmod for $kver failed"
  moddir="$kroot/lib/modules/$kver"
  root="$build/root"
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,mnt,tmp,etc,lib/modules,run}
  cp /bin/busybox "$root/bin/busybox"
  # Install applet links at build time so /init can call them by name.
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  # Resolve each wanted module and its dependencies (modules.dep lists deps depth-first), skipping
  # built-ins. The load order file lists dependencies before their users.
  declare -A seen=()
  order=()
  add_module() {
    local name="$1" line path dep
    name="${name//-/_}"
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    if grep -Eq "/${name}\.ko(\.[a-z]+)?\$" "$moddir/modules.builtin" 2>/dev/null; then return 0; fi
    line="$(grep -E "(^|/)${name}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -1)" || true
    [ -n "$line" ] || { grep -Eq "/${name//_/[-_]}\.ko" "$moddir/modules.builtin" && return 0; die "module $name not found in $moddir"; }
    path="${line%%:*}"
    for dep in ${line#*:}; do
      dep="$(basename "$dep")"
      add_module "${dep%%.ko*}"
    done
    order+=("$path")
  }
  for m in "${GUEST_MODULES[@]}"; do add_module "$m"; done
  : >"$root/lib/modules/load-order"
  compression="none"
  for path in "${order[@]}"; do
    base="$(basename "$path")"
    # busybox insmod cannot read compressed modules: decompress them here.
    case "$base" in
      *.ko.xz) compression=xz; xz -dc "$moddir/$path" >"$root/lib/modules/${base%.xz}" ;;
      *.ko.zst) compression=zstd; zstd -qdc "$moddir/$path" >"$root/lib/modules/${base%.zst}" ;;
      *.ko.gz) compression=gzip; gzip -dc "$moddir/$path" >"$root/lib/modules/${base%.gz}" ;;
      *.ko) cp "$moddir/$path" "$root/lib/modules/$base" ;;
      *) die "unexpected module file $path" ;;
    esac
    echo "${base%%.ko*}.ko" >>"$root/lib/modules/load-order"
  done
  install -m 0755 "$GUEST_SRC/init" "$root/init"
  install -m 0755 "$GUEST_SRC/agent.sh" "$root/bin/vup-agent"
  (cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$build/initramfs.cpio.gz"
  mv "$build/initramfs.cpio.gz" "$GUEST/initramfs.cpio.gz"
  rm -rf "$build"
  echo "$compression" >"$GUEST/modules.compression"
  rm -f "$STAMPS"/initramfs-*
  stamp "initramfs-$inputs_hash"
fi
done_step
current_step=""

# ---------------------------------------------------------------------------------------------
cat >"$PEERS/versions.txt" <<EOF
qemu:          $(qemu-system-x86_64 --version | head -1)
virtiofsd:     $vfsd_version ($PEERS/bin/virtiofsd)
virtiofsd-c:   qemu-system-common $(cat "$PEERS/virtiofsd-c.version") ($PEERS/bin/virtiofsd-c)
dpdk-testpmd:  dpdk $(dpkg-query -W -f='${Version}' dpdk) ($(command -v dpdk-testpmd))
guest kernel:  $kver, modules compressed: $(cat "$GUEST/modules.compression") ($GUEST/vmlinuz)
guest initrd:  busybox-static $(dpkg-query -W -f='${Version}' busybox-static) ($GUEST/initramfs.cpio.gz, $(stat -c %s "$GUEST/initramfs.cpio.gz") bytes)
EOF
log "peers in $PEERS (took $(($(date +%s) - t0)) s):"
sed 's/^/  /' "$PEERS/versions.txt" >&2
