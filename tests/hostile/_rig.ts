/**
 * The proxy under test as a real subprocess (`bin/vhost-user-proxy run … --log <file>`), its
 * JSON Lines log read back as it grows, /proc views of its fds and memory, and scripted
 * sessions (QEMU on one side, a back-end on the other) through it.
 *
 * Everything here is synchronous and bounded: the proxy lives in another process, so a test
 * may block in poll() while the proxy works; every wait has a deadline.
 *
 * @module
 */

import { socketPair } from "../../ffi/socket.ts";
import { socketExists } from "../harness/wait.ts";
import type {
  LogRecord,
  ProblemRecord,
  SessionEndRecord,
  SessionStartRecord,
} from "../../log/record.ts";
import { ScriptedListener, ScriptedPeer, type WireMessage } from "../support/scripted_peer.ts";
import { frame, PF, readU64, REPLY, REQ, sleepSync, u64, VIRTIO_FEATURES } from "./_wire.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** The proxy's launcher, the CLI contract every test here drives. */
export const LAUNCHER = `${ROOT}bin/vhost-user-proxy`;

/** Options of a proxy run. */
export interface ProxyOptions {
  stuckAfterMs?: number;
  connectTimeoutMs?: number;
  socketMode?: string;
  /** Point the proxy at a back-end path nobody listens on. */
  noBackend?: boolean;
  /**
   * V8 flags for the proxy (e.g. `--max-old-space-size=48` to tell a leak from lazy garbage
   * collection); runs Deno directly instead of the launcher, with the launcher's arguments.
   */
  v8Flags?: string;
  /** The --log file (default `<dir>/proxy.jsonl`); one outside the temp dir outlives `stop()`. */
  logPath?: string;
  /** The --backend path, nobody's listener (e.g. a link back to the proxy's own socket). */
  backendPath?: (dir: string) => string;
}

/** Reads the proxy's JSONL log as it grows; records stay in order. */
export class LogReader {
  readonly path: string;
  readonly records: LogRecord[] = [];
  #file: Deno.FsFile | undefined;
  #partial = "";
  readonly #decoder = new TextDecoder();
  readonly #chunk = new Uint8Array(1 << 20);

  constructor(path: string) {
    this.path = path;
  }

  /** Reads whatever was appended since the last call. */
  poll(): void {
    if (this.#file === undefined) {
      try {
        this.#file = Deno.openSync(this.path, { read: true });
      } catch {
        return; // not created yet
      }
    }
    for (;;) {
      const n = this.#file.readSync(this.#chunk);
      if (n === null || n === 0) break;
      this.#partial += this.#decoder.decode(this.#chunk.subarray(0, n), { stream: true });
      const lines = this.#partial.split("\n");
      this.#partial = lines.pop()!;
      for (const line of lines) if (line.length > 0) this.records.push(JSON.parse(line));
    }
  }

  /** Waits (bounded) for the first record from index `from` that satisfies `pred`. */
  waitFor<T extends LogRecord>(
    pred: (r: LogRecord) => r is T,
    timeoutMs?: number,
    from?: number,
  ): T | undefined;
  waitFor(
    pred: (r: LogRecord) => boolean,
    timeoutMs?: number,
    from?: number,
  ): LogRecord | undefined;
  waitFor(pred: (r: LogRecord) => boolean, timeoutMs = 3000, from = 0): LogRecord | undefined {
    const i = this.waitForIndex(pred, timeoutMs, from);
    return i < 0 ? undefined : this.records[i];
  }

  /** Like {@link waitFor}, returning the record's index (-1 when none came). */
  waitForIndex(pred: (r: LogRecord) => boolean, timeoutMs = 3000, from = 0): number {
    const deadline = performance.now() + timeoutMs;
    let i = from;
    for (;;) {
      this.poll();
      for (; i < this.records.length; i++) if (pred(this.records[i])) return i;
      if (performance.now() > deadline) return -1;
      sleepSync(5);
    }
  }

  /** Records of one session. */
  of(session: number): LogRecord[] {
    this.poll();
    return this.records.filter((r) => "session" in r && r.session === session);
  }

  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }
}

/** Memory of the proxy process from /proc/<pid>/status, in KiB. */
export interface Memory {
  rssKiB: number;
  hwmKiB: number;
}

/** A running proxy subprocess with a scripted back-end listener. */
export class ProxyProcess {
  readonly dir: string;
  readonly listenPath: string;
  readonly backendPath: string;
  readonly log: LogReader;
  readonly child: Deno.ChildProcess;
  /** Pid of the Deno process serving (the launcher execs into it). */
  pid = 0;
  backend: ScriptedListener | undefined;
  #exit: Deno.CommandStatus | undefined;
  #stderr = "";
  /** Where to look for the next session-start record. */
  #scanFrom = 0;
  readonly #startIndex = new Map<number, number>();
  #stopped = false;

  private constructor(dir: string, options: ProxyOptions) {
    this.dir = dir;
    this.listenPath = `${dir}/front.sock`;
    this.backendPath = `${dir}/back.sock`;
    this.log = new LogReader(options.logPath ?? `${dir}/proxy.jsonl`);
    const scripted = !options.noBackend && options.backendPath === undefined;
    if (scripted) this.backend = new ScriptedListener(this.backendPath);
    const args = [
      "run",
      "--listen",
      this.listenPath,
      "--backend",
      options.backendPath?.(dir) ?? (options.noBackend ? `${dir}/nobody.sock` : this.backendPath),
      "--log",
      this.log.path,
      "--quiet",
      "--stuck-after",
      String(options.stuckAfterMs ?? 0),
      "--connect-timeout",
      String(options.connectTimeoutMs ?? 3000),
    ];
    if (options.socketMode !== undefined) args.push("--socket-mode", options.socketMode);
    const direct = options.v8Flags === undefined ? [] : [
      "run",
      "-A",
      "--quiet",
      "--no-prompt",
      `--v8-flags=${options.v8Flags}`,
      "--config",
      `${ROOT}deno.json`,
      `${ROOT}cli.ts`,
    ];
    this.child = new Deno.Command(direct.length > 0 ? Deno.execPath() : LAUNCHER, {
      args: [...direct, ...args],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.child.status.then((s) => (this.#exit = s));
    // Collected for failure messages; the proxy is --quiet, so this stays small.
    this.child.stderr.pipeThrough(new TextDecoderStream()).pipeTo(
      new WritableStream({ write: (s) => void (this.#stderr += s) }),
    ).catch(() => {});
  }

  /**
   * Starts the proxy and waits (bounded) until its socket exists. Not the log's "listening"
   * record: the engine posts it only after its first poll turn, i.e. on the first connection.
   */
  static async start(options: ProxyOptions = {}): Promise<ProxyProcess> {
    const dir = Deno.makeTempDirSync({ prefix: "vup-hostile-" });
    const p = new ProxyProcess(dir, options);
    // The launcher execs Deno, so the child's pid is the serving process.
    p.pid = p.child.pid;
    const deadline = performance.now() + 60_000;
    for (;;) {
      if (await socketExists(p.listenPath)) {
        // Start-up may still open fds after the socket appears (the log file, the Worker's
        // runtime): wait for the fd table to be still, so that fd baselines taken now are real.
        let last = -1;
        while (performance.now() < deadline) {
          const n = p.fdCount();
          if (n === last) return p;
          last = n;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      if (p.#exit || performance.now() > deadline) {
        await p.stop();
        throw new Error(`The proxy did not start: ${p.#stderr}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** True while the process runs (not exited, not a zombie). */
  get alive(): boolean {
    if (this.#exit) return false;
    try {
      const stat = Deno.readTextFileSync(`/proc/${this.pid}/stat`);
      return !/\) [ZX] /.test(stat);
    } catch {
      return false;
    }
  }

  /** What the proxy wrote on stderr so far (crash traces). */
  get stderr(): string {
    return this.#stderr;
  }

  /** Open fds of the proxy process (all threads share one table). */
  fdCount(): number {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${this.pid}/fd`)) n++;
    return n;
  }

  /** Waits (bounded) until the proxy's fd count is back to `baseline`; returns the last count. */
  settleFds(baseline: number, timeoutMs = 2000): number {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const n = this.fdCount();
      if (n <= baseline || performance.now() > deadline) return n;
      sleepSync(5);
    }
  }

  /** The proxy's fds with their targets, for a leak report. */
  fdList(): string[] {
    const out: string[] = [];
    for (const e of Deno.readDirSync(`/proc/${this.pid}/fd`)) {
      try {
        out.push(`${e.name} -> ${Deno.readLinkSync(`/proc/${this.pid}/fd/${e.name}`)}`);
      } catch {
        // closed meanwhile
      }
    }
    return out;
  }

  /** VmRSS and VmHWM of the proxy process. */
  memory(): Memory {
    const status = Deno.readTextFileSync(`/proc/${this.pid}/status`);
    const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
    return { rssKiB: kib("VmRSS"), hwmKiB: kib("VmHWM") };
  }

  /** Connects a scripted QEMU, accepts the proxy's back-end connection, learns the session id. */
  open(): Session {
    const front = ScriptedPeer.connect(this.listenPath);
    const back = this.backend!.accept(5000);
    return new Session(this, this.#nextSession(), front, back);
  }

  /** Connects a front-end only (no back-end accept), for tests of connection handling. */
  connectFront(): { front: ScriptedPeer; id: number } {
    const front = ScriptedPeer.connect(this.listenPath);
    return { front, id: this.#nextSession() };
  }

  /**
   * The id of the session just connected: the next session-start record. Connections are made
   * one at a time, so records and connections come in the same order. Where each session's
   * records begin is remembered, so that later look-ups do not rescan the whole log.
   */
  #nextSession(): number {
    const i = this.log.waitForIndex((r) => r.type === "session-start", 5000, this.#scanFrom);
    if (i < 0) throw new Error("No session-start record within 5 s");
    this.#scanFrom = i + 1;
    const id = (this.log.records[i] as SessionStartRecord).session;
    this.#startIndex.set(id, i);
    return id;
  }

  /** The session-end record of a session (bounded wait). */
  sessionEnd(id: number, timeoutMs = 3000): SessionEndRecord | undefined {
    return this.log.waitFor(
      (r): r is SessionEndRecord => r.type === "session-end" && r.session === id,
      timeoutMs,
      this.#startIndex.get(id),
    );
  }

  /** The first error record of a session (bounded wait). */
  errorOf(id: number, timeoutMs = 3000): ProblemRecord | undefined {
    return this.log.waitFor(
      (r): r is ProblemRecord => r.type === "error" && r.session === id,
      timeoutMs,
      this.#startIndex.get(id),
    );
  }

  /** A well-formed session: GET_FEATURES round trip, then a clean close; throws if it fails. */
  proveServing(): void {
    const s = this.open();
    try {
      s.roundTrip();
    } finally {
      s.close();
    }
  }

  /**
   * SIGTERM, bounded wait, SIGKILL if needed; removes the temp dir. Returns the exit code.
   * A second call only returns it again.
   */
  async stop(): Promise<number | undefined> {
    if (this.#stopped) return this.#exit?.code;
    this.#stopped = true;
    if (!this.#exit) {
      try {
        this.child.kill("SIGTERM");
      } catch {
        // already gone
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<undefined>((
        r,
      ) => (timer = setTimeout(() => r(undefined), 10_000)));
      const done = await Promise.race([this.child.status, timeout]);
      clearTimeout(timer);
      if (!done) {
        try {
          this.child.kill("SIGKILL");
        } catch {
          // gone
        }
        await this.child.status;
      }
    }
    await new Promise((r) => setTimeout(r, 0));
    const code = this.#exit?.code;
    this.log.close();
    this.backend?.close();
    this.backend = undefined;
    Deno.removeSync(this.dir, { recursive: true });
    return code;
  }
}

/** Receives until EOF (bounded): the messages that still arrived, and whether EOF came. */
export function drain(peer: ScriptedPeer, timeoutMs = 2000): { eof: boolean; got: WireMessage[] } {
  const got: WireMessage[] = [];
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) return { eof: false, got };
    let m;
    try {
      m = peer.recv(left);
    } catch (e) {
      // ECONNRESET is a close too (the proxy closed with our bytes unread).
      if (e instanceof Error && /No message within/.test(e.message)) return { eof: false, got };
      return { eof: true, got };
    }
    if (m === "eof") return { eof: true, got };
    for (const f of m.fds) f.close();
    got.push(m);
  }
}

/** Receives one message or nothing (bounded); EOF and resets count as nothing. */
export function tryRecv(peer: ScriptedPeer, timeoutMs: number): WireMessage | "eof" | undefined {
  try {
    return peer.recv(timeoutMs);
  } catch (e) {
    if (e instanceof Error && /No message within/.test(e.message)) return undefined;
    return "eof";
  }
}

/** One relayed session: QEMU's socket, the back-end's socket, and maybe the back-end channel. */
export class Session {
  readonly proxy: ProxyProcess;
  readonly id: number;
  readonly front: ScriptedPeer;
  readonly back: ScriptedPeer;
  /** QEMU's end of the back-end channel (after {@link openChannel}). */
  qemuCh: ScriptedPeer | undefined;
  /** The back-end's end of the back-end channel, as the proxy handed it over. */
  backCh: ScriptedPeer | undefined;

  constructor(proxy: ProxyProcess, id: number, front: ScriptedPeer, back: ScriptedPeer) {
    this.proxy = proxy;
    this.id = id;
    this.front = front;
    this.back = back;
  }

  /** Sends `m` from `from` and requires it to arrive unchanged at `to`. */
  relay(
    from: ScriptedPeer,
    to: ScriptedPeer,
    m: { request: number; flags: number; payload?: Uint8Array },
  ): WireMessage {
    from.send(m);
    const got = to.expect(3000);
    const want = frame(m.request, m.flags, m.payload);
    const have = frame(got.request, got.flags, got.payload);
    if (want.length !== have.length || want.some((b, i) => b !== have[i])) {
      throw new Error(`Message ${m.request} was altered on the way`);
    }
    return got;
  }

  /** GET_FEATURES through the proxy and back: the session relays both ways. */
  roundTrip(): void {
    this.relay(this.front, this.back, { request: 1, flags: REQ });
    const rep = this.relay(this.back, this.front, {
      request: 1,
      flags: REPLY,
      payload: u64(VIRTIO_FEATURES),
    });
    if (readU64(rep.payload) !== VIRTIO_FEATURES) throw new Error("GET_FEATURES reply altered");
  }

  /**
   * QEMU's init handshake: GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES(`acked`),
   * all relayed; afterwards the proxy tracks `acked` (e.g. REPLY_ACK) for this session.
   */
  negotiate(acked: bigint): void {
    this.roundTrip();
    this.relay(this.front, this.back, { request: 15, flags: REQ });
    this.relay(this.back, this.front, {
      request: 15,
      flags: REPLY,
      payload: u64((1n << 20n) - 1n),
    });
    this.relay(this.front, this.back, { request: 16, flags: REQ, payload: u64(acked) });
  }

  /** SET_BACKEND_REQ_FD: after it, {@link qemuCh} and {@link backCh} talk through the proxy. */
  openChannel(): void {
    const [qemuEnd, backendEnd] = socketPair();
    this.front.send({ request: 21, flags: REQ, fds: [backendEnd] });
    const got = this.back.expect(3000);
    if (got.request !== 21 || got.fds.length !== 1) {
      throw new Error("SET_BACKEND_REQ_FD not relayed");
    }
    this.qemuCh = new ScriptedPeer(qemuEnd);
    this.backCh = new ScriptedPeer(got.fds[0]);
  }

  /** Negotiates REPLY_ACK + BACKEND_REQ (+ `extra`) and opens the back-end channel. */
  withChannel(extra = 0n): this {
    this.negotiate(PF.REPLY_ACK | PF.BACKEND_REQ | PF.BACKEND_SEND_FD | extra);
    this.openChannel();
    return this;
  }

  /** Every socket of the session, main first. */
  get peers(): ScriptedPeer[] {
    return [this.front, this.back, this.qemuCh, this.backCh].filter((p): p is ScriptedPeer =>
      p !== undefined
    );
  }

  close(): void {
    for (const p of this.peers) p.close();
  }
}
