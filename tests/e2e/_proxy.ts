/**
 * The proxy as the real peers see it: `bin/vhost-user-proxy run` in its own process, driven
 * from the outside through its CLI, its JSON Lines log and /proc. The e2e tests use nothing of
 * the proxy's internals except the record types, so they test the shipped command.
 *
 * @module
 */

import { Child, readTextOrEmpty, tail, waitFor } from "../harness/mod.ts";
import type { LogRecord, MessageRecord, ProxyRecord, SessionEndRecord } from "../../log/record.ts";

/** The launcher QEMU or libvirt would exec. */
export const PROXY_BIN = new URL("../../bin/vhost-user-proxy", import.meta.url).pathname;

/** Options for {@linkcode startProxyProcess}. */
export interface ProxyProcessOptions {
  /** Directory for the log files; use a `TestDir`. */
  dir: string;
  /** Socket the proxy creates for QEMU. */
  listenPath: string;
  /** The back-end's listening socket. */
  backendPath: string;
  /** Label for files and errors; default `proxy`. */
  name?: string;
  /** JSON Lines log; default `<dir>/<name>.jsonl`. */
  logPath?: string;
  /** Extra `run` options, e.g. `["--connect-timeout", "20000"]`. */
  extraArgs?: string[];
  /** How long to wait for the "listening" record; default 20000 ms (Deno starts slowly when
   * the machine is busy). */
  startTimeoutMs?: number;
}

/** A running `vhost-user-proxy run`. Disposing it stops it. */
export class ProxyProcess implements AsyncDisposable {
  readonly name: string;
  readonly listenPath: string;
  readonly backendPath: string;
  /** The JSON Lines log. */
  readonly logPath: string;
  /** The human log (the proxy's stderr). */
  readonly stderrPath: string;
  readonly argv: string[];
  readonly child: Child;

  constructor(init: {
    name: string;
    listenPath: string;
    backendPath: string;
    logPath: string;
    argv: string[];
    child: Child;
  }) {
    this.name = init.name;
    this.listenPath = init.listenPath;
    this.backendPath = init.backendPath;
    this.logPath = init.logPath;
    this.stderrPath = init.child.stderrPath;
    this.argv = init.argv;
    this.child = init.child;
  }

  /** Process id of the proxy (the launcher execs Deno, so it keeps the spawned pid). */
  get pid(): number {
    return this.child.pid;
  }

  /** Resolves when the proxy exits. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.child.exited;
  }

  /** True while the process runs. */
  get running(): boolean {
    return this.child.status === undefined;
  }

  /** Every complete record written so far (a line still being written is left out). */
  async records(): Promise<LogRecord[]> {
    const text = await readTextOrEmpty(this.logPath);
    const lines = text.split("\n");
    lines.pop(); // the part after the last newline is empty or not yet complete
    return lines.filter((line) => line.trim() !== "").map((line) => JSON.parse(line));
  }

  /** The relayed messages so far, optionally only those of one session. */
  async messages(session?: number): Promise<MessageRecord[]> {
    return (await this.records()).filter((r): r is MessageRecord =>
      r.type === "message" && (session === undefined || r.session === session)
    );
  }

  /** The human log (stderr) so far. */
  humanLog(): Promise<string> {
    return this.child.stderrText();
  }

  /**
   * Waits for the first record that satisfies `match`, failing at once if the proxy exits.
   *
   * @example
   * ```ts
   * const end = await proxy.waitForRecord(isSessionEnd(1), { what: "session 1 to end" });
   * ```
   */
  async waitForRecord<R extends LogRecord>(
    match: (record: LogRecord) => record is R,
    options: { what: string; timeoutMs?: number },
  ): Promise<R> {
    return await waitFor(async () => {
      const found = (await this.records()).find(match);
      if (found) return found;
      if (!this.running) {
        throw new Error(
          `${this.name} exited (code ${this.child.status?.code}) while waiting for ${options.what}: ${
            tail(await this.humanLog(), 10)
          }`,
        );
      }
      return undefined;
    }, {
      what: `${options.what} in ${this.logPath}`,
      timeoutMs: options.timeoutMs ?? 15_000,
      intervalMs: 100,
      detail: async () => tail(await this.humanLog(), 10),
    });
  }

  /** Number of open fds of the proxy process, from /proc. */
  openFdCount(): number {
    return [...Deno.readDirSync(`/proc/${this.pid}/fd`)].length;
  }

  /** The proxy's open fds with their link targets, for leak reports. */
  openFds(): Map<number, string> {
    const fds = new Map<number, string>();
    for (const entry of Deno.readDirSync(`/proc/${this.pid}/fd`)) {
      try {
        fds.set(Number(entry.name), Deno.readLinkSync(`/proc/${this.pid}/fd/${entry.name}`));
      } catch {
        // closed between readdir and readlink
      }
    }
    return fds;
  }

  /**
   * Waits until the open-fd count equals `expected` (fds are closed by the relay thread a
   * moment after the session-end record may be visible) and returns the last count seen. Does
   * not throw: the caller asserts, with {@linkcode describeFdChange} for the message.
   */
  async settleFdCount(expected: number, timeoutMs = 5000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let count = this.openFdCount();
    while (count !== expected && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      count = this.openFdCount();
    }
    return count;
  }

  /** SIGTERM (the proxy stops, removes its socket and exits 0), SIGKILL after 5 s. */
  stop(): Promise<Deno.CommandStatus> {
    return this.child.stop({ graceMs: 5000 });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Starts `bin/vhost-user-proxy run` and waits for its "listening" record (the socket exists
 * then). Fails with the proxy's stderr if it exits first.
 *
 * @example
 * ```ts
 * await using proxy = await startProxyProcess({
 *   dir: dir.path,
 *   listenPath: dir.join("front.sock"),
 *   backendPath: vfsd.socketPath,
 * });
 * ```
 */
export async function startProxyProcess(options: ProxyProcessOptions): Promise<ProxyProcess> {
  const name = options.name ?? "proxy";
  const logPath = options.logPath ?? `${options.dir}/${name}.jsonl`;
  const args = [
    "run",
    ...["--listen", options.listenPath, "--backend", options.backendPath, "--log", logPath],
    ...(options.extraArgs ?? []),
  ];
  const child = new Child({
    name,
    cmd: PROXY_BIN,
    args,
    stdoutPath: `${options.dir}/${name}.stdout.log`,
    stderrPath: `${options.dir}/${name}.stderr.log`,
  });
  const proxy = new ProxyProcess({
    name,
    listenPath: options.listenPath,
    backendPath: options.backendPath,
    logPath,
    argv: [PROXY_BIN, ...args],
    child,
  });
  try {
    await waitUntilListening(
      proxy,
      options.startTimeoutMs ?? 20_000,
    );
  } catch (error) {
    await proxy.stop();
    throw error;
  }
  return proxy;
}

/** Waits for the "listening" record (written before anything connects); fails at once if the
 * proxy exits. */
async function waitUntilListening(proxy: ProxyProcess, timeoutMs: number): Promise<void> {
  await waitFor(async () => {
    if (!proxy.running) {
      throw new Error(
        `${proxy.name} exited with code ${proxy.child.status?.code} before listening: ${
          tail(await proxy.humanLog(), 10)
        }`,
      );
    }
    const listening = (await proxy.records()).find(isProxyEvent("listening"));
    if (!listening) return undefined;
    if (listening.pid !== undefined && listening.pid !== proxy.pid) {
      throw new Error(`${proxy.name} logs pid ${listening.pid}, but its pid is ${proxy.pid}`);
    }
    return true;
  }, {
    what: `${proxy.name} to listen on ${proxy.listenPath}`,
    timeoutMs,
    intervalMs: 50,
    detail: async () => tail(await proxy.humanLog(), 10),
  });
}

/** Matches the proxy's lifecycle record `event`. */
export function isProxyEvent(event: ProxyRecord["event"]) {
  return (r: LogRecord): r is ProxyRecord => r.type === "proxy" && r.event === event;
}

/** Matches the session-end record of `session` (any session when omitted). */
export function isSessionEnd(session?: number) {
  return (r: LogRecord): r is SessionEndRecord =>
    r.type === "session-end" && (session === undefined || r.session === session);
}

/** Front-end requests on the main channel: exactly what QEMU wrote to its vhost-user socket. */
export function frontEndRequests(messages: MessageRecord[]): MessageRecord[] {
  return messages.filter((m) =>
    m.channel === "main" && m.from === "front-end" && m.kind === "request"
  );
}

/** "N more, M fewer" description of how a process's fd table changed, for assertion messages. */
export function describeFdChange(before: Map<number, string>, after: Map<number, string>): string {
  const opened = [...after].filter(([fd, target]) => before.get(fd) !== target);
  const closed = [...before].filter(([fd, target]) => after.get(fd) !== target);
  const show = (list: [number, string][]) => list.map(([fd, t]) => `${fd}→${t}`).join(", ");
  return `opened since baseline: [${show(opened)}]; closed since baseline: [${show(closed)}]`;
}

/**
 * Asserts that the proxy's fd table is back to `baseline` (its fds right after it started
 * listening): every fd a session received or made has been closed. Waits a moment first,
 * since the relay thread closes them after handing the session-end record over.
 */
export async function assertFdsBackToBaseline(
  proxy: ProxyProcess,
  baseline: Map<number, string>,
): Promise<void> {
  const count = await proxy.settleFdCount(baseline.size);
  if (count !== baseline.size) {
    throw new Error(
      `${proxy.name} holds ${count} fds after its sessions ended, ${baseline.size} at start: ${
        describeFdChange(baseline, proxy.openFds())
      }`,
    );
  }
}
