/**
 * One front-end connection relayed to one back-end connection: the main channel both ways, the
 * back-end channel once SET_BACKEND_REQ_FD is interposed, replies correlated with requests,
 * negotiated features tracked for decoding, every fd relayed and the proxy's copy closed.
 *
 * The two channels never wait on each other: QEMU reads main-channel replies synchronously while
 * the back-end may be waiting on a back-end-channel reply, so serialising them would deadlock.
 *
 * @module
 */

import { closeAll, type OwnedFd } from "../ffi/fd.ts";
import { SystemError } from "../ffi/errors.ts";
import { fdKind } from "../ffi/fdinfo.ts";
import type { Reactor, Timer } from "../ffi/reactor.ts";
import { connectUnix, type PeerCredentials, shutdownSocket, socketPair } from "../ffi/socket.ts";
import type { Frame } from "./channel.ts";
import type { Dialect } from "../protocol/catalogue.ts";
import {
  checkReply,
  decodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  type Message,
  messageToJson,
  type Negotiated,
  readHeader,
  replyExpected,
  requestName,
  summarizeMessage,
} from "../protocol/codec.ts";
import { translateMessage } from "../protocol/dialect.ts";
import { readPayload } from "../protocol/layouts.ts";
import { Endpoint, type EndpointOwner } from "./endpoint.ts";
import type {
  ChannelName,
  LogRecord,
  MessageRecord,
  SenderSide,
  SessionSummary,
} from "../log/record.ts";
import { timestamp } from "../log/record.ts";
import { MAX_PAYLOAD_SIZE } from "../protocol/violations.ts";
import { SessionModel } from "./session_model.ts";
import type { DeviceStateHooks, Verdict } from "../device_state/hooks.ts";

/** How a peer's closing was found (`#peerClosed`). */
interface PeerClosed {
  /** The peer closed with part of a message read. */
  midMessage?: boolean;
  /** Bytes of that message read. */
  have?: number;
  /** Its request code, when the header was whole. */
  code?: number;
  /** The request being relayed to the peer when the closing was seen. */
  sending?: string;
  /** The rest of the sentence (what else was seen). */
  context?: string;
}

/** How a session behaves. */
export interface SessionOptions {
  id: number;
  /** Path of the back-end's listening socket. */
  backendPath: string;
  frontDialect: Dialect;
  backDialect: Dialect;
  /** Flag a request whose reply has not come after this long (ms); 0 = never. */
  stuckAfterMs: number;
  /** Give up connecting to the back-end after this long (ms). */
  connectTimeoutMs: number;
  /** Produce a record per message (off for benchmarks with no log). */
  logMessages: boolean;
  /** Device-state handling (relay / emulate / off), made per session. */
  deviceState?: (session: Session) => DeviceStateHooks | undefined;
  /**
   * Keep a {@linkcode SessionModel} (frames and fd dups of the set-up) so that the back-end can
   * be restarted; off by default, as it costs a dup and a close per fd-carrying request.
   */
  keepModel?: boolean;
  /**
   * When the back-end goes away (crashes, is killed), hold QEMU's connection instead of ending
   * the session, for `holdMs`, so that a new back-end can be connected without state
   * (`--restart-on-exit`).
   */
  holdOnBackendLoss?: { holdMs: number };
  /**
   * An already-connected back-end socket: the session uses it instead of connecting to
   * `backendPath` (a session over a socketpair, in tests and the start-up rehearsal).
   */
  backendSocket?: OwnedFd;
  /** Whether a path is the proxy's own listening socket (connecting there would loop). */
  isOwnListener?: (path: string) => boolean;
}

interface PendingReply {
  channel: ChannelName;
  /** The request as the proxy decoded it, to check the reply against (as QEMU does). */
  request: Message;
  /** Code the reply will carry (receiver's dialect). */
  code: number;
  name: string;
  since: number;
  /** The stuck-reply warning was given. */
  warned?: boolean;
  /**
   * The catalogue expects no reply (unknown code, ack not asked for): a reply echoing the code is
   * still relayed, with a warning; a later reply passes over it.
   */
  optional?: boolean;
  /** A reply the proxy answers itself is not awaited from the peer. */
}

const CONNECT_RETRY_MS = 50;
/** Optional reply slots kept per channel: the oldest go first (a peer rarely answers them). */
const MAX_OPTIONAL_REPLIES = 64;

/**
 * Where in `queue` the reply with `code` belongs, or -1: the first entry that must be answered
 * when it has that code (optional entries before it went unanswered), else the first optional
 * entry with that code before it. A conforming peer answers only what is owed, so the owed
 * entry wins over an optional one with the same code.
 */
function matchReply(queue: readonly PendingReply[], code: number): number {
  let optional = -1;
  for (let i = 0; i < queue.length; i++) {
    if (!queue[i].optional) return queue[i].code === code ? i : optional;
    if (optional < 0 && queue[i].code === code) optional = i;
  }
  return optional;
}

/** What the log record of a relayed message will say, gathered on the way through. */
export interface PendingRecord {
  message: Message;
  /** Bytes on the wire (header + payload). */
  size: number;
  warnings: string[];
  latencyUs?: number;
  action?: string;
  fds?: { kind: string }[];
  forwardedCode?: number;
  /** Made by the proxy, not relayed. */
  injected?: boolean;
}

/** A relayed front-end connection. */
export class Session implements EndpointOwner {
  readonly id: number;
  readonly options: SessionOptions;
  readonly reactor: Reactor;
  readonly #emit: (r: LogRecord) => void;
  readonly #onEnd: (s: Session) => void;
  readonly startedAt = performance.now();

  readonly front: Endpoint;
  back: Endpoint | undefined;
  frontBackendChannel: Endpoint | undefined;
  backBackendChannel: Endpoint | undefined;

  /** Features as the front-end sees them (front dialect numbering). */
  readonly frontView: Negotiated = { virtio: 0n, protocol: 0n, postcopy: false };
  /** Features as the back-end sees them (back dialect numbering). */
  readonly backView: Negotiated = { virtio: 0n, protocol: 0n, postcopy: false };

  readonly #pending: Record<ChannelName, PendingReply[]> = { main: [], backend: [] };
  readonly #summary: SessionSummary = {
    durationMs: 0,
    messages: 0,
    bytes: 0,
    fdsRelayed: 0,
    byName: {},
    errors: 0,
    warnings: 0,
  };
  #ended = false;
  #connectDeadline = 0;
  #connectTimer: Timer | undefined;
  #stuckTimer: Timer | undefined;
  /** While device-state hooks run: records of the answers they inject, logged afterwards. */
  #deferInjected: [Endpoint, PendingRecord][] | undefined;
  readonly deviceState: DeviceStateHooks | undefined;
  /** What was negotiated and set up with the back-end (its fds too with `keepModel`). */
  readonly model: SessionModel;

  constructor(
    front: OwnedFd,
    options: SessionOptions,
    reactor: Reactor,
    emit: (r: LogRecord) => void,
    onEnd: (s: Session) => void,
    credentials: PeerCredentials | null,
  ) {
    this.id = options.id;
    this.options = options;
    this.reactor = reactor;
    this.#emit = emit;
    this.#onEnd = onEnd;
    this.front = new Endpoint(front, "main", "front-end", this, MAX_PAYLOAD_SIZE);
    reactor.add(this.front);
    this.deviceState = options.deviceState?.(this);
    this.model = new SessionModel(options.backDialect, { keepFds: options.keepModel ?? false });
    this.#credentials = credentials;
  }

  readonly #credentials: PeerCredentials | null;
  #started = false;

  /**
   * Logs the session's start and connects to the back-end (or adopts `backendSocket`). Apart
   * from the constructor so that building a session does no I/O; a failed connection ends the
   * session (see {@linkcode ended}). Once only.
   */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#emit({
      type: "session-start",
      ts: timestamp(),
      session: this.id,
      frontEnd: this.#credentials,
      backend: this.options.backendPath,
    });
    this.#connectDeadline = performance.now() + this.options.connectTimeoutMs;
    if (this.options.backendSocket) this.#adoptBackend(this.options.backendSocket);
    else this.#tryConnect();
  }

  /** Whether `watch` is one of this session's sockets (to end the right session on a bug). */
  owns(watch: unknown): boolean {
    return watch === this.front || watch === this.back ||
      watch === this.frontBackendChannel || watch === this.backBackendChannel;
  }

  /** True once the session has closed everything. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Emits a record tagged with this session. */
  emit(record: LogRecord): void {
    if (record.type === "error") this.#summary.errors++;
    if (record.type === "warning") this.#summary.warnings++;
    this.#emit(record);
  }

  #tryConnect(): void {
    this.#connectTimer = undefined;
    if (this.#ended) return;
    if (this.options.isOwnListener?.(this.options.backendPath)) {
      this.end(
        `cannot connect to the back-end at "${this.options.backendPath}": it is the proxy's own ` +
          "listening socket (a loop); not connecting",
        "proxy",
        "error",
      );
      return;
    }
    let sock: OwnedFd;
    try {
      sock = connectUnix(this.options.backendPath);
    } catch (e) {
      const retryable = e instanceof SystemError &&
        (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EAGAIN");
      if (retryable && performance.now() < this.#connectDeadline) {
        this.#connectTimer = this.reactor.setTimer(CONNECT_RETRY_MS, () => this.#tryConnect());
        return;
      }
      this.end(
        `cannot connect to the back-end at "${this.options.backendPath}": ${
          e instanceof Error ? e.message : String(e)
        }`,
        "proxy",
        "error",
      );
      return;
    }
    this.#adoptBackend(sock);
  }

  #adoptBackend(sock: OwnedFd): void {
    sock.setNonBlocking(true);
    this.back = new Endpoint(sock, "main", "back-end", this, MAX_PAYLOAD_SIZE);
    this.front.target = this.back;
    this.back.target = this.front;
    this.reactor.add(this.back);
  }

  // ---- EndpointOwner -------------------------------------------------------------------------

  pump(endpoint: Endpoint): void {
    // One message per wake-up: poll is level-triggered and reports the socket again if more is
    // queued, while trying a second read would cost a failing recvmsg on every round trip.
    if (this.#ended || !endpoint.mayRead) return;
    let outcome;
    try {
      outcome = endpoint.channel.read();
    } catch (e) {
      this.#ioFailed(endpoint, e);
      return;
    }
    switch (outcome.kind) {
      case "pending":
        return;
      case "frame":
        this.#handle(endpoint, outcome.frame);
        return;
      case "eof":
        this.#peerClosed(endpoint, {
          midMessage: outcome.midMessage,
          have: outcome.have,
          code: outcome.header?.request,
        });
        return;
      case "violation": {
        const r = outcome.reason;
        const what = outcome.header ? this.#nameOf(endpoint, outcome.header.request) : "message";
        const detail = r.kind === "too-large"
          ? `payload size ${r.size} exceeds the limit of ${r.limit} bytes`
          : `more than 8 fds attached (control data truncated, ${r.received} received and closed)`;
        this.#violation(endpoint, what, r.kind === "too-large" ? "size" : "fds", detail);
        return;
      }
    }
  }

  writeFailed(endpoint: Endpoint, error: unknown): void {
    this.#ioFailed(endpoint, error);
  }

  hungUp(endpoint: Endpoint): void {
    if (this.#ended) return;
    const queued = endpoint.target?.channel.pendingOutput ?? 0;
    this.#peerClosed(endpoint, {
      context: ` while the ${
        endpoint.target?.peer ?? "other side"
      } was not reading (${queued} bytes still queued for it)`,
    });
  }

  // ---- relay ---------------------------------------------------------------------------------

  #nameOf(endpoint: Endpoint, code: number): string {
    const dialect = endpoint.peer === "front-end"
      ? this.options.frontDialect
      : this.options.backDialect;
    return requestName(endpoint.kind, code, dialect);
  }

  #handle(from: Endpoint, frame: Frame): void {
    const sender = from.peer;
    const fromFront = sender === "front-end";
    const view = fromFront ? this.frontView : this.backView;
    const dialect = fromFront ? this.options.frontDialect : this.options.backDialect;
    const header = readHeader(frame.bytes);
    const decoded = decodeMessage(header, frame.payload, frame.fds.length, {
      channel: from.kind,
      sender,
      dialect,
      negotiated: view,
    });
    if (!decoded.ok) {
      closeAll(frame.fds);
      const v = decoded.error;
      this.#violation(from, v.request, v.field ?? v.kind, { sentence: v.message });
      return;
    }
    const message = decoded.message;
    // Who may send what: on the main channel the front-end sends requests and the back-end
    // replies; on the back-end channel it is the other way round.
    const requester: SenderSide = from.kind === "main" ? "front-end" : "back-end";
    const isReply = (header.flags & FLAG_REPLY) !== 0;
    if (isReply === (sender === requester)) {
      closeAll(frame.fds);
      this.#violation(
        from,
        message.name,
        "flags",
        isReply
          ? `${sender} sent a reply to ${message.name} on the ${from.kind} channel, where it only sends requests`
          : `${sender} sent request ${message.name} on the ${from.kind} channel, where it only replies`,
      );
      return;
    }
    const warnings = [...message.warnings];
    if (frame.lateFds) warnings.push("fds arrived after the first header byte");

    let latencyUs: number | undefined;
    if (isReply) {
      // Replies come in request order and echo the request's code (docs/protocol.md §1.1): matched by code,
      // whether or not the catalogue knows the request has one.
      const queue = this.#pending[from.kind];
      const at = matchReply(queue, header.request);
      if (at < 0) {
        const owed = queue.find((p) => !p.optional);
        closeAll(frame.fds);
        this.#violation(
          from,
          message.name,
          "request",
          owed === undefined
            ? `unsolicited reply to ${message.name}: no request is awaiting a reply`
            : `reply to ${message.name} while ${owed.name} awaits its reply`,
        );
        return;
      }
      const head = queue[at];
      queue.splice(0, at + 1);
      if (head.optional) {
        warnings.push(
          `reply to ${head.name}, which the catalogue does not expect to be answered: relayed`,
        );
      }
      latencyUs = Math.round((performance.now() - head.since) * 1000);
      const problem = this.#checkReply(from, head.request, message);
      if (problem !== undefined) {
        closeAll(frame.fds);
        this.#violation(from, message.name, problem.field, problem.detail);
        return;
      }
    }

    // A fd a request must not carry (REM_MEM_REG's, which the receiver "MUST close without
    // using"): closed here, so no back-end can misuse it.
    const allowed = message.spec === undefined
      ? undefined
      : (isReply ? message.spec.replyFds : message.spec.fds).warnAbove;
    let dropped = 0;
    if (allowed !== undefined && frame.fds.length > allowed) {
      dropped = frame.fds.length - allowed;
      closeAll(frame.fds.splice(allowed));
    }
    if (message.name === "SET_BACKEND_REQ_FD" && !isReply && frame.fds.length === 1) {
      const kind = fdKind(frame.fds[0].fd);
      if (kind !== "socket") {
        closeAll(frame.fds);
        this.#violation(from, message.name, "fds", `the attached fd is a ${kind}, not a socket`);
        return;
      }
    }

    // The sender's own view of the features comes from what it sent, before any rewriting.
    this.#trackFeatures(message, fromFront, isReply);

    // The record shows the fds as they arrived, before the hooks or interposition swap them.
    const record: PendingRecord = {
      message,
      size: frame.bytes.length,
      warnings,
      latencyUs,
      fds: this.options.logMessages ? frame.fds.map((f) => ({ kind: fdKind(f.fd) })) : [],
    };
    if (dropped > 0) record.action = `closed ${dropped} fd(s) ${message.name} must not carry`;
    let verdict: Verdict = { action: "forward" };
    if (this.deviceState) {
      // Answers the hooks inject are logged after the message they answer.
      const deferred: [Endpoint, PendingRecord][] = [];
      this.#deferInjected = deferred;
      try {
        verdict = this.deviceState.intercept(from, message, frame);
      } finally {
        this.#deferInjected = undefined;
      }
      record.action = verdict.note ?? record.action;
      if (verdict.action === "answered") this.#record(from, record);
      else {
        this.forward(from, message, verdict.bytes ?? frame.bytes, verdict.fds ?? frame.fds, record);
      }
      for (const [ep, r] of deferred) this.#record(ep, r);
      return;
    }
    this.forward(from, message, frame.bytes, frame.fds, record);
  }

  /**
   * What QEMU checks of a reply beyond its code: GET_CONFIG as long as requested, postcopy
   * regions matching. (The size bound, QEMU's payload union, is the codec's: 2056 bytes.)
   */
  #checkReply(
    _from: Endpoint,
    request: Message,
    reply: Message,
  ): { field: string; detail: string } | undefined {
    // Codes were matched already (across dialects); compare the payloads.
    const v = checkReply(
      request.code === reply.code ? request : { ...request, code: reply.code },
      reply,
    );
    return v === undefined ? undefined : { field: v.field ?? v.kind, detail: v.detail };
  }

  /** Updates the feature views from a SET_FEATURES / POSTCOPY request as its sender meant it. */
  #trackFeatures(message: Message, fromFront: boolean, isReply: boolean): void {
    const p = message.payload;
    switch (message.name) {
      case "SET_FEATURES":
        // Its REPLY_ACK ack is a u64 result: only the request carries features.
        if (p.layout === "virtio_features") {
          this.frontView.virtio = this.backView.virtio = p.features;
        }
        break;
      case "SET_PROTOCOL_FEATURES":
        if (fromFront && p.layout === "protocol_features") this.frontView.protocol = p.features;
        break;
      case "POSTCOPY_LISTEN":
        if (!isReply) this.frontView.postcopy = this.backView.postcopy = true;
        break;
      case "POSTCOPY_END":
        if (isReply) this.frontView.postcopy = this.backView.postcopy = false;
        break;
    }
  }

  /**
   * Relays a decoded message to the other side of its channel: dialect translation,
   * back-end-channel interposition, reply bookkeeping, fd hand-over and the log record.
   * Device-state hooks call it too, for messages they held back.
   */
  forward(
    from: Endpoint,
    message: Message,
    bytes: Uint8Array,
    fds: OwnedFd[],
    record: PendingRecord,
  ): void {
    if (this.#ended) {
      closeAll(fds);
      return;
    }
    const header = message.header;
    const fromFront = from.peer === "front-end";
    const isReply = message.kind === "reply";
    const name = message.name;
    const to = from.target!;
    const dialect = fromFront ? this.options.frontDialect : this.options.backDialect;

    // One translation, the codec's (request code, protocol feature bits), between dialects.
    const target = fromFront ? this.options.backDialect : this.options.frontDialect;
    if (dialect !== target && message.spec !== undefined) {
      const t = translateMessage(bytes, dialect, target, from.kind);
      if (!t.ok) {
        closeAll(fds);
        this.#violation(from, name, "request", t.error);
        return;
      }
      const code = readHeader(t.value).request;
      if (code !== header.request) record.forwardedCode = code;
      if (t.dropped.length > 0) {
        record.warnings.push(
          `protocol features without a ${target} number dropped: ${t.dropped.join(", ")}`,
        );
      }
      bytes = t.value;
    }
    // What the back-end was told it may use, in its own numbering: the bytes as translated and
    // as the hooks left them (emulation strips F_DEVICE_STATE on the way).
    if (name === "SET_PROTOCOL_FEATURES" && fromFront && !isReply) {
      this.backView.protocol = readPayload("protocol_features", bytes.subarray(HEADER_SIZE))
        .features;
    }

    if (name === "SET_BACKEND_REQ_FD" && !isReply && fds.length === 1) {
      fds = [this.#interposeBackendChannel(fds[0])];
      record.action ??= "interposed the back-end channel";
    }

    const view = fromFront ? this.frontView : this.backView;
    const expectsReply = !isReply && replyExpected(message, view);
    record.fds ??= this.options.logMessages ? fds.map((f) => ({ kind: fdKind(f.fd) })) : [];
    const fdCount = fds.length;
    if (to.kind === "main") this.#observe(message, bytes, fds, isReply, from, to);
    try {
      to.channel.send(bytes, fds);
    } catch (e) {
      this.#ioFailed(to, e, name);
      return;
    }
    if (!isReply) {
      this.#awaitReply(to.kind, record.forwardedCode ?? header.request, message, !expectsReply);
    }
    this.#summary.fdsRelayed += fdCount;
    this.#record(from, record);
  }

  /**
   * Sends a message the proxy made itself (e.g. an answer in emulation) to `to`, logging it as
   * coming from the proxy on behalf of `to`'s peer.
   */
  inject(to: Endpoint, message: Message, bytes: Uint8Array, fds: OwnedFd[], note: string): void {
    if (this.#ended) {
      closeAll(fds);
      return;
    }
    const kinds = this.options.logMessages ? fds.map((f) => ({ kind: fdKind(f.fd) })) : [];
    try {
      to.channel.send(bytes, fds);
    } catch (e) {
      this.#ioFailed(to, e, message.name);
      return;
    }
    const from = to.target ?? to;
    const record: PendingRecord = {
      message,
      size: bytes.length,
      warnings: [],
      action: note,
      fds: kinds,
      injected: true,
    };
    if (this.#deferInjected) this.#deferInjected.push([from, record]);
    else this.#record(from, record);
  }

  /**
   * Remembers that `to`'s peer owes a reply (or, `optional`, may send one), and makes sure the
   * stuck-reply check is armed.
   */
  #awaitReply(channel: ChannelName, code: number, request: Message, optional: boolean): void {
    const name = request.name;
    const queue = this.#pending[channel];
    if (optional) {
      let count = 0;
      let oldest = -1;
      for (let i = 0; i < queue.length; i++) {
        if (!queue[i].optional) continue;
        if (oldest < 0) oldest = i;
        count++;
      }
      if (count >= MAX_OPTIONAL_REPLIES) queue.splice(oldest, 1);
      queue.push({ channel, code, name, request, since: performance.now(), optional });
      return;
    }
    queue.push({ channel, code, name, request, since: performance.now() });
    this.#armStuckCheck();
  }

  /**
   * One timer per session, due when the oldest unwarned request crosses the threshold (a timer
   * per request would cost an allocation per message on the hot path).
   */
  #armStuckCheck(): void {
    const limit = this.options.stuckAfterMs;
    if (limit <= 0 || this.#stuckTimer !== undefined || this.#ended) return;
    let oldest = Infinity;
    for (const q of [this.#pending.main, this.#pending.backend]) {
      const head = q.find((p) => !p.warned && !p.optional);
      if (head !== undefined) oldest = Math.min(oldest, head.since);
    }
    if (oldest === Infinity) return;
    const due = Math.max(0, oldest + limit - performance.now());
    this.#stuckTimer = this.reactor.setTimer(due, () => {
      this.#stuckTimer = undefined;
      if (this.#ended) return;
      const now = performance.now();
      for (const q of [this.#pending.main, this.#pending.backend]) {
        for (const p of q) {
          if (p.warned || p.optional || now - p.since < limit) continue;
          p.warned = true;
          const side = p.channel === "main" ? "back-end" : "front-end";
          this.emit({
            type: "warning",
            ts: timestamp(),
            session: this.id,
            channel: p.channel,
            side,
            request: p.name,
            message: `${p.name} has waited ${limit} ms for a reply from the ${side}`,
          });
        }
      }
      this.#armStuckCheck();
    });
  }

  /**
   * Gives the back-end its own socketpair end instead of QEMU's, and relays between the two:
   * the proxy sees, decodes and logs the back-end channel like the main one.
   */
  #interposeBackendChannel(qemuEnd: OwnedFd): OwnedFd {
    this.#closeBackendChannel();
    const [ours, theirs] = socketPair();
    this.frontBackendChannel = new Endpoint(
      qemuEnd,
      "backend",
      "front-end",
      this,
      MAX_PAYLOAD_SIZE,
    );
    this.backBackendChannel = new Endpoint(ours, "backend", "back-end", this, MAX_PAYLOAD_SIZE);
    this.frontBackendChannel.target = this.backBackendChannel;
    this.backBackendChannel.target = this.frontBackendChannel;
    this.reactor.add(this.frontBackendChannel);
    this.reactor.add(this.backBackendChannel);
    return theirs;
  }

  #holdTimer: Timer | undefined;

  /** True while QEMU is held with no back-end (after a loss, before a new one is in place). */
  get backendLost(): boolean {
    return this.#holdTimer !== undefined;
  }

  /**
   * The back-end is gone: close its sockets and hold QEMU's (its requests wait unread) until a
   * new back-end is swapped in, or `holdMs` passes and the session ends.
   */
  dropBackend(reason: string): void {
    const old = this.back;
    if (old !== undefined) {
      this.reactor.remove(old);
      old.channel.close();
    }
    this.back = undefined;
    this.front.target = undefined;
    this.#closeBackendSideOfChannel();
    const holdMs = this.options.holdOnBackendLoss?.holdMs ?? 0;
    this.emit({
      type: "restart",
      event: "backend-lost",
      ts: timestamp(),
      session: this.id,
      reason,
      holdMs,
    });
    this.#holdTimer?.cancel();
    this.#holdTimer = this.reactor.setTimer(holdMs, () => {
      this.#holdTimer = undefined;
      this.end(`${reason}; no new back-end was connected within ${holdMs} ms`, "back-end", "error");
    });
  }

  /**
   * Updates the session model from a message on its way. The model only watches: a failure in it
   * is logged once and the message is relayed as ever (it must not end a session both peers
   * would carry on); a restart then finds the model incomplete and says so.
   */
  #observe(
    message: Message,
    bytes: Uint8Array,
    fds: readonly OwnedFd[],
    isReply: boolean,
    from: Endpoint,
    to: Endpoint,
  ): void {
    try {
      if (!isReply && to === this.back) this.model.sent(message, bytes, fds);
      else if (isReply && from === this.back) {
        this.model.replied(message, bytes.subarray(HEADER_SIZE));
      }
    } catch (e) {
      if (!this.#modelFailed) {
        this.emit({
          type: "warning",
          ts: timestamp(),
          session: this.id,
          message: `the session model could not follow ${message.name}${
            isReply ? " reply" : ""
          } (relayed as ever): ${e instanceof Error ? e.message : e}`,
        });
      }
      this.#modelFailed = true;
      this.model.unsupported.add("a message the session model could not follow");
    }
  }

  #modelFailed = false;

  /** Requests still owed a reply on the main channel, by name. */
  owedReplies(): string[] {
    return this.#pending.main.filter((p) => !p.optional).map((p) => p.name);
  }

  /**
   * Puts a new back-end in place of the old one (a restart): `socket` is its main socket, set up
   * already; `backendChannel` the proxy's end of its new back-end channel. QEMU's end of the
   * back-end channel stays; the old back-end's sockets are closed, which lets it go.
   */
  swapBackend(socket: OwnedFd, backendChannel: OwnedFd | undefined): void {
    this.#holdTimer?.cancel();
    this.#holdTimer = undefined;
    const old = this.back;
    const next = new Endpoint(socket, "main", "back-end", this, MAX_PAYLOAD_SIZE);
    next.target = this.front;
    this.front.target = next;
    this.back = next;
    this.reactor.add(next);
    if (old !== undefined) {
      this.reactor.remove(old);
      shutdownSocket(old.channel.socket);
      old.channel.close();
    }
    this.#closeBackendSideOfChannel();
    if (backendChannel !== undefined && this.frontBackendChannel !== undefined) {
      const ep = new Endpoint(backendChannel, "backend", "back-end", this, MAX_PAYLOAD_SIZE);
      ep.target = this.frontBackendChannel;
      this.frontBackendChannel.target = ep;
      this.backBackendChannel = ep;
      this.reactor.add(ep);
    } else backendChannel?.close();
  }

  /**
   * Closes the back-end's end of the back-end channel (the back-end is gone or replaced); QEMU's
   * end stays, unread until a new back-end's end is its target.
   */
  #closeBackendSideOfChannel(): void {
    if (this.backBackendChannel === undefined) return;
    this.reactor.remove(this.backBackendChannel);
    this.backBackendChannel.channel.close();
    this.backBackendChannel = undefined;
    if (this.frontBackendChannel) this.frontBackendChannel.target = undefined;
  }

  #closeBackendChannel(): void {
    for (const ep of [this.frontBackendChannel, this.backBackendChannel]) {
      if (ep === undefined) continue;
      this.reactor.remove(ep);
      ep.channel.close();
    }
    this.frontBackendChannel = this.backBackendChannel = undefined;
    this.#pending.backend = [];
  }

  #record(from: Endpoint, r: PendingRecord): void {
    const s = this.#summary;
    const message = r.message;
    s.messages++;
    s.bytes += r.size;
    const key = message.kind === "reply" ? `${message.name} (reply)` : message.name;
    s.byName[key] = (s.byName[key] ?? 0) + 1;
    if (r.warnings.length > 0) s.warnings++;
    if (!this.options.logMessages) return;
    const flags = message.header.flags;
    const flagNames: string[] = [];
    if (flags & FLAG_REPLY) flagNames.push("REPLY");
    if (flags & FLAG_NEED_REPLY) flagNames.push("NEED_REPLY");
    const record: MessageRecord = {
      type: "message",
      ts: timestamp(),
      session: this.id,
      channel: from.kind,
      from: from.peer,
      direction: from.peer === "front-end" ? "front-end → back-end" : "back-end → front-end",
      kind: message.kind,
      code: message.code,
      name: message.name,
      flags: `0x${flags.toString(16)}`,
      flagNames,
      size: message.header.size,
      layout: message.payload.layout,
      payload: payloadJson(message),
      summary: summarizeMessage(message),
      fds: r.fds ?? [],
    };
    if (r.injected) record.injected = true;
    if (r.latencyUs !== undefined) record.latencyUs = r.latencyUs;
    if (r.action !== undefined) record.action = r.action;
    if (r.warnings.length > 0) record.warnings = r.warnings;
    if (r.forwardedCode !== undefined) record.forwardedCode = r.forwardedCode;
    this.#emit(record);
  }

  // ---- failures and teardown ---------------------------------------------------------------

  /**
   * Ends the session for a message the proxy will not relay. `detail` completes the proxy's
   * sentence; the codec's violations come as their own `sentence`.
   */
  #violation(
    from: Endpoint,
    request: string,
    field: string,
    detail: string | { sentence: string },
  ): void {
    const message = typeof detail === "string"
      ? `Cannot relay ${request} from ${from.peer} on the ${from.kind} channel: ${detail}`
      : detail.sentence;
    this.emit({
      type: "error",
      ts: timestamp(),
      session: this.id,
      channel: from.kind,
      side: from.peer,
      request,
      field,
      message,
    });
    this.end(`protocol violation by the ${from.peer}: ${message}`, "proxy", "error", from.peer);
  }

  #ioFailed(endpoint: Endpoint, error: unknown, sending?: string): void {
    if (error instanceof SystemError && error.isDisconnect) {
      this.#peerClosed(endpoint, { sending });
      return;
    }
    const msg = error instanceof Error ? error.message : String(error);
    this.emit({
      type: "error",
      ts: timestamp(),
      session: this.id,
      channel: endpoint.kind,
      side: endpoint.peer,
      request: sending,
      message: `I/O on the ${endpoint.kind} channel to the ${endpoint.peer} failed: ${msg}`,
    });
    this.end(`I/O failure: ${msg}`, "proxy", "error");
  }

  #peerClosed(endpoint: Endpoint, how: PeerClosed = {}): void {
    const { midMessage = false, have = 0, code, sending, context = "" } = how;
    // Without a whole header there is no request code to name.
    const what = !midMessage
      ? ""
      : code === undefined
      ? ` in the middle of a message header (${have} of 12 bytes read)`
      : ` in the middle of ${this.#nameOf(endpoint, code)} (${have} bytes read)`;
    if (endpoint.kind === "backend") {
      // Losing the back-end channel does not end the session: the main channel goes on.
      this.emit({
        type: "warning",
        ts: timestamp(),
        session: this.id,
        channel: "backend",
        side: endpoint.peer,
        message: `${endpoint.peer} closed the back-end channel${what}${context}`,
      });
      this.#closeBackendChannel();
      return;
    }
    let reason = `${endpoint.peer} closed the main channel${what}${context}`;
    if (sending) reason += ` while ${sending} was being relayed to it`;
    if (
      endpoint === this.back && this.options.holdOnBackendLoss && this.model.keepsFds &&
      this.owedReplies().length === 0
    ) {
      this.dropBackend(reason);
      return;
    }
    this.end(reason, endpoint.peer, midMessage ? "error" : undefined);
  }

  /** Ends the session: closes both sides and every fd it holds, logs why. */
  end(
    reason: string,
    closedBy?: SenderSide | "proxy",
    severity?: "error",
    violationBy?: SenderSide,
  ): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#connectTimer?.cancel();
    this.#holdTimer?.cancel();
    this.#holdTimer = undefined;
    const now = performance.now();
    const owedReplies = [...this.#pending.main, ...this.#pending.backend].filter((p) =>
      !p.optional
    );
    const inFlight = owedReplies.map((p) => ({
      channel: p.channel,
      name: p.name,
      waitedMs: Math.round(now - p.since),
    }));
    this.#stuckTimer?.cancel();
    if (inFlight.length > 0) {
      const owed = inFlight.map((p) => `${p.name} awaited a reply`).join(", ");
      reason += ` (${owed})`;
    }
    if (severity === "error" && !reason.startsWith("protocol violation")) {
      this.emit({ type: "error", ts: timestamp(), session: this.id, message: reason });
    }
    this.deviceState?.close();
    // The record shows the set-up as it was; then the model's fd dups go.
    const model = this.model.snapshot();
    this.model.close();
    for (const ep of [this.front, this.back]) {
      if (ep === undefined) continue;
      this.reactor.remove(ep);
      // Flush what is queued for a peer that is still there (best effort, never blocks).
      try {
        ep.channel.flush();
      } catch {
        // the peer is gone
      }
      shutdownSocket(ep.channel.socket);
      ep.channel.close();
    }
    this.#closeBackendChannel();
    this.#summary.durationMs = Math.round(now - this.startedAt);
    this.emit({
      type: "session-end",
      ts: timestamp(),
      session: this.id,
      reason,
      closedBy,
      ...(violationBy === undefined ? {} : { violationBy }),
      inFlight,
      summary: this.#summary,
      model,
    });
    this.#onEnd(this);
  }
}

/** The decoded payload alone: the record already carries the header fields. */
function payloadJson(message: Message): Record<string, unknown> {
  const json = messageToJson(message);
  const inner = json.payload;
  return typeof inner === "object" && inner !== null ? inner as Record<string, unknown> : json;
}
