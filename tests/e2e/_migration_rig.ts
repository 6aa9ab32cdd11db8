/**
 * Shared rig for the migration end-to-end tests (and the downtime bench and `tests/demo.ts`): one
 * shared directory, and any number of "sides", each a QEMU 10 with its own virtiofsd behind its
 * own chain of vhost-user-proxy processes (zero proxies = direct). A source side boots the guest; a
 * destination side starts with `-incoming defer`. Everything started through the rig is stopped
 * when the rig is disposed, in reverse order.
 *
 * Not a test file itself (no `_test` suffix); `tests/e2e/migration_*_test.ts` use it.
 *
 * @module
 */

import assert from "node:assert/strict";
import type {
  CheckRecord,
  LogRecord,
  StateDirection,
  TransferEndRecord,
  TransferStartRecord,
} from "../../log/record.ts";
import {
  Child,
  migrate,
  type MigrateOptions,
  type MigrationResult,
  readTextOrEmpty,
  socketExists,
  startCVirtiofsd,
  startVirtiofsd,
  startVm,
  tail,
  TestDir,
  type Virtiofsd,
  type Vm,
  waitFor,
} from "../harness/mod.ts";

/** The mount tag every rig guest uses. */
export const TAG = "myfs";

/** The proxy launcher under test (the fixed CLI contract). */
export const PROXY_BIN = new URL("../../bin/vhost-user-proxy", import.meta.url).pathname;

// The first start of the launcher may compile and cache the proxy's modules.
const PROXY_START_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Proxy processes

/** Options for {@linkcode startProxyProcess}. */
export interface ProxyProcessOptions {
  /** Label for files and errors, e.g. `src-p0`. */
  name: string;
  /** Directory for the socket, the JSONL log and stdout/stderr. */
  dir: string;
  /** The socket the proxy's front-end (QEMU or another proxy) connects to. */
  listen: string;
  /** The back-end's (or the next proxy's) socket. */
  backend: string;
  /** Extra `run` arguments, e.g. `["--device-state", "emulate"]`. */
  args?: string[];
  /** Write the JSONL log (default true); the bench turns it off to time the bare relay. */
  log?: boolean;
  /**
   * Run this program as `<relayBin> <listen> <backend>` instead of the proxy: the bench's C
   * poll relay (bench/c/poll_relay.c), the cost of an extra hop with nothing else. No log.
   */
  relayBin?: string;
}

/** A running `bin/vhost-user-proxy run` with its JSON Lines log. Disposing it stops it. */
export class ProxyProcess implements AsyncDisposable {
  readonly name: string;
  readonly listen: string;
  readonly backend: string;
  readonly logPath: string;
  readonly argv: string[];
  readonly child: Child;

  constructor(init: {
    name: string;
    listen: string;
    backend: string;
    logPath: string;
    argv: string[];
    child: Child;
  }) {
    this.name = init.name;
    this.listen = init.listen;
    this.backend = init.backend;
    this.logPath = init.logPath;
    this.argv = init.argv;
    this.child = init.child;
  }

  /** Every complete record logged so far. */
  async records(): Promise<LogRecord[]> {
    return parseJsonLines(await readTextOrEmpty(this.logPath));
  }

  /** The proxy's stderr so far (the launcher's and Deno's errors land there). */
  stderrLog(): Promise<string> {
    return this.child.stderrText();
  }

  /**
   * Polls the log until `pick` finds something (fails at once if the proxy exited). Records of a
   * migration are written while QEMU moves on, so tests wait for them instead of reading once.
   */
  async waitForRecords<T>(
    what: string,
    pick: (records: LogRecord[]) => T | undefined,
    timeoutMs = 20_000,
  ): Promise<T> {
    return await waitFor(async () => pick(await this.records()), {
      what: `${what} in the log of proxy "${this.name}"`,
      timeoutMs,
      intervalMs: 100,
      detail: async () =>
        `stderr: ${tail(await this.stderrLog(), 5)}\nlog tail:\n${
          tail(await readTextOrEmpty(this.logPath), 8)
        }`,
    });
  }

  stop(): Promise<Deno.CommandStatus> {
    // SIGTERM lets the proxy end its sessions and flush its log.
    return this.child.stop({ graceMs: 3000 });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts `bin/vhost-user-proxy run --listen … --backend … --log <dir>/<name>.jsonl --quiet …`
 * and waits for its listening socket. Fails loudly (with the proxy's stderr) if it exits first.
 */
export async function startProxyProcess(options: ProxyProcessOptions): Promise<ProxyProcess> {
  const logPath = `${options.dir}/${options.name}.jsonl`;
  const cmd = options.relayBin ?? PROXY_BIN;
  const args = options.relayBin ? [options.listen, options.backend] : [
    "run",
    ...["--listen", options.listen],
    ...["--backend", options.backend],
    ...(options.log === false ? [] : ["--log", logPath]),
    "--quiet",
    ...(options.args ?? []),
  ];
  await Deno.remove(options.listen).catch(() => {});
  const child = new Child({
    name: options.name,
    cmd,
    args,
    stdoutPath: `${options.dir}/${options.name}.stdout.log`,
    stderrPath: `${options.dir}/${options.name}.stderr.log`,
  });
  try {
    await waitFor(async () => {
      if (child.status) {
        throw new Error(
          `proxy "${options.name}" exited with code ${child.status.code} before listening on ` +
            `"${options.listen}": ${tail(await child.stderrText())}\n(args: ${args.join(" ")})`,
        );
      }
      return (await socketExists(options.listen)) || undefined;
    }, {
      what: `proxy "${options.name}" to listen on "${options.listen}"`,
      timeoutMs: PROXY_START_TIMEOUT_MS,
      detail: async () => tail(await child.stderrText()),
    });
  } catch (error) {
    await child.stop();
    throw error;
  }
  return new ProxyProcess({
    name: options.name,
    listen: options.listen,
    backend: options.backend,
    logPath,
    argv: [cmd, ...args],
    child,
  });
}

/** Parses JSON Lines, ignoring a last line that is still being written. */
export function parseJsonLines(text: string): LogRecord[] {
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  const records: LogRecord[] = [];
  lines.forEach((line, index) => {
    try {
      records.push(JSON.parse(line) as LogRecord);
    } catch (error) {
      if (index < lines.length - 1) throw new Error(`bad JSONL line ${index + 1}: ${error}`);
    }
  });
  return records;
}

// ---------------------------------------------------------------------------------------------
// Device-state records

/** `transfer-start` records of one direction. */
export function transferStarts(
  records: LogRecord[],
  direction: StateDirection,
): TransferStartRecord[] {
  return records.filter((r): r is TransferStartRecord =>
    r.type === "device-state" && r.event === "transfer-start" && r.direction === direction
  );
}

/** `transfer-end` records of one direction. */
export function transferEnds(records: LogRecord[], direction: StateDirection): TransferEndRecord[] {
  return records.filter((r): r is TransferEndRecord =>
    r.type === "device-state" && r.event === "transfer-end" && r.direction === direction
  );
}

/** `check` records. */
export function checkRecords(records: LogRecord[]): CheckRecord[] {
  return records.filter((r): r is CheckRecord => r.type === "device-state" && r.event === "check");
}

/** Waits for the first `transfer-end` of `direction` in `proxy`'s log. */
export async function waitTransferEnd(
  proxy: ProxyProcess,
  direction: StateDirection,
): Promise<TransferEndRecord> {
  return await proxy.waitForRecords(
    `a ${direction} transfer-end record`,
    (records) => transferEnds(records, direction)[0],
  );
}

/** Waits for the first `check` record in `proxy`'s log. */
export async function waitCheck(proxy: ProxyProcess): Promise<CheckRecord> {
  return await proxy.waitForRecords("a check record", (records) => checkRecords(records)[0]);
}

/** The device-state records of a log, one line each, for assertion messages. */
export function deviceStateDigest(records: LogRecord[]): string {
  return records.filter((r) => r.type === "device-state" || r.type === "error")
    .map((r) => JSON.stringify(r)).join("\n") || "(no device-state or error records)";
}

// ---------------------------------------------------------------------------------------------
// Sides: QEMU + virtiofsd + proxy chain

/** Which virtio-fs back-end a side runs. */
export type BackendKind = "rust" | "c";

/** Options for {@linkcode MigrationRig.startSide}. */
export interface SideSpec {
  /** Unique within the rig: names files, QEMU and the guest (`src`, `dst-corrupt`...). */
  name: string;
  /** `rust` = virtiofsd 1.13 (device state, find-paths); `c` = QEMU 7.2's C virtiofsd. */
  backend: BackendKind;
  /**
   * The proxy chain from QEMU outwards: one entry per proxy, each that proxy's extra `run`
   * arguments. `[]` (default) connects QEMU straight to virtiofsd.
   */
  proxies?: string[][];
  /** Give every proxy `--state-dump <dir>/<proxy name>.dump/`. */
  stateDump?: boolean;
  /** Proxies write their JSONL log (default true). */
  proxyLog?: boolean;
  /** Every hop of `proxies` runs this relay program instead (see `ProxyProcessOptions`). */
  relayBin?: string;
  /** A migration destination (`-incoming defer`): no boot wait. */
  incoming?: boolean;
  /** Record QEMU's vhost-user requests (`vm.paths.trace`). */
  traceVhostUser?: boolean;
  /** More QEMU trace events into `vm.paths.trace` (`VmOptions.traceEvents`). */
  traceEvents?: string[];
  /** Timestamped trace lines (`VmOptions.traceTimestamps`). */
  traceTimestamps?: boolean;
  /** Boot budget; default 120 s (other VMs may share the two CPUs). */
  bootTimeoutMs?: number;
}

/** One QEMU with its back-end and proxies. */
export class Side {
  readonly name: string;
  readonly vm: Vm;
  readonly virtiofsd: Virtiofsd;
  /** From QEMU outwards. */
  readonly proxies: ProxyProcess[];
  /** Per proxy (same order), the `--state-dump` directory, if any. */
  readonly dumpDirs: (string | undefined)[];

  constructor(init: {
    name: string;
    vm: Vm;
    virtiofsd: Virtiofsd;
    proxies: ProxyProcess[];
    dumpDirs: (string | undefined)[];
  }) {
    this.name = init.name;
    this.vm = init.vm;
    this.virtiofsd = init.virtiofsd;
    this.proxies = init.proxies;
    this.dumpDirs = init.dumpDirs;
  }

  /** The proxy QEMU talks to. */
  get frontProxy(): ProxyProcess {
    assert.ok(this.proxies.length > 0, `side "${this.name}" has no proxy`);
    return this.proxies[0];
  }

  /** Stops QEMU, the proxies and virtiofsd early (the rig would at its end). Idempotent. */
  async stop(): Promise<void> {
    await this.vm.stop();
    for (const proxy of this.proxies) await proxy.stop();
    await this.virtiofsd.stop();
  }

  /** Tails of every log of this side, for failure messages. */
  async diagnostics(): Promise<string> {
    const parts = [
      `--- ${this.vm.name} QEMU stderr:\n${tail(await this.vm.stderrLog(), 15)}`,
      `--- ${this.virtiofsd.name} stderr:\n${tail(await this.virtiofsd.stderrLog(), 15)}`,
    ];
    for (const proxy of this.proxies) {
      parts.push(`--- ${proxy.name} stderr:\n${tail(await proxy.stderrLog(), 10)}`);
      parts.push(`--- ${proxy.name} device-state:\n${deviceStateDigest(await proxy.records())}`);
    }
    return parts.join("\n");
  }
}

/**
 * A scratch directory with a shared directory (`share`) every side exports, and the sides
 * started so far.
 *
 * @example
 * ```ts
 * await using rig = await MigrationRig.create("mig");
 * const src = await rig.startSide({ name: "src", backend: "rust", proxies: [[]] });
 * const dst = await rig.startSide({ name: "dst", backend: "rust", proxies: [[]], incoming: true });
 * const result = await rig.migrate(src, dst);
 * ```
 */
export class MigrationRig implements AsyncDisposable {
  readonly dir: TestDir;
  readonly share: string;
  readonly #stoppers: (() => Promise<unknown>)[] = [];

  private constructor(dir: TestDir, share: string) {
    this.dir = dir;
    this.share = share;
  }

  static async create(label: string): Promise<MigrationRig> {
    const dir = await TestDir.create(label);
    return new MigrationRig(dir, await dir.mkdir("share"));
  }

  /** Starts virtiofsd, then the proxies from the back-end outwards, then QEMU. */
  async startSide(spec: SideSpec): Promise<Side> {
    const dir = this.dir.path;
    const virtiofsdOptions = {
      name: `${spec.name}-virtiofsd`,
      socketPath: this.dir.join(`${spec.name}-vfs.sock`),
      sharedDir: this.share,
      logDir: dir,
    };
    const virtiofsd = spec.backend === "rust"
      ? await startVirtiofsd(virtiofsdOptions)
      : await startCVirtiofsd(virtiofsdOptions);
    this.#stoppers.push(() => virtiofsd.stop());

    const chain = spec.proxies ?? [];
    const proxies: ProxyProcess[] = [];
    const dumpDirs: (string | undefined)[] = [];
    let backend = virtiofsd.socketPath;
    for (let index = chain.length - 1; index >= 0; index--) {
      const name = `${spec.name}-p${index}`;
      const dumpDir = spec.stateDump ? await this.dir.mkdir(`${name}.dump`) : undefined;
      const proxy = await startProxyProcess({
        name,
        dir,
        listen: this.dir.join(`${name}.sock`),
        backend,
        args: [...chain[index], ...(dumpDir ? ["--state-dump", dumpDir] : [])],
        log: spec.proxyLog,
        relayBin: spec.relayBin,
      });
      this.#stoppers.push(() => proxy.stop());
      proxies.unshift(proxy);
      dumpDirs.unshift(dumpDir);
      backend = proxy.listen;
    }

    const vm = await startVm({
      name: spec.name,
      dir,
      fs: [{ socketPath: backend, tag: TAG }],
      incomingDefer: spec.incoming,
      traceVhostUser: spec.traceVhostUser,
      traceEvents: spec.traceEvents,
      traceTimestamps: spec.traceTimestamps,
      bootTimeoutMs: spec.bootTimeoutMs ?? 120_000,
    });
    this.#stoppers.push(() => vm.stop());
    return new Side({ name: spec.name, vm, virtiofsd, proxies, dumpDirs });
  }

  /** Migrates `src` to `dst` (harness `migrate`: return-path on, uncapped bandwidth). */
  async migrate(src: Side, dst: Side, options?: MigrateOptions): Promise<MigrationResult> {
    const result = await migrate(src.vm, dst.vm, options);
    console.log(`migration ${src.name} -> ${dst.name}: ${describeMigration(result)}`);
    return result;
  }

  /** Stops everything in reverse start order, then removes the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const stop of this.#stoppers.reverse()) await stop().catch(() => {});
    await this.dir.remove();
  }
}

/** One line about a migration for the test output. */
export function describeMigration(result: MigrationResult): string {
  return `status=${result.status} total=${result.totalTimeMs} ms downtime=${result.downtimeMs} ms ` +
    `wall=${result.wallMs} ms source=${result.sourceState} destination=${result.destinationState}` +
    (result.errorDesc ? ` error-desc=${JSON.stringify(result.errorDesc)}` : "");
}

// ---------------------------------------------------------------------------------------------
// Guest helpers

/** Asserts a migration failed cleanly: source resumed, destination not running the guest. */
export async function assertFailedCleanly(
  result: MigrationResult,
  src: Side,
  dst: Side,
): Promise<void> {
  const context = async () => `${describeMigration(result)}\n${await dst.diagnostics()}`;
  assert.equal(result.status, "failed", await context());
  assert.equal(result.sourceState, "running", await context());
  assert.notEqual(result.destinationState, "running", await context());
  assert.equal(src.vm.child.status, undefined, "the source QEMU must still run");
}

/**
 * Asserts the guest of `side` still works: the agent answers, and the share is writable and
 * readable both ways (guest → host and host → guest).
 */
export async function assertGuestUsable(side: Side, share: string, label: string): Promise<void> {
  const file = `usable-${side.name}-${label}.txt`;
  assert.equal(await side.vm.agent.check("echo alive"), "alive\n");
  await side.vm.agent.check(`echo ${label} >/mnt/${file}`, { timeoutMs: 15_000 });
  assert.equal(await Deno.readTextFile(`${share}/${file}`), `${label}\n`);
  await Deno.writeTextFile(`${share}/host-${file}`, `host ${label}\n`);
  assert.equal(
    await side.vm.agent.check(`cat /mnt/host-${file}`, { timeoutMs: 15_000 }),
    `host ${label}\n`,
  );
}

/**
 * Guest script: a background writer appends an increasing sequence number every 50 ms to
 * `/mnt/seq.txt` through ONE fd opened before the migration, so the fd itself has to survive
 * it. A failed write is recorded in /run/writer.failed; touching /run/writer.stop ends the loop
 * and leaves the last number in /run/writer.last.
 */
export const START_SEQUENCE_WRITER = `
rm -f /run/writer.stop /run/writer.last /run/writer.failed
( exec 7>>/mnt/seq.txt
  i=0
  while [ ! -e /run/writer.stop ]; do
    i=$((i + 1))
    echo "$i" >&7 || { echo "$i" >/run/writer.failed; break; }
    sleep 0.05
  done
  echo "$i" >/run/writer.last ) </dev/null >/dev/null 2>&1 &
`;

/** Guest script: stop the writer and print its last number (and any failure). */
export const STOP_SEQUENCE_WRITER = `
touch /run/writer.stop
n=0
while [ ! -e /run/writer.last ] && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
cat /run/writer.last
if [ -e /run/writer.failed ]; then echo "failed at $(cat /run/writer.failed)"; fi
`;

// The held-file guest scripts live with the harness; re-exported for the migration tests.
export { holderRoundTrip, START_HOLDER } from "../harness/guest_scripts.ts";

/** Lines of `text` that are not the numbers 1..n in order, described (empty if none). */
export function sequenceGaps(text: string): string[] {
  const lines = text.split("\n").filter((line) => line !== "");
  const problems: string[] = [];
  lines.forEach((line, index) => {
    if (line !== String(index + 1)) problems.push(`line ${index + 1} is ${JSON.stringify(line)}`);
  });
  return problems;
}

/** Number of lines of a host file (0 if missing). */
export async function lineCount(path: string): Promise<number> {
  return (await readTextOrEmpty(path)).split("\n").filter((line) => line !== "").length;
}

/** Runs `bin/vhost-user-proxy <args>` to completion and returns its output. */
export async function runProxyCli(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(PROXY_BIN, {
    args,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    // `state show` is quick; a hang must fail the test, not stall the suite.
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}
