/**
 * Where the real peers installed by `scripts/setup_peers.sh` live, and a check that fails a
 * test loudly (never skips it) when one is missing.
 *
 * @module
 */

import { settlesWithin } from "./child.ts";

/** The peers the harness can drive. */
export type PeerName =
  | "qemu"
  | "virtiofsd"
  | "virtiofsd-c"
  | "testpmd"
  | "kernel"
  | "initrd";

/** Root of the installed peers: `$VUP_PEERS_DIR` or the setup script's default. */
export function peersDir(): string {
  return Deno.env.get("VUP_PEERS_DIR") ?? "/var/cache/vhost-user-proxy/peers";
}

/** Absolute path of a peer (whether or not it exists). */
export function peerPath(name: PeerName): string {
  const root = peersDir();
  switch (name) {
    case "qemu":
      return Deno.env.get("VUP_QEMU") ?? "/usr/bin/qemu-system-x86_64";
    case "virtiofsd":
      return `${root}/bin/virtiofsd`;
    case "virtiofsd-c":
      return `${root}/bin/virtiofsd-c`;
    case "testpmd":
      return "/usr/bin/dpdk-testpmd";
    case "kernel":
      return `${root}/guest/vmlinuz`;
    case "initrd":
      return `${root}/guest/initramfs.cpio.gz`;
  }
}

/** A peer the test needs is not installed (or unusable). */
export class PeerMissingError extends Error {
  /** The missing peer. */
  readonly peer: PeerName;
  readonly path: string;

  /** `reason` says what is wrong with `path`. */
  constructor(peer: PeerName, path: string, reason: string) {
    super(
      `Peer "${peer}" is not usable at "${path}": ${reason}; run scripts/setup_peers.sh (as root)`,
    );
    this.name = "PeerMissingError";
    this.peer = peer;
    this.path = path;
  }
}

const MIN_QEMU_MAJOR = 10;
let qemuVersionChecked = false;

/**
 * Checks that every named peer exists (and that QEMU is new enough) and returns their paths.
 * Throws {@linkcode PeerMissingError} for the first one that is not usable.
 *
 * @example
 * ```ts
 * const peers = await requirePeers("qemu", "virtiofsd", "kernel", "initrd");
 * console.log(peers.virtiofsd);
 * ```
 */
export async function requirePeers<N extends PeerName>(
  ...names: N[]
): Promise<Record<N, string>> {
  const found = {} as Record<N, string>;
  for (const name of names) {
    const path = peerPath(name);
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch {
      throw new PeerMissingError(name, path, "file not found");
    }
    if (!info.isFile) throw new PeerMissingError(name, path, "not a regular file");
    if (name === "qemu" && !qemuVersionChecked) {
      const major = await qemuMajorVersion(path);
      if (major < MIN_QEMU_MAJOR) {
        throw new PeerMissingError(name, path, `QEMU ${major}.x is older than ${MIN_QEMU_MAJOR}.0`);
      }
      qemuVersionChecked = true;
    }
    found[name] = path;
  }
  return found;
}

async function qemuMajorVersion(path: string): Promise<number> {
  const output = await new Deno.Command(path, { args: ["--version"], stdout: "piped" }).output();
  const match = new TextDecoder().decode(output.stdout).match(/version (\d+)\./);
  return match ? Number(match[1]) : 0;
}

/** The accelerator QEMU should use and the matching CPU model. */
export interface Accel {
  accel: "kvm" | "tcg";
  cpu: string;
  /** Why this accelerator was chosen. */
  reason: string;
}

let accelProbe: Promise<Accel> | undefined;

/**
 * Chooses KVM when it is really usable, else TCG with `-cpu max`. `VUP_ACCEL=kvm|tcg`
 * overrides. Probing boots the guest kernel to its "no root" panic under KVM: /dev/kvm can exist
 * yet be unusable (PVM hosts abort, or run ~1000x slower), so only a fast, clean exit counts.
 * The result is cached for the process.
 */
export function probeAccel(): Promise<Accel> {
  accelProbe ??= probeAccelUncached();
  return accelProbe;
}

const TCG: Omit<Accel, "reason"> = { accel: "tcg", cpu: "max" };
const KVM: Omit<Accel, "reason"> = { accel: "kvm", cpu: "host" };
const KVM_PROBE_BUDGET_MS = 5000;

async function probeAccelUncached(): Promise<Accel> {
  const forced = Deno.env.get("VUP_ACCEL");
  if (forced === "kvm") return { ...KVM, reason: "VUP_ACCEL=kvm" };
  if (forced === "tcg") return { ...TCG, reason: "VUP_ACCEL=tcg" };
  try {
    (await Deno.open("/dev/kvm", { read: true, write: true })).close();
  } catch (error) {
    return { ...TCG, reason: `/dev/kvm not usable: ${(error as Error).message}` };
  }
  const probe = new Deno.Command(peerPath("qemu"), {
    args: [
      ...["-accel", "kvm", "-cpu", "host", "-m", "256", "-machine", "q35"],
      ...["-display", "none", "-nodefaults", "-no-user-config", "-no-reboot", "-serial", "none"],
      ...["-kernel", peerPath("kernel"), "-append", "panic=-1 console=ttyS0 root=/dev/none"],
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const inTime = await settlesWithin(probe.status, KVM_PROBE_BUDGET_MS);
  if (!inTime) {
    probe.kill("SIGKILL");
    await probe.status;
    return { ...TCG, reason: `KVM probe boot took over ${KVM_PROBE_BUDGET_MS} ms` };
  }
  const status = await probe.status;
  // With -no-reboot a guest panic makes QEMU exit 0; an abort is a signal or an error code.
  return status.success
    ? { ...KVM, reason: "KVM probe boot finished in time" }
    : { ...TCG, reason: `KVM probe QEMU failed (code ${status.code})` };
}
