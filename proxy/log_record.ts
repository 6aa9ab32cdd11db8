/**
 * The proxy's structured log records: what the JSON Lines log holds, one object per line, and
 * what the human formatter renders. Records are plain JSON-safe data (no bigint), made in the
 * relay Worker and written by the main thread.
 *
 * @module
 */

import type { LintRecord } from "./lint_record.ts";
export type { LintRecord } from "./lint_record.ts";

/** Which socket a message travelled on. */
export type ChannelName = "main" | "backend";

/** Who sent a message. */
export type SenderSide = "front-end" | "back-end";

/** Kind of an fd riding on a message, from /proc. */
export interface FdInfo {
  kind: string;
}

/** One relayed (or proxy-made) vhost-user message. */
export interface MessageRecord {
  type: "message";
  /** ISO-8601 wall-clock time. */
  ts: string;
  session: number;
  channel: ChannelName;
  /** Sender of the message as it arrived at the proxy. */
  from: SenderSide;
  /** The way it travelled, e.g. "front-end → back-end". */
  direction: "front-end → back-end" | "back-end → front-end";
  kind: "request" | "reply";
  code: number;
  name: string;
  /** Header flags as hex, e.g. "0x9". */
  flags: string;
  /** Names of set flag bits, e.g. ["NEED_REPLY"]. */
  flagNames: string[];
  size: number;
  /** Payload layout name from the catalogue, e.g. "vring_addr". */
  layout: string;
  /** Decoded payload (JSON view from the codec). */
  payload: Record<string, unknown>;
  /** One-line summary of the key fields. */
  summary: string;
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
  type: "session-start";
  ts: string;
  session: number;
  /** The front-end's process credentials (SO_PEERCRED). */
  frontEnd: { pid: number; uid: number; gid: number } | null;
  backend: string;
}

/** Counters kept per session. */
export interface SessionSummary {
  durationMs: number;
  messages: number;
  bytes: number;
  fdsRelayed: number;
  byName: Record<string, number>;
  errors: number;
  warnings: number;
}

/** A session ended, with why and what was still in flight. */
export interface SessionEndRecord {
  type: "session-end";
  ts: string;
  session: number;
  /** Human sentence, e.g. "back-end closed the main channel". */
  reason: string;
  /** Who closed first: a peer, or the proxy (stopping, or ending a session for a violation). */
  closedBy?: SenderSide | "proxy";
  /** The peer whose protocol violation made the proxy end the session. */
  violationBy?: SenderSide;
  /** Requests that were awaiting a reply when the session ended. */
  inFlight: { channel: ChannelName; name: string; waitedMs: number }[];
  summary: SessionSummary;
}

/** Problems: protocol violations, stuck replies, I/O failures. */
export interface ProblemRecord {
  type: "error" | "warning";
  ts: string;
  session?: number;
  channel?: ChannelName;
  side?: SenderSide;
  /** Request name the problem concerns, when known. */
  request?: string;
  field?: string;
  message: string;
}

/** Which way device state flows: SAVE = back-end → front-end (source), LOAD = the reverse. */
export type StateDirection = "SAVE" | "LOAD";

/** A device-state transfer began (SET_DEVICE_STATE_FD accepted). */
export interface TransferStartRecord {
  type: "device-state";
  event: "transfer-start";
  ts: string;
  session: number;
  direction: StateDirection;
  phase: number;
  /** Where the back-end's bytes flow: the proxy's own pipe, the back-end's reply fd, or the
   * proxy itself (emulation). */
  via: "proxy-pipe" | "back-end-fd" | "emulated";
  /** How the bytes are moved: splice, copy or buffer (emulated: memory). */
  mode: string;
}

/** A device-state transfer ended. */
export interface TransferEndRecord {
  type: "device-state";
  event: "transfer-end";
  ts: string;
  session: number;
  direction: StateDirection;
  ok: boolean;
  /** Bytes delivered to the reader. */
  bytes: number;
  /** Bytes taken from the writer. */
  bytesIn: number;
  durationMs: number;
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
  type: "device-state";
  event: "check";
  ts: string;
  session: number;
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
  type: "device-state";
  event: "note";
  ts: string;
  session: number;
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
  type: "proxy";
  ts: string;
  /** `log-reopened`: SIGHUP; the records after it are in the file now at the log's path. */
  event: "listening" | "stopping" | "stopped" | "log-reopened";
  listen?: string;
  backend?: string;
  pid?: number;
}

/** One step of a back-end restart (`ctl restart-backend`), with how long it took. */
export interface RestartStepRecord {
  type: "restart";
  event: "step";
  ts: string;
  session: number;
  /** connect, negotiate, memory table, stop old rings, save, load, start new rings, status, swap. */
  step: string;
  ms: number;
  ok: boolean;
  detail?: string;
}

/** A back-end restart ended: the pause the guest saw, or the step that failed and the rollback. */
export interface RestartRecord {
  type: "restart";
  event: "done";
  ts: string;
  session: number;
  ok: boolean;
  backend: string;
  /** The back-end's state was carried over (SAVE from the old, LOAD into the new). */
  withState: boolean;
  /** From stopping the old back-end's rings to the new one's started. */
  pauseMs: number;
  totalMs: number;
  stateBytes?: number;
  failedStep?: string;
  error?: string;
  rolledBack?: string;
}

/**
 * The back-end went away while QEMU was connected (`--restart-on-exit`): QEMU is held for
 * `holdMs` while a new back-end is started; its state is lost.
 */
export interface BackendLostRecord {
  type: "restart";
  event: "backend-lost";
  ts: string;
  session: number;
  reason: string;
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
