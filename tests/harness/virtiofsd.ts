/**
 * The virtio-fs back-ends: the rust virtiofsd 1.13 (device state, migratable) and the old C
 * virtiofsd from QEMU 7.2 (no device state: QEMU 10 refuses to migrate it).
 *
 * @module
 */

import { Child, tail } from "./child.ts";
import { requirePeers } from "./peers.ts";
import { socketExists, waitFor } from "./wait.ts";

/** Rust virtiofsd migration flags (see protocol.md §4.2). */
export interface VirtiofsdMigration {
  /** Default `find-paths`. */
  mode?: "find-paths" | "file-handles";
  /** Default `abort`. */
  onError?: "abort" | "guest-error";
  /** Adds `--migration-verify-handles`. */
  verifyHandles?: boolean;
}

/** Options shared by both virtiofsd flavours. */
export interface VirtiofsdOptions {
  /** Label for logs and errors; default `virtiofsd`. */
  name?: string;
  /** Where virtiofsd listens. */
  socketPath: string;
  /** Directory exported to the guest. */
  sharedDir: string;
  /** Directory for `<name>.stderr.log` / `<name>.stdout.log`. */
  logDir: string;
  /** Appended to the command line as is. */
  extraArgs?: string[];
  /** How long to wait for the socket; default 10000 ms. */
  startTimeoutMs?: number;
}

/** Options for the rust virtiofsd. */
export interface RustVirtiofsdOptions extends VirtiofsdOptions {
  /** `--tag` (makes virtiofsd offer the CONFIG protocol feature). */
  tag?: string;
  /** Migration flags; default `{mode: "find-paths", onError: "abort"}`; `false` omits them. */
  migration?: VirtiofsdMigration | false;
  /** `--log-level`; default `info`. */
  logLevel?: "error" | "warn" | "info" | "debug" | "trace" | "off";
  /** Another copy of the binary (an upgrade); default the installed peer. */
  binary?: string;
}

/** A running virtiofsd. Disposing it stops it. */
export class Virtiofsd implements AsyncDisposable {
  readonly name: string;
  readonly socketPath: string;
  readonly sharedDir: string;
  /** The full command line, for reports. */
  readonly argv: string[];
  readonly child: Child;

  constructor(name: string, socketPath: string, sharedDir: string, argv: string[], child: Child) {
    this.name = name;
    this.socketPath = socketPath;
    this.sharedDir = sharedDir;
    this.argv = argv;
    this.child = child;
  }

  /** Resolves when the process exits (virtiofsd exits when its one front-end disconnects). */
  get exited(): Promise<Deno.CommandStatus> {
    return this.child.exited;
  }

  /** The stderr log so far (virtiofsd logs there). */
  stderrLog(): Promise<string> {
    return this.child.stderrText();
  }

  /** SIGTERM, then SIGKILL after 3 s. Idempotent. */
  stop(): Promise<Deno.CommandStatus> {
    return this.child.stop();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts the rust virtiofsd and waits until its socket exists.
 *
 * @example
 * ```ts
 * await using vfsd = await startVirtiofsd({
 *   socketPath: dir.join("vfs.sock"),
 *   sharedDir: await dir.mkdir("share"),
 *   logDir: dir.path,
 * });
 * ```
 */
export async function startVirtiofsd(options: RustVirtiofsdOptions): Promise<Virtiofsd> {
  const virtiofsd = options.binary ?? (await requirePeers("virtiofsd")).virtiofsd;
  const args = [
    `--socket-path=${options.socketPath}`,
    `--shared-dir=${options.sharedDir}`,
    `--log-level=${options.logLevel ?? "info"}`,
  ];
  if (options.tag !== undefined) args.push(`--tag=${options.tag}`);
  if (options.migration !== false) {
    const migration = options.migration ?? {};
    args.push(`--migration-mode=${migration.mode ?? "find-paths"}`);
    args.push(`--migration-on-error=${migration.onError ?? "abort"}`);
    if (migration.verifyHandles) args.push("--migration-verify-handles");
  }
  args.push(...(options.extraArgs ?? []));
  return await launch(options.name ?? "virtiofsd", virtiofsd, args, options);
}

/**
 * Starts the C virtiofsd (QEMU 7.2) with `-o sandbox=chroot` and waits until its socket exists.
 * It has no device-state support, so QEMU 10 fails any migration with it.
 */
export async function startCVirtiofsd(options: VirtiofsdOptions): Promise<Virtiofsd> {
  const { "virtiofsd-c": binary } = await requirePeers("virtiofsd-c");
  const args = [
    `--socket-path=${options.socketPath}`,
    "-o",
    `source=${options.sharedDir}`,
    "-o",
    "sandbox=chroot",
    ...(options.extraArgs ?? []),
  ];
  return await launch(options.name ?? "virtiofsd-c", binary, args, options);
}

const LISTENING_LOG_LINE = "Waiting for vhost-user socket connection";

async function launch(
  name: string,
  binary: string,
  args: string[],
  options: VirtiofsdOptions,
): Promise<Virtiofsd> {
  // A stale socket from an earlier run would make the wait below succeed too early.
  await Deno.remove(options.socketPath).catch(() => {});
  const child = new Child({
    name,
    cmd: binary,
    args,
    stdoutPath: `${options.logDir}/${name}.stdout.log`,
    stderrPath: `${options.logDir}/${name}.stderr.log`,
  });
  const timeoutMs = options.startTimeoutMs ?? 10_000;
  try {
    await waitFor(async () => {
      if (child.status) {
        throw new Error(
          `${name} exited with code ${child.status.code} before creating "${options.socketPath}": ${
            tail(await child.stderrText())
          }`,
        );
      }
      // The socket file appears at bind(); the log line comes after listen(), so QEMU's
      // connect cannot race it. Both virtiofsd flavours print the same line.
      const listening = (await child.stderrText()).includes(LISTENING_LOG_LINE);
      return (listening && await socketExists(options.socketPath)) || undefined;
    }, {
      what: `${name} socket "${options.socketPath}"`,
      timeoutMs,
      detail: async () => tail(await child.stderrText()),
    });
  } catch (error) {
    await child.stop();
    throw error;
  }
  return new Virtiofsd(name, options.socketPath, options.sharedDir, [binary, ...args], child);
}
