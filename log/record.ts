/**
 * The proxy's structured log records: what the JSON Lines log holds, one object per line, and
 * what the human formatter renders. Records are plain JSON-safe data (no bigint), made in the
 * relay Worker and written by the main thread.
 *
 * @module
 */

import type { Channel, Side } from "../protocol/catalogue.ts";
import type { LintRecord } from "./lint_record.ts";
export type { LintRecord } from "./lint_record.ts";

/** Which socket a message travelled on: the protocol's {@linkcode Channel}, by its log name. */
export type ChannelName = Channel;

/** Who sent a message: the protocol's {@linkcode Side}, by its log name. */
export type SenderSide = Side;

/** Kind of an fd riding on a message, from /proc. */
export interface FdInfo {
  /** What the fd is, from its /proc link: `memfd`, `eventfd`, `pipe`, `socket`, `file`, `anon` or `unknown`. */
  kind: string;
}

/** One relayed (or proxy-made) vhost-user message. */
export interface MessageRecord {
  /** Discriminant of the record union. */
  type: "message";
  /** ISO-8601 wall-clock time. */
  ts: string;
  /** Number of the front-end connection the message belongs to. */
  session: number;
  /** The main socket or the back-end channel. */
  channel: ChannelName;
  /** Sender of the message as it arrived at the proxy. */
  from: SenderSide;
  /** The way it travelled, e.g. "front-end → back-end". */
  direction: "front-end → back-end" | "back-end → front-end";
  /** A request, or the reply to one (the REPLY flag). */
  kind: "request" | "reply";
  /** Request code from the header, in the sender's dialect. */
  code: number;
  /** Catalogue name without `VHOST_USER_`, or `UNKNOWN(n)` for a code the dialect lacks. */
  name: string;
  /** Header flags as hex, e.g. "0x9". */
  flags: string;
  /** Names of set flag bits, e.g. ["NEED_REPLY"]. */
  flagNames: string[];
  /** Payload size in bytes, from the header. */
  size: number;
  /** Payload layout name from the catalogue, e.g. "vring_addr". */
  layout: string;
  /** Decoded payload (JSON view from the codec). */
  payload: Record<string, unknown>;
  /** One-line summary of the key fields. */
  summary: string;
  /** The fds that came with the message (ancillary data), in order. */
  fds: FdInfo[];
  /** For replies: microseconds since the matching request reached the proxy. */
  latencyUs?: number;
  /** What the proxy did besides relaying verbatim, e.g. "interposed back-end channel". */
  action?: string;
  /** Harmless oddities (relay-and-warn). */
  warnings?: string[];
  /** Made by the proxy itself (an answer in emulation), not relayed from a peer. */
  injected?: boolean;
  /** The code sent on after dialect translation, when it differs. */
  forwardedCode?: number;
}

/** A session (one front-end connection) began. */
export interface SessionStartRecord {
  /** Discriminant of the record union. */
  type: "session-start";
  /** ISO-8601 wall-clock time the front-end was accepted. */
  ts: string;
  /** Session number: every later record of this connection carries it. */
  session: number;
  /** The front-end's process credentials (SO_PEERCRED). */
  frontEnd: { pid: number; uid: number; gid: number } | null;
  /** The back-end socket path the session was connected to. */
  backend: string;
}

/** Counters kept per session. */
export interface SessionSummary {
  /** From accept to the end of the session. */
  durationMs: number;
  /** Messages relayed or made by the proxy, both directions and channels. */
  messages: number;
  /** Payload bytes of those messages (headers not counted). */
  bytes: number;
  /** Fds passed on with the messages. */
  fdsRelayed: number;
  /** Messages per request name. */
  byName: Record<string, number>;
  /** Error records the session produced. */
  errors: number;
  /** Warning records the session produced. */
  warnings: number;
}

/** A session ended, with why and what was still in flight. */
export interface SessionEndRecord {
  /** Discriminant of the record union. */
  type: "session-end";
  /** ISO-8601 wall-clock time the session ended. */
  ts: string;
  /** Number of the session that ended. */
  session: number;
  /** Human sentence, e.g. "back-end closed the main channel". */
  reason: string;
  /** Who closed first: a peer, or the proxy (stopping, or ending a session for a violation). */
  closedBy?: SenderSide | "proxy";
  /** The peer whose protocol violation made the proxy end the session. */
  violationBy?: SenderSide;
  /** Requests that were awaiting a reply when the session ended. */
  inFlight: { channel: ChannelName; name: string; waitedMs: number }[];
  /** The session's counters. */
  summary: SessionSummary;
  /**
   * What the session negotiated and set up with its back-end when it ended (the relay's session
   * model): features by name, memory regions, rings, transfers, restarts.
   */
  model?: SessionSnapshot;
}

/** A restart as `ctl status` and the session-end snapshot list it. */
export interface RestartSummary {
  /** When it ended (ISO-8601). */
  ts: string;
  /** The new back-end serves the session. */
  ok: boolean;
  /** How long the guest's rings were stopped. */
  pauseMs: number;
  /** The new back-end's socket. */
  backend: string;
  /** The back-end's state was carried over (SAVE, LOAD). */
  withState: boolean;
  /** The step that failed, when it did. */
  failedStep?: string;
}

/** One virtqueue as the session model saw it set up. */
export interface RingSnapshot {
  /** The ring's index. */
  index: number;
  /** Its size (SET_VRING_NUM). */
  num?: number;
  /** The last base set, or the one the back-end reported when it stopped the ring. */
  base?: number;
  /** SET_VRING_ENABLE 1 was the last word. */
  enabled: boolean;
  /** A kick fd was set since the ring last stopped: the back-end is processing it. */
  started: boolean;
}

/** What a session negotiated and set up with its back-end (`ctl status`, session end). */
export interface SessionSnapshot {
  /** Virtio features the back-end offered (hex). */
  virtioOffered: string;
  /** Virtio features the front-end set (hex). */
  virtioAcked: string;
  /** The acked virtio features by name. */
  virtioFeatures: string[];
  /** Protocol features the back-end offered (hex, its dialect). */
  protocolOffered: string;
  /** Protocol features set (hex, the back-end's dialect). */
  protocolAcked: string;
  /** The acked protocol features by name. */
  protocolFeatures: string[];
  /** SET_OWNER was sent. */
  owner: boolean;
  /** Guest memory regions the back-end was given. */
  memoryRegions: number;
  /** The virtqueues, by index. */
  rings: RingSnapshot[];
  /** A back-end channel was set up (SET_BACKEND_REQ_FD). */
  backendChannel: boolean;
  /** SET_DEVICE_STATE_FD requests seen. */
  transfers: number;
  /** Back-end restarts of this session. */
  restarts: RestartSummary[];
  /** Why a restart would be refused now, if it would. */
  notRestartable?: string;
}

/** Problems: protocol violations, stuck replies, I/O failures. */
export interface ProblemRecord {
  /** `error` when the message was refused or the session is at risk; `warning` when it was relayed anyway. */
  type: "error" | "warning";
  /** ISO-8601 wall-clock time. */
  ts: string;
  /** The session, absent for problems of the proxy itself (listening, the log). */
  session?: number;
  /** The channel the offending message travelled on, when there is one. */
  channel?: ChannelName;
  /** The peer that sent the offending message, when there is one. */
  side?: SenderSide;
  /** Request name the problem concerns, when known. */
  request?: string;
  /** The payload field at fault, when one is (e.g. `index`). */
  field?: string;
  /** The sentence, e.g. `Cannot decode SET_VRING_ADDR from front-end: payload is 12 bytes, expected 40`. */
  message: string;
}

/** Which way device state flows: SAVE = back-end → front-end (source), LOAD = the reverse. */
export type StateDirection = "SAVE" | "LOAD";

/** A device-state transfer began (SET_DEVICE_STATE_FD accepted). */
export interface TransferStartRecord {
  /** Discriminant of the record union, with {@link TransferStartRecord.event}. */
  type: "device-state";
  /** Which device-state record this is. */
  event: "transfer-start";
  /** ISO-8601 wall-clock time the transfer began. */
  ts: string;
  /** The session whose back-end's state moves. */
  session: number;
  /** SAVE on the migration source, LOAD on the destination. */
  direction: StateDirection;
  /** Migration phase of SET_DEVICE_STATE_FD (0 = STOPPED, the only one defined). */
  phase: number;
  /** Where the back-end's bytes flow: the proxy's own pipe, the back-end's reply fd, or the
   * proxy itself (emulation). */
  via: "proxy-pipe" | "back-end-fd" | "emulated";
  /** How the bytes are moved: splice, copy or buffer (emulated: memory). */
  mode: string;
}

/** A device-state transfer ended. */
export interface TransferEndRecord {
  /** Discriminant of the record union, with {@link TransferEndRecord.event}. */
  type: "device-state";
  /** Which device-state record this is. */
  event: "transfer-end";
  /** ISO-8601 wall-clock time the transfer ended. */
  ts: string;
  /** The session whose back-end's state moved. */
  session: number;
  /** SAVE on the migration source, LOAD on the destination. */
  direction: StateDirection;
  /** The whole stream was delivered (EOF from the writer, everything written to the reader). */
  ok: boolean;
  /** Bytes delivered to the reader. */
  bytes: number;
  /** Bytes taken from the writer. */
  bytesIn: number;
  /** From transfer-start to the end of the stream. */
  durationMs: number;
  /** `bytes` over `durationMs`, in MiB/s. */
  throughputMiBps: number;
  /**
   * The fingerprint of the delivered bytes and its algorithm (`--state-hash`, default
   * xxh3-128); absent with `--state-hash off`. Logs written before it have only `sha256`.
   */
  fingerprint?: { algorithm: "xxh3-128" | "blake3" | "sha256"; value: string };
  /** Hex SHA-256 of the delivered bytes, when the fingerprint is SHA-256 (as before). */
  sha256?: string;
  /** How long after the end of the stream the trailing hash finished (absent when inline). */
  hashTrailMs?: number;
  /** Why `fingerprint` is missing although hashing was on. */
  hashError?: string;
  /** Why the transfer failed, when `ok` is false. */
  error?: string;
  /** File the blob was saved to (`--state-dump`). */
  dump?: string;
  /** Decoded summary of the blob when its format is known (virtiofsd, proxy emulation). */
  state?: Record<string, unknown>;
  /** Why `state` is missing: decoding the blob failed inside the proxy. */
  stateError?: string;
  /** Faults applied to this transfer. */
  faults?: string[];
}

/** CHECK_DEVICE_STATE: what the back-end said and what the proxy told the front-end. */
export interface CheckRecord {
  /** Discriminant of the record union, with {@link CheckRecord.event}. */
  type: "device-state";
  /** Which device-state record this is. */
  event: "check";
  /** ISO-8601 wall-clock time the result was sent to the front-end. */
  ts: string;
  /** The session the check belongs to. */
  session: number;
  /** The transfer the check concludes, when one was opened. */
  direction?: StateDirection;
  /** The back-end's u64 result (absent when the proxy answered alone). */
  backendResult?: number;
  /** The result sent to the front-end (0 = success). */
  result: number;
  /** Why the proxy changed or produced the result. */
  reason?: string;
}

/** Other device-state events: feature offered/hidden, request refused by a fault, held CHECK. */
export interface DeviceStateNoteRecord {
  /** Discriminant of the record union, with {@link DeviceStateNoteRecord.event}. */
  type: "device-state";
  /** Which device-state record this is. */
  event: "note";
  /** ISO-8601 wall-clock time. */
  ts: string;
  /** The session the note is about. */
  session: number;
  /** The note, one sentence. */
  message: string;
}

/** A device-state event. */
export type DeviceStateRecord =
  | TransferStartRecord
  | TransferEndRecord
  | CheckRecord
  | DeviceStateNoteRecord;

/** Proxy lifecycle: listening, stopped. */
export interface ProxyRecord {
  /** Discriminant of the record union. */
  type: "proxy";
  /** ISO-8601 wall-clock time. */
  ts: string;
  /** `log-reopened`: SIGHUP; the records after it are in the file now at the log's path. */
  event: "listening" | "stopping" | "stopped" | "log-reopened";
  /** The socket path the proxy listens on (`listening`). */
  listen?: string;
  /** The back-end socket path sessions connect to (`listening`). */
  backend?: string;
  /** The proxy's process id (`listening`). */
  pid?: number;
}

/** One step of a back-end restart (`ctl restart-backend`), with how long it took. */
export interface RestartStepRecord {
  /** Discriminant of the record union, with {@link RestartStepRecord.event}. */
  type: "restart";
  /** Which restart record this is. */
  event: "step";
  /** ISO-8601 wall-clock time the step ended. */
  ts: string;
  /** The session whose back-end is being replaced. */
  session: number;
  /** connect, negotiate, memory table, stop old rings, save, load, start new rings, status, swap. */
  step: string;
  /** How long the step took. */
  ms: number;
  /** The step succeeded; a failed step starts the rollback. */
  ok: boolean;
  /** What the step did or why it failed, one line. */
  detail?: string;
}

/** A back-end restart ended: the pause the guest saw, or the step that failed and the rollback. */
export interface RestartRecord {
  /** Discriminant of the record union, with {@link RestartRecord.event}. */
  type: "restart";
  /** Which restart record this is. */
  event: "done";
  /** ISO-8601 wall-clock time the restart ended. */
  ts: string;
  /** The session whose back-end was replaced. */
  session: number;
  /** The new back-end serves the session; false: the old one still does, or none. */
  ok: boolean;
  /** The new back-end's socket path. */
  backend: string;
  /** The back-end's state was carried over (SAVE from the old, LOAD into the new). */
  withState: boolean;
  /** From stopping the old back-end's rings to the new one's started. */
  pauseMs: number;
  /** From the control request to the end of the restart. */
  totalMs: number;
  /** Size of the state carried over, when `withState`. */
  stateBytes?: number;
  /** The step that failed, when `ok` is false. */
  failedStep?: string;
  /** Why it failed, one sentence. */
  error?: string;
  /** What became of the old back-end after a failed step, e.g. `the old back-end serves on`. */
  rolledBack?: string;
}

/**
 * The back-end went away while QEMU was connected (`--restart-on-exit`): QEMU is held for
 * `holdMs` while a new back-end is started; its state is lost.
 */
export interface BackendLostRecord {
  /** Discriminant of the record union, with {@link BackendLostRecord.event}. */
  type: "restart";
  /** Which restart record this is. */
  event: "backend-lost";
  /** ISO-8601 wall-clock time the back-end was found gone. */
  ts: string;
  /** The session whose back-end went away. */
  session: number;
  /** How the back-end was lost, e.g. `back-end closed the main channel`. */
  reason: string;
  /** How long QEMU is held for a new back-end before the session ends. */
  holdMs: number;
}

/** Anything the proxy logs. */
export type LogRecord =
  | MessageRecord
  | SessionStartRecord
  | SessionEndRecord
  | ProblemRecord
  | DeviceStateRecord
  | ProxyRecord
  | RestartStepRecord
  | RestartRecord
  | BackendLostRecord
  | LintRecord;

/** Current time as the records carry it. */
export function timestamp(): string {
  return new Date().toISOString();
}
