/**
 * The relay engine: the listening socket and every session, driven by one synchronous poll loop.
 * It runs inside a Worker (see engine_worker.ts) so that the main thread stays free for the CLI,
 * signals and log writing.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { OwnedFd } from "../ffi/fd.ts";
import { createEventFd, drainEventFd, POLLIN } from "../ffi/poll.ts";
import { Reactor, type Watch } from "../ffi/reactor.ts";
import { acceptConnection, listenUnix, peerCredentials } from "../ffi/socket.ts";
import type { Dialect } from "../protocol/catalogue.ts";
import type { DeviceStateConfig } from "../device_state/config.ts";
import type { DeviceStateFactory } from "../device_state/hooks.ts";
import type { LogRecord } from "../log/record.ts";
import { timestamp } from "../log/record.ts";
import { Session } from "./session.ts";
import { reconnectBackend, restartBackend, restartBlocker } from "./backend_restart.ts";

/** Everything the engine needs to run; plain data so it can cross into a Worker. */
export interface EngineConfig {
  /** Create and listen on this path, or accept on an inherited listening fd. */
  listen: { path: string; mode?: number } | { fd: number };
  /** The back-end's socket path. */
  backend: string;
  /** The numbering QEMU's side speaks (`--front-dialect`). */
  frontDialect: Dialect;
  /** The numbering the back-end speaks (`--back-dialect`); differing dialects are translated. */
  backDialect: Dialect;
  /** A request unanswered this long is reported (`--stuck-after`; 0 = never). */
  stuckAfterMs: number;
  /** How long to keep retrying the back-end for each new session (`--connect-timeout`). */
  connectTimeoutMs: number;
  /** Make message records; off, only sessions, problems and device state are logged. */
  logMessages: boolean;
  /** Device-state options, interpreted by the device-state module. */
  deviceState: DeviceStateConfig;
  /** Number of the first session (default 1): a run appending to a log continues its numbering. */
  firstSession?: number;
  /**
   * Keep each session's model (its set-up, with fd dups) so that `restart-backend` can replay
   * it to a new back-end: on with `--control`.
   */
  restartable?: boolean;
  /**
   * Hold QEMU this long when its back-end goes away, for a new one to be connected without
   * state (`--restart-on-exit`; needs `restartable`).
   */
  holdOnBackendLossMs?: number;
}

/** A control request (`vhost-user-proxy ctl`), as JSON. */
export type ControlRequest =
  | { cmd: "status" }
  | {
    cmd: "restart-backend";
    session?: number;
    /** The new back-end's socket (default: the proxy's --backend). */
    backend?: string;
  }
  | {
    /** The back-end went away: connect the new one at `backend`, without state. */
    cmd: "reconnect-backend";
    session?: number;
    backend: string;
  };

// The device-state options belong to the device-state module; the engine only passes them on.
export { DEFAULT_HASH_BACKLOG_MIB, type DeviceStateConfig } from "../device_state/config.ts";
export type { DeviceStateFactory } from "../device_state/hooks.ts";

/** Listener + sessions + reactor. */
export class Engine {
  readonly reactor: Reactor;
  readonly config: EngineConfig;
  readonly sessions = new Set<Session>();
  readonly #emit: (r: LogRecord) => void;
  readonly #deviceState: DeviceStateFactory | undefined;
  #listener: OwnedFd | undefined;
  #listenWatch: Watch | undefined;
  #nextId = 1;
  #stopped = false;
  /** The listening socket file's identity, to recognise a back-end path that leads back to it. */
  #listenIdentity: { dev: number; ino: number } | undefined;
  /** Sessions whose back-end was restarted onto another socket. */
  readonly #backendOf = new WeakMap<Session, string>();

  constructor(
    config: EngineConfig,
    emit: (r: LogRecord) => void,
    deviceState?: DeviceStateFactory,
  ) {
    this.config = config;
    this.#emit = emit;
    this.#deviceState = deviceState;
    this.#nextId = config.firstSession ?? 1;
    this.reactor = new Reactor((error, source) => this.#handlerFailed(error, source));
  }

  /** Opens the listening socket (throws if it cannot) and starts accepting. */
  listen(): void {
    const l = this.config.listen;
    if ("path" in l) refuseLoop(l.path, this.config.backend);
    this.#listener = "path" in l ? listenUnix(l.path, { mode: l.mode }) : new OwnedFd(l.fd);
    if (!("path" in l)) this.#listener.setNonBlocking(true);
    if ("path" in l) {
      const st = Deno.statSync(l.path);
      this.#listenIdentity = { dev: st.dev, ino: st.ino! };
    }
    const listener = this.#listener;
    this.#listenWatch = {
      fd: listener.fd,
      interest: () => POLLIN,
      onReady: () => this.#acceptAll(listener),
    };
    this.reactor.add(this.#listenWatch);
    this.#emit({
      type: "proxy",
      ts: timestamp(),
      event: "listening",
      listen: "path" in l ? l.path : `fd ${l.fd}`,
      backend: this.config.backend,
      pid: Deno.pid,
    });
  }

  #acceptAll(listener: OwnedFd): void {
    for (;;) {
      const conn = acceptConnection(listener);
      if (conn === undefined) return;
      let cred = null;
      try {
        cred = peerCredentials(conn);
      } catch {
        // not fatal: the record just lacks credentials
      }
      const id = this.#nextId++;
      const session = new Session(
        conn,
        {
          id,
          backendPath: this.config.backend,
          frontDialect: this.config.frontDialect,
          backDialect: this.config.backDialect,
          stuckAfterMs: this.config.stuckAfterMs,
          connectTimeoutMs: this.config.connectTimeoutMs,
          logMessages: this.config.logMessages,
          deviceState: this.#deviceState
            ? (s) => this.#deviceState!(s, this.config.deviceState)
            : undefined,
          isOwnListener: (path) => this.#isOwnListener(path),
          keepModel: this.config.restartable ?? false,
          ...(this.config.holdOnBackendLossMs
            ? { holdOnBackendLoss: { holdMs: this.config.holdOnBackendLossMs } }
            : {}),
        },
        this.reactor,
        this.#emit,
        (s) => this.sessions.delete(s),
        cred,
      );
      session.start();
      if (!session.ended) this.sessions.add(session);
    }
  }

  /** Answers a control request (status, restart-backend); runs on the relay's thread. */
  control(request: ControlRequest): Record<string, unknown> {
    switch (request.cmd) {
      case "status":
        return { ok: true, ...this.status() };
      case "restart-backend": {
        const live = [...this.sessions].filter((s) => !s.ended);
        let session: Session | undefined;
        if (request.session !== undefined) {
          session = live.find((s) => s.id === request.session);
          if (!session) return { ok: false, error: `there is no live session ${request.session}` };
        } else if (live.length === 1) session = live[0];
        else {
          return {
            ok: false,
            error: live.length === 0
              ? "there is no live session"
              : `${live.length} live sessions (${
                live.map((s) => s.id).join(", ")
              }): say --session N`,
          };
        }
        const backend = request.backend ?? this.config.backend;
        const r = restartBackend(session, {
          backend,
          allowStateless: this.config.deviceState.mode === "emulate",
        });
        if (r.ok) this.#backendOf.set(session, backend);
        return { ...r };
      }
      case "reconnect-backend": {
        const live = [...this.sessions].filter((s) => !s.ended && s.model.keepsFds);
        const session = request.session === undefined
          ? live.find((s) => s.backendLost) ?? (live.length === 1 ? live[0] : undefined)
          : live.find((s) => s.id === request.session);
        if (!session) return { ok: false, error: "no session to reconnect" };
        const r = reconnectBackend(session, { backend: request.backend });
        if (r.ok) this.#backendOf.set(session, request.backend);
        return { ...r };
      }
      default:
        return { ok: false, error: `unknown control command ${JSON.stringify(request)}` };
    }
  }

  /** Sessions with what they negotiated, their rings and restarts (`ctl status`). */
  status(): Record<string, unknown> {
    return {
      pid: Deno.pid,
      listen: "path" in this.config.listen
        ? this.config.listen.path
        : `fd ${this.config.listen.fd}`,
      restartable: this.config.restartable ?? false,
      sessions: [...this.sessions].filter((s) => !s.ended).map((s) => ({
        session: s.id,
        backend: this.#backendOf.get(s) ?? this.config.backend,
        connected: s.back !== undefined,
        ...(s.model
          ? s.model.snapshot(
            restartBlocker(s, this.config.deviceState.mode === "emulate"),
          )
          : {}),
      })),
    };
  }

  /** Whether `path` is (a link to) this engine's own listening socket: relaying there loops. */
  #isOwnListener(path: string): boolean {
    const own = this.#listenIdentity;
    if (own === undefined) return false;
    try {
      const st = Deno.statSync(path);
      return st.dev === own.dev && st.ino === own.ino;
    } catch {
      return false;
    }
  }

  #handlerFailed(error: unknown, source: Watch | "timer"): void {
    // A bug or an unexpected failure inside one session: end that session, keep the others.
    const msg = error instanceof Error ? `${error.message}\n${error.stack ?? ""}` : String(error);
    for (const s of this.sessions) {
      if (source !== "timer" && s.owns(source)) {
        s.end(`internal error: ${msg}`, "proxy", "error");
        return;
      }
    }
    this.#emit({ type: "error", ts: timestamp(), message: `internal error: ${msg}` });
  }

  /** Stops accepting, ends every session, removes the socket file it created. */
  stop(reason = "proxy stopping"): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#emit({ type: "proxy", ts: timestamp(), event: "stopping" });
    if (this.#listenWatch) this.reactor.remove(this.#listenWatch);
    this.#listener?.close();
    const l = this.config.listen;
    if ("path" in l) {
      try {
        Deno.removeSync(l.path);
      } catch {
        // already gone
      }
    }
    for (const s of [...this.sessions]) s.end(reason, "proxy");
    this.#emit({ type: "proxy", ts: timestamp(), event: "stopped" });
  }
}

/**
 * Refuses a configuration whose back-end is its own listening socket (`--listen X --backend X`,
 * also through a symbolic link or `..`): every connection would connect to itself, again and
 * again, until the proxy runs out of fds.
 */
export function refuseLoop(listen: string, backend: string): void {
  if (canonical(listen) === canonical(backend)) {
    throw new Error(
      `Cannot relay "${listen}" to "${backend}": the back-end is the proxy's own listening ` +
        "socket (a loop)",
    );
  }
}

/** `path` with its directory resolved (the socket itself may not exist yet). */
function canonical(path: string): string {
  const abs = resolve(path);
  try {
    return Deno.realPathSync(abs);
  } catch {
    try {
      return resolve(Deno.realPathSync(dirname(abs)), basename(abs));
    } catch {
      return abs;
    }
  }
}

/** A wake-up eventfd for a loop blocked in poll(), shared with another thread by number. */
export class WakeUp implements Watch {
  readonly #fd: OwnedFd;
  #pending = 0;

  constructor(fd?: number) {
    this.#fd = fd === undefined ? createEventFd() : new OwnedFd(fd);
  }

  get fd(): number {
    return this.#fd.fd;
  }

  interest(): number {
    return POLLIN;
  }

  onReady(): void {
    this.#pending += drainEventFd(this.#fd);
  }

  /** Wake-ups counted since the last call, reset to 0. */
  take(): number {
    const n = this.#pending;
    this.#pending = 0;
    return n;
  }

  close(): void {
    this.#fd.close();
  }
}
