/**
 * QEMU 10 with the busybox test guest: builds the command line (shared guest RAM, vhost-user-fs
 * devices, console and agent serial ports, QMP), starts it, and hands back a {@linkcode Vm}.
 *
 * @module
 */

import { Child, readTextOrEmpty, settlesWithin, tail } from "./child.ts";
import { GuestAgent } from "./guest_agent.ts";
import { type Accel, probeAccel, requirePeers } from "./peers.ts";
import { QmpClient } from "./qmp.ts";
import { waitFor } from "./wait.ts";

/** A vhost-user-fs device: QEMU connects a chardev to `socketPath` at start-up. */
export interface FsDevice {
  /** The back-end's (or the proxy's) listening socket. */
  socketPath: string;
  /** Mount tag the guest sees (≤ 36 bytes). */
  tag: string;
  /** Device/chardev id suffix; default `fs<index>`. */
  id?: string;
  /** Extra `-device` properties, e.g. `queue-size=1024`. */
  deviceProps?: string;
}

/** Options for {@linkcode startVm}. */
export interface VmOptions {
  /** Label for files and errors (`src`, `dst`...); default `vm`. */
  name?: string;
  /** Directory for sockets and logs; use a {@linkcode TestDir}. */
  dir: string;
  /** 0..n vhost-user-fs devices. */
  fs?: FsDevice[];
  /** Tag the guest's init mounts at /mnt; default the first fs device's tag, `null` for none. */
  mountTag?: string | null;
  /** Guest RAM; default 512. */
  memoryMiB?: number;
  /** Start with `-incoming defer` (migration destination); no boot wait then. */
  incomingDefer?: boolean;
  /** Start paused (`-S`); no boot wait then. */
  paused?: boolean;
  /** Trace every vhost-user request QEMU writes into `paths.trace`. */
  traceVhostUser?: boolean;
  /**
   * More QEMU trace events into `paths.trace` (names or patterns as `-trace enable=` takes
   * them), e.g. `SWITCHOVER_TRACE_EVENTS` from vhost_user_trace.ts.
   */
  traceEvents?: string[];
  /**
   * `-msg timestamp=on`: every trace line starts `<thread id>@<sec>.<usec>:` (wall clock), and
   * QEMU's error messages on stderr get a timestamp too.
   */
  traceTimestamps?: boolean;
  /** Raw extra QEMU arguments (e.g. a vhost-user netdev), appended last. */
  extraArgs?: string[];
  /** Extra kernel command-line words. */
  kernelArgs?: string;
  /** Wait for the guest's ready marker and agent; default true unless incoming or paused. */
  waitForGuest?: boolean;
  /** Boot budget; default 60000 ms (TCG boots in ~8-12 s). */
  bootTimeoutMs?: number;
  /** Accelerator; default {@linkcode probeAccel}. */
  accel?: Accel;
}

/** Files belonging to one VM. */
export interface VmPaths {
  qmp: string;
  agent: string;
  console: string;
  stderr: string;
  trace?: string;
}

/** What the guest announced on its console when it was ready. */
export interface GuestReady {
  tag: string;
  mount: "ok" | "failed" | "none";
}

/** The guest did not come up (or failed to mount its share). */
export class GuestBootError extends Error {
  constructor(vm: string, reason: string, consoleTail: string) {
    super(`Guest of vm "${vm}" did not boot: ${reason}; console tail:\n${consoleTail}`);
    this.name = "GuestBootError";
  }
}

const READY_MARKER = /VUP-GUEST-READY tag=(\S+) mount=(ok|failed|none)/;

/** A running QEMU. Disposing it stops it. */
export class Vm implements AsyncDisposable {
  readonly name: string;
  readonly paths: VmPaths;
  /** The full QEMU command line, for reports and debugging. */
  readonly argv: string[];
  readonly child: Child;
  readonly qmp: QmpClient;
  readonly agent: GuestAgent;
  /** Milliseconds from spawn to the guest agent answering, once {@linkcode waitGuestReady} ran. */
  bootMs: number | undefined;
  readonly #startedAt: number;
  readonly #mountTag: string | null;

  constructor(init: {
    name: string;
    paths: VmPaths;
    argv: string[];
    child: Child;
    qmp: QmpClient;
    agent: GuestAgent;
    startedAt: number;
    mountTag: string | null;
  }) {
    this.name = init.name;
    this.paths = init.paths;
    this.argv = init.argv;
    this.child = init.child;
    this.qmp = init.qmp;
    this.agent = init.agent;
    this.#startedAt = init.startedAt;
    this.#mountTag = init.mountTag;
  }

  /** Resolves when QEMU exits. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.child.exited;
  }

  /** The guest console (ttyS0) so far. */
  consoleLog(): Promise<string> {
    return readTextOrEmpty(this.paths.console);
  }

  /** QEMU's stderr so far (error_report output lands here). */
  stderrLog(): Promise<string> {
    return this.child.stderrText();
  }

  /** QEMU's run state (`running`, `paused`, `inmigrate`, `postmigrate`...). */
  async runState(): Promise<string> {
    const status = await this.qmp.execute<{ status: string }>("query-status");
    return status.status;
  }

  /**
   * Waits for the guest's ready marker on the console (failing if the share did not mount) and
   * for the agent to answer. Sets {@linkcode bootMs}.
   */
  async waitGuestReady(options: { timeoutMs?: number } = {}): Promise<GuestReady> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const ready = await waitFor(async () => {
      const text = await this.consoleLog();
      const match = text.match(READY_MARKER);
      if (match) return { tag: match[1], mount: match[2] as GuestReady["mount"] };
      if (this.child.status) {
        throw new GuestBootError(
          this.name,
          `QEMU exited with code ${this.child.status.code}: ${tail(await this.stderrLog(), 5)}`,
          tail(text),
        );
      }
      return undefined;
    }, {
      what: `the ready marker of vm "${this.name}"`,
      timeoutMs,
      intervalMs: 200,
      detail: async () => tail(await this.consoleLog()),
    });
    if (this.#mountTag !== null && ready.mount !== "ok") {
      throw new GuestBootError(
        this.name,
        `mounting virtiofs tag "${this.#mountTag}" reported ${ready.mount}`,
        tail(await this.consoleLog()),
      );
    }
    await this.agent.waitReady({ timeoutMs: Math.max(1000, deadline - Date.now()) });
    this.bootMs = Date.now() - this.#startedAt;
    return ready;
  }

  /** Quits through QMP, then SIGTERM/SIGKILL if QEMU lingers. Idempotent. */
  async stop(): Promise<Deno.CommandStatus> {
    if (!this.child.status && !this.qmp.isClosed) {
      await settlesWithin(this.qmp.execute("quit").catch(() => null), 2000);
      await settlesWithin(this.child.exited, 5000);
    }
    const status = await this.child.stop();
    await this.agent.close().catch(() => {});
    await this.qmp.close().catch(() => {});
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Builds QEMU's argument list for `options` (exported for reports and for the proxy tests). */
export function buildQemuArgs(
  options: VmOptions,
  peers: { kernel: string; initrd: string },
  accel: Accel,
  paths: VmPaths,
): string[] {
  const name = options.name ?? "vm";
  const memoryMiB = options.memoryMiB ?? 512;
  const fsDevices = options.fs ?? [];
  const mountTag = options.mountTag === undefined ? (fsDevices[0]?.tag ?? null) : options.mountTag;
  const kernelArgs = [
    "console=ttyS0",
    "panic=-1",
    "quiet",
    ...(mountTag !== null ? [`vup.tag=${mountTag}`] : []),
    ...(options.kernelArgs ? [options.kernelArgs] : []),
  ].join(" ");
  const args = [
    ...["-name", name],
    ...["-accel", accel.accel, "-cpu", accel.cpu],
    ...["-machine", "q35,memory-backend=mem", "-m", `${memoryMiB}M`],
    // vhost-user back-ends map guest RAM through the fds QEMU sends: it must be shareable.
    ...["-object", `memory-backend-memfd,id=mem,size=${memoryMiB}M,share=on`],
    ...["-display", "none", "-nodefaults", "-no-user-config", "-no-reboot"],
    ...["-kernel", peers.kernel, "-initrd", peers.initrd, "-append", kernelArgs],
    ...["-chardev", `file,id=console,path=${paths.console}`, "-serial", "chardev:console"],
    ...["-chardev", `socket,id=agent,path=${paths.agent},server=on,wait=off`],
    ...["-serial", "chardev:agent"],
    ...["-qmp", `unix:${paths.qmp},server=on,wait=off`],
  ];
  fsDevices.forEach((fs, index) => {
    const id = fs.id ?? `fs${index}`;
    args.push("-chardev", `socket,id=${id}-chr,path=${fs.socketPath}`);
    args.push(
      "-device",
      `vhost-user-fs-pci,chardev=${id}-chr,tag=${fs.tag},id=${id}${
        fs.deviceProps ? `,${fs.deviceProps}` : ""
      }`,
    );
  });
  if (paths.trace) {
    const events = [
      ...(options.traceVhostUser ? ["vhost_user_write"] : []),
      ...(options.traceEvents ?? []),
    ];
    // QEMU takes the file from the last -trace option (one without file= means stderr).
    for (const event of events.slice(0, -1)) args.push("-trace", `enable=${event}`);
    args.push("-trace", `enable=${events.at(-1)},file=${paths.trace}`);
    if (options.traceTimestamps) args.push("-msg", "timestamp=on");
  }
  if (options.incomingDefer) args.push("-incoming", "defer");
  if (options.paused) args.push("-S");
  args.push(...(options.extraArgs ?? []));
  return args;
}

/**
 * Starts QEMU and, unless it is a migration destination or paused, waits until the guest is
 * ready (share mounted, agent answering).
 *
 * @example
 * ```ts
 * await using vm = await startVm({
 *   dir: dir.path,
 *   fs: [{ socketPath: vfsd.socketPath, tag: "myfs" }],
 * });
 * console.log(await vm.agent.check("ls /mnt"));
 * ```
 */
export async function startVm(options: VmOptions): Promise<Vm> {
  const peers = await requirePeers("qemu", "kernel", "initrd");
  const accel = options.accel ?? await probeAccel();
  const name = options.name ?? "vm";
  const paths: VmPaths = {
    qmp: `${options.dir}/${name}.qmp.sock`,
    agent: `${options.dir}/${name}.agent.sock`,
    console: `${options.dir}/${name}.console.log`,
    stderr: `${options.dir}/${name}.stderr.log`,
    ...(options.traceVhostUser || options.traceEvents?.length
      ? { trace: `${options.dir}/${name}.trace.log` }
      : {}),
  };
  const args = buildQemuArgs(options, peers, accel, paths);
  const fsDevices = options.fs ?? [];
  const mountTag = options.mountTag === undefined ? (fsDevices[0]?.tag ?? null) : options.mountTag;
  const startedAt = Date.now();
  const child = new Child({
    name: `qemu-${name}`,
    cmd: peers.qemu,
    args,
    stdoutPath: `${options.dir}/${name}.stdout.log`,
    stderrPath: paths.stderr,
  });
  const abortReason = () =>
    child.status ? `QEMU exited with code ${child.status.code} (see ${paths.stderr})` : undefined;
  let qmp: QmpClient | undefined;
  let agent: GuestAgent | undefined;
  try {
    qmp = await QmpClient.connect(paths.qmp, { what: `QMP of vm "${name}"`, abortReason });
    agent = await GuestAgent.connect(paths.agent, { what: `agent of vm "${name}"`, abortReason });
  } catch (error) {
    await qmp?.close();
    await child.stop();
    const stderr = tail(await child.stderrText(), 10);
    throw new Error(`${(error as Error).message}${stderr ? `; QEMU stderr:\n${stderr}` : ""}`);
  }
  const vm = new Vm({
    name,
    paths,
    argv: [peers.qemu, ...args],
    child,
    qmp,
    agent,
    startedAt,
    mountTag,
  });
  const waitForGuest = options.waitForGuest ?? (!options.incomingDefer && !options.paused);
  if (waitForGuest) {
    try {
      await vm.waitGuestReady({ timeoutMs: options.bootTimeoutMs });
    } catch (error) {
      await vm.stop();
      throw error;
    }
  }
  return vm;
}
