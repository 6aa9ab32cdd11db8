/**
 * The post-mortem of a migration from the proxies' logs (`log explain`): the device-state
 * steps of the source and the destination as one timeline, the fingerprints compared across
 * the two logs, and a verdict naming the step that failed, the side it failed on, the culprit
 * and why. Pure: records in, a value out; the CLI reads the files and renders it.
 *
 * The verdict follows the order a migration runs in (spec "Migrating back-end state"): the
 * source back-end must offer F_DEVICE_STATE, accept SET_DEVICE_STATE_FD(SAVE), stream its
 * state and pass CHECK_DEVICE_STATE; the destination the same with LOAD. The first step that
 * did not happen or did not succeed is the failure; later ones are consequences.
 *
 * @module
 */

import type {
  CheckRecord,
  LogRecord,
  MessageRecord,
  ProblemRecord,
  SessionEndRecord,
  StateDirection,
  TransferEndRecord,
  TransferStartRecord,
} from "./record.ts";

/** Which end of a migration a proxy's log is from. */
export type MigrationRole = "source" | "destination";

/** Who broke the step: a peer, or the proxy itself (a `--fault`, or its own failure). */
export type Culprit = "front-end" | "back-end" | "proxy";

/** One line of the merged timeline. */
export interface ExplainEvent {
  /** ISO-8601 time of the record the step comes from. */
  ts: string;
  /** The proxy log the step is from. */
  side: MigrationRole;
  /** Short name of the step: a request name, `transfer-start`, `session-end`… */
  step: string;
  /** What happened, one line (result, bytes, reason). */
  detail: string;
  /** False for a step that failed; absent for steps that carry no outcome. */
  ok?: boolean;
}

/** The fingerprints of the state as each side's proxy saw it. */
export interface ExplainFingerprints {
  /**
   * Algorithm the compared digests use (`xxh3-128`, `sha256`, `blake3`); the source's when the
   * two sides used different ones (then `destinationAlgorithm` names the other, and there is no
   * `equal`).
   */
  algorithm?: string;
  /** The destination's algorithm, when it differs from the source's. */
  destinationAlgorithm?: string;
  /** Digest of the bytes the source proxy delivered to QEMU. */
  source?: string;
  /** Digest of the bytes the destination proxy delivered to its back-end. */
  destination?: string;
  /** Whether both are known and equal. Absent when one is missing. */
  equal?: boolean;
}

/** What `log explain` concludes. The first five fields are a contract (`--json`). */
export interface Explanation {
  /** The migration of the back-end state failed. */
  failed: boolean;
  /** The request or phase that failed (`CHECK_DEVICE_STATE`, `SAVE`, …); null when none did. */
  step: string | null;
  /** Where the failing step ran. */
  side: MigrationRole | null;
  /** Who caused it. */
  culprit: Culprit | null;
  /** The verdict as a sentence, with the values it rests on. */
  reason: string;
  /** Where the culprit sits when that differs from `side` (a source proxy's corrupt SAVE that
   * the destination rejects). */
  culpritSide?: MigrationRole;
  /** No device-state migration was found in the logs at all. */
  found: boolean;
  /** The state's fingerprints as the source and the destination proxy saw it. */
  fingerprints: ExplainFingerprints;
  /** Sessions the verdict was read from, per side. */
  sessions: Partial<Record<MigrationRole, number>>;
  /** Attempts before the last in those sessions (the verdict is about the last), per side. */
  earlierAttempts: Partial<Record<MigrationRole, number>>;
  /** Both sides' device-state steps, merged in time order. */
  timeline: ExplainEvent[];
}

/** What one side's log says about its part of the migration. */
interface SideFacts {
  role: MigrationRole;
  session: number;
  /** Names of the protocol features the back-end offered (GET_PROTOCOL_FEATURES reply). */
  protocolOffered?: string[];
  /** Virtio feature names the back-end offered (GET_FEATURES reply) and the front-end set. */
  featuresOffered?: string[];
  featuresAcked?: string[];
  /** The proxy offered F_DEVICE_STATE itself (`--device-state emulate`). */
  emulated: boolean;
  setFd?: MessageRecord;
  setFdReply?: MessageRecord;
  refusedByFault: boolean;
  start?: TransferStartRecord;
  end?: TransferEndRecord;
  checkRequest?: MessageRecord;
  check?: CheckRecord;
  stuck: ProblemRecord[];
  errors: ProblemRecord[];
  sessionEnd?: SessionEndRecord;
  /** Attempts in this session before the one the verdict is about. */
  earlierAttempts: number;
  timeline: ExplainEvent[];
}

const SET_FD = new Set(["SET_DEVICE_STATE_FD"]);
const CHECK = new Set(["CHECK_DEVICE_STATE"]);
/** The protocol feature under both dialects' names. */
const DEVICE_STATE_NAMES = new Set(["DEVICE_STATE", "MIGRATORY_STATE"]);

function isStateRecord(r: LogRecord): boolean {
  return r.type === "device-state" ||
    (r.type === "message" && (SET_FD.has(r.name) || CHECK.has(r.name)));
}

function sessionOf(r: LogRecord): number | undefined {
  return "session" in r && typeof r.session === "number" ? r.session : undefined;
}

/**
 * The session a side's verdict is read from: the last one that tried a device-state transfer,
 * else the last one (where a back-end without F_DEVICE_STATE was met).
 */
function pickSession(records: readonly LogRecord[]): number | undefined {
  let last: number | undefined;
  let lastState: number | undefined;
  for (const r of records) {
    const s = sessionOf(r);
    if (s === undefined) continue;
    last = s;
    if (isStateRecord(r)) lastState = s;
  }
  return lastState ?? last;
}

/** The names list of a decoded feature mask, wherever the layout put it in the payload. */
function featureNames(payload: Record<string, unknown> | undefined): string[] | undefined {
  if (!payload) return undefined;
  for (const v of Object.values(payload)) {
    if (v && typeof v === "object" && Array.isArray((v as { names?: unknown }).names)) {
      return (v as { names: unknown[] }).names.map(String);
    }
  }
  return undefined;
}

function directionOf(m: MessageRecord): StateDirection | undefined {
  const p = m.payload ?? {};
  const name = p.directionName ?? p.direction;
  if (name === "SAVE" || name === 0) return "SAVE";
  if (name === "LOAD" || name === 1) return "LOAD";
  return undefined;
}

/** The error code of a SET_DEVICE_STATE_FD reply (bits 0–7 of its u64). */
function setFdError(m: MessageRecord): number {
  const e = m.payload?.error;
  return typeof e === "number" ? e : Number(e ?? 0) || 0;
}

function gather(records: readonly LogRecord[], role: MigrationRole, session: number): SideFacts {
  const f: SideFacts = {
    role,
    session,
    emulated: false,
    refusedByFault: false,
    stuck: [],
    errors: [],
    earlierAttempts: 0,
    timeline: [],
  };
  const event = (ts: string, step: string, detail: string, ok?: boolean) =>
    f.timeline.push({ ts, side: role, step, detail, ...(ok === undefined ? {} : { ok }) });
  for (const r of records) {
    if (sessionOf(r) !== session) continue;
    switch (r.type) {
      case "session-start":
        event(r.ts, "session-start", `front-end connected (back-end ${r.backend})`);
        break;
      case "message":
        if (r.channel !== "main") break;
        if (r.name === "GET_PROTOCOL_FEATURES" && r.kind === "reply" && !r.injected) {
          f.protocolOffered = featureNames(r.payload);
          const has = f.protocolOffered?.some((n) => DEVICE_STATE_NAMES.has(n));
          event(
            r.ts,
            r.name,
            `the back-end ${has ? "offers" : "does not offer"} F_DEVICE_STATE`,
            has ? undefined : false,
          );
        } else if (r.name === "GET_FEATURES" && r.kind === "reply") {
          f.featuresOffered = featureNames(r.payload);
        } else if (r.name === "SET_FEATURES" && r.kind === "request") {
          f.featuresAcked = featureNames(r.payload);
        } else if (SET_FD.has(r.name) && r.kind === "request") {
          // A session can migrate more than once (a failed attempt, then a retry): the verdict
          // is about the last attempt, with the session's set-up as its context.
          // The same direction again is a retry; the other one is a new role (a destination
          // that migrates onwards becomes a source), which is not an earlier attempt of it.
          if (f.setFd) startAttempt(f, directionOf(f.setFd) === directionOf(r));
          f.setFd = r;
          event(r.ts, r.name, `${directionOf(r) ?? "?"} requested by the front-end (${r.summary})`);
        } else if (SET_FD.has(r.name) && r.kind === "reply") {
          f.setFdReply = r;
          const error = setFdError(r);
          event(
            r.ts,
            r.name,
            `${error === 0 ? "accepted" : `refused with error ${error}`} by the ${
              r.injected ? "proxy" : "back-end"
            }`,
            error === 0,
          );
        } else if (CHECK.has(r.name) && r.kind === "request" && !f.checkRequest) {
          // A CHECK held for the copy is logged again when released: one step, not two.
          f.checkRequest = r;
          event(r.ts, r.name, "asked by the front-end");
        }
        break;
      case "device-state":
        if (r.event === "transfer-start") {
          f.start = r;
          if (r.via === "emulated") f.emulated = true;
          event(r.ts, r.direction, `transfer started (${r.via}, ${r.mode})`);
        } else if (r.event === "transfer-end") {
          f.end = r;
          const size = r.bytes === r.bytesIn
            ? `${r.bytes} bytes`
            : `${r.bytes} of ${r.bytesIn} bytes delivered`;
          const faults = r.faults?.length ? `, faults ${r.faults.join(", ")}` : "";
          const fp = recordFingerprint(r);
          const digest = fp ? `, ${fp.algorithm} ${fp.value.slice(0, 16)}…` : "";
          event(
            r.ts,
            r.direction,
            `transfer ${
              r.ok ? "ended" : "failed"
            }: ${size} in ${r.durationMs} ms${digest}${faults}${r.error ? ` (${r.error})` : ""}`,
            r.ok,
          );
        } else if (r.event === "check") {
          f.check = r;
          const backend = r.backendResult === undefined
            ? "answered by the proxy"
            : `back-end said ${r.backendResult}`;
          event(
            r.ts,
            "CHECK_DEVICE_STATE",
            `result ${r.result} to the front-end (${backend}${r.reason ? `; ${r.reason}` : ""})`,
            r.result === 0,
          );
        } else if (r.event === "note") {
          if (r.message.includes("fault state-refuse")) f.refusedByFault = true;
          if (r.message.startsWith("offering F_DEVICE_STATE")) f.emulated = true;
          event(r.ts, "note", r.message);
        }
        break;
      case "warning":
      case "error":
        if (r.type === "warning" && r.request && r.message.includes("has waited")) {
          f.stuck.push(r);
          event(r.ts, r.request, r.message, false);
        } else if (r.type === "error") {
          f.errors.push(r);
          event(r.ts, r.request ?? "error", r.message, false);
        }
        break;
      case "session-end": {
        f.sessionEnd = r;
        const owed = r.inFlight.length
          ? `; awaiting ${r.inFlight.map((p) => p.name).join(", ")}`
          : "";
        event(r.ts, "session-end", `${r.reason}${owed}`);
        break;
      }
    }
  }
  return f;
}

/** Forgets the previous attempt's steps, keeping the session's set-up; `retry` counts it. */
function startAttempt(f: SideFacts, retry: boolean): void {
  f.setFdReply =
    f.start =
    f.end =
    f.checkRequest =
    f.check =
      undefined;
  f.refusedByFault = false;
  f.stuck = [];
  f.errors = [];
  f.timeline = f.timeline.filter((e) => CONTEXT_STEPS.has(e.step));
  f.earlierAttempts = retry ? f.earlierAttempts + 1 : 0;
}

const CONTEXT_STEPS = new Set(["session-start", "GET_PROTOCOL_FEATURES"]);

/** The role a log plays, read from the direction of its transfer. */
function roleOf(f: SideFacts): MigrationRole | undefined {
  const d = f.start?.direction ?? f.end?.direction ?? (f.setFd && directionOf(f.setFd));
  return d === "SAVE" ? "source" : d === "LOAD" ? "destination" : undefined;
}

type Verdict = Pick<Explanation, "step" | "side" | "culprit" | "reason"> & {
  culpritSide?: MigrationRole;
};

const PEER_READING: Record<StateDirection, Culprit> = { SAVE: "front-end", LOAD: "back-end" };

/** The failure of one side's own steps, or undefined when they all succeeded. */
function sideFailure(f: SideFacts, other?: SideFacts): Verdict | undefined {
  const side = f.role;
  const dir: StateDirection = side === "source" ? "SAVE" : "LOAD";
  const fail = (step: string, culprit: Culprit, reason: string): Verdict => ({
    step,
    side,
    culprit,
    reason,
  });
  const stuckOn = (names: Set<string>) => f.stuck.find((w) => w.request && names.has(w.request));

  if (!f.setFd) {
    const offered = f.protocolOffered;
    if (offered && !f.emulated && !offered.some((n) => DEVICE_STATE_NAMES.has(n))) {
      return fail(
        "GET_PROTOCOL_FEATURES",
        "back-end",
        `the ${side} back-end does not offer F_DEVICE_STATE (it offers ${
          offered.join(", ") || "no protocol features"
        }), so QEMU cannot migrate its state (QEMU: "does not support migration through qemu")`,
      );
    }
    if (side === "destination" && other) {
      const missing = (other.featuresAcked ?? []).filter((n) =>
        f.featuresOffered !== undefined && !f.featuresOffered.includes(n)
      );
      if (missing.length > 0) {
        return fail(
          "GET_FEATURES",
          "back-end",
          `the destination back-end lacks ${
            missing.join(", ")
          }, which the source negotiated: QEMU cannot load the device on it`,
        );
      }
    }
    const stuck = f.stuck[0];
    if (stuck) {
      return fail(stuck.request!, stuck.side ?? "back-end", `${stuck.message} (${side})`);
    }
    return undefined;
  }

  const reply = f.setFdReply;
  if (f.refusedByFault || (reply && setFdError(reply) !== 0)) {
    return f.refusedByFault || reply?.injected
      ? fail(
        "SET_DEVICE_STATE_FD",
        "proxy",
        `the ${side} proxy refused SET_DEVICE_STATE_FD(${dir}) with error ${
          reply ? setFdError(reply) : 1
        } (fault state-refuse)`,
      )
      : fail(
        "SET_DEVICE_STATE_FD",
        "back-end",
        `the ${side} back-end refused SET_DEVICE_STATE_FD(${dir}) with error ${setFdError(reply!)}`,
      );
  }
  if (!reply && !f.start) {
    const stuck = stuckOn(SET_FD);
    return fail(
      "SET_DEVICE_STATE_FD",
      "back-end",
      stuck
        ? `${stuck.message} (${side})`
        : `the ${side} back-end never answered SET_DEVICE_STATE_FD(${dir})${
          f.sessionEnd ? ` before the session ended: ${f.sessionEnd.reason}` : ""
        }`,
    );
  }

  const end = f.end;
  if (!end && f.sessionEnd) {
    return fail(
      dir,
      f.sessionEnd.violationBy ?? f.sessionEnd.closedBy ?? "proxy",
      `the ${side} session ended during the ${dir} transfer: ${f.sessionEnd.reason}`,
    );
  }
  if (end) {
    const faults = end.faults ?? [];
    const truncated = faults.find((x) => x.startsWith("state-truncate"));
    if (!end.ok || (truncated && end.bytes < end.bytesIn)) {
      if (truncated || /fault/.test(end.error ?? "")) {
        return fail(
          dir,
          "proxy",
          `the ${side} proxy cut the ${dir} stream: ${end.bytes} of ${end.bytesIn} bytes delivered (fault ${
            truncated ?? faults.join(", ")
          })`,
        );
      }
      const readerClosed = /reader closed/.test(end.error ?? "");
      const culprit: Culprit = readerClosed
        ? PEER_READING[dir]
        : f.sessionEnd?.violationBy ?? f.sessionEnd?.closedBy ?? "proxy";
      return fail(
        dir,
        culprit,
        `the ${dir} transfer on the ${side} failed after ${end.bytes} bytes: ${
          end.error ?? "no reason logged"
        }`,
      );
    }
  }

  const check = f.check;
  if (!check) {
    const stuck = stuckOn(CHECK);
    if (stuck) return fail("CHECK_DEVICE_STATE", "back-end", `${stuck.message} (${side})`);
    if (f.checkRequest && f.sessionEnd) {
      return fail(
        "CHECK_DEVICE_STATE",
        "back-end",
        `CHECK_DEVICE_STATE was never answered on the ${side}: ${f.sessionEnd.reason}`,
      );
    }
    if (f.sessionEnd && !f.checkRequest) {
      return fail(
        "CHECK_DEVICE_STATE",
        f.sessionEnd.violationBy ?? f.sessionEnd.closedBy ?? "front-end",
        `the ${side} session ended before CHECK_DEVICE_STATE: ${f.sessionEnd.reason}`,
      );
    }
    return undefined;
  }
  if (check.result !== 0) {
    if (check.backendResult !== undefined && check.backendResult !== 0) {
      return fail(
        "CHECK_DEVICE_STATE",
        "back-end",
        `the ${side} back-end ${
          dir === "LOAD" ? "rejected the state it loaded" : "reported that saving its state failed"
        } (CHECK_DEVICE_STATE = ${check.backendResult})`,
      );
    }
    return fail(
      "CHECK_DEVICE_STATE",
      "proxy",
      `the ${side} proxy reported failure to QEMU (CHECK_DEVICE_STATE = ${check.result}${
        check.backendResult !== undefined ? `, the back-end said ${check.backendResult}` : ""
      }): ${check.reason ?? "no reason logged"}`,
    );
  }
  return undefined;
}

/**
 * The fingerprint of a transfer-end record: its `fingerprint` field or, in a log written before
 * that field existed, its `sha256`; undefined when the transfer was not hashed.
 */
export function recordFingerprint(
  r: Pick<TransferEndRecord, "fingerprint" | "sha256">,
): { algorithm: string; value: string } | undefined {
  if (r.fingerprint) return r.fingerprint;
  return r.sha256 ? { algorithm: "sha256", value: r.sha256 } : undefined;
}

function fingerprints(src?: SideFacts, dst?: SideFacts): ExplainFingerprints {
  let a = src?.end && recordFingerprint(src.end);
  let b = dst?.end && recordFingerprint(dst.end);
  // One side of an older proxy (SHA-256 only) and one that logged SHA-256 beside another
  // fingerprint compare on SHA-256.
  if (a && b && a.algorithm !== b.algorithm && src!.end!.sha256 && dst!.end!.sha256) {
    a = { algorithm: "sha256", value: src!.end!.sha256 };
    b = { algorithm: "sha256", value: dst!.end!.sha256 };
  }
  const out: ExplainFingerprints = {};
  if (a || b) out.algorithm = (a ?? b)!.algorithm;
  if (a) out.source = a.value;
  if (b) out.destination = b.value;
  if (a && b && a.algorithm !== b.algorithm) out.destinationAlgorithm = b.algorithm;
  else if (a && b) out.equal = a.value === b.value;
  return out;
}

/** Adds to a destination back-end's rejection what the two logs say about the bytes it got. */
function refineRejection(v: Verdict, src: SideFacts | undefined, dst: SideFacts): Verdict {
  if (v.side !== "destination" || v.culprit !== "back-end" || v.step !== "CHECK_DEVICE_STATE") {
    return v;
  }
  const fp = fingerprints(src, dst);
  const corruptAt = dst.end?.faults?.includes("state-corrupt")
    ? "destination"
    : src?.end?.faults?.includes("state-corrupt")
    ? "source"
    : undefined;
  let reason = v.reason;
  if (fp.equal === false) {
    reason += `; the bytes it received differ from those the source saved (${fp.algorithm} ${
      fp.source!.slice(0, 16)
    }… saved, ${fp.destination!.slice(0, 16)}… loaded)`;
  } else if (fp.equal === true) {
    reason += `; it received exactly the bytes the source saved (${fp.algorithm} ${
      fp.source!.slice(0, 16)
    }… on both sides)`;
  }
  if (corruptAt) {
    return {
      ...v,
      culprit: "proxy",
      culpritSide: corruptAt,
      reason: `${reason}; the ${corruptAt} proxy altered them (fault state-corrupt)`,
    };
  }
  if (fp.equal === false) {
    return { ...v, culprit: "front-end", reason: `${reason}; they changed between the proxies` };
  }
  return { ...v, reason };
}

/**
 * Explains the migration the logs record. Either log may be omitted; a single log is placed as
 * source or destination by the direction of its transfer, and two logs given the wrong way
 * round are swapped.
 *
 * @example Explaining a destination whose back-end rejected the state
 * ```ts
 * import { explainMigration } from "./explain.ts";
 * const e = explainMigration([], []);
 * console.log(e.found); // false: the logs hold no migration
 * ```
 */
export function explainMigration(
  source: readonly LogRecord[],
  destination?: readonly LogRecord[],
): Explanation {
  const facts = (records: readonly LogRecord[] | undefined, role: MigrationRole) => {
    if (!records) return undefined;
    const session = pickSession(records);
    return session === undefined ? undefined : gather(records, role, session);
  };
  let src = facts(source, "source");
  let dst = facts(destination, "destination");
  // Place the logs by what they did, not by argument order.
  if (src && roleOf(src) === "destination" && (!dst || roleOf(dst) !== "destination")) {
    [src, dst] = [dst, src];
  }
  if (src) src.role = "source";
  if (dst) dst.role = "destination";
  for (const f of [src, dst]) if (f) { for (const e of f.timeline) e.side = f.role; }

  const timeline = [...(src?.timeline ?? []), ...(dst?.timeline ?? [])].sort((a, b) =>
    a.ts < b.ts ? -1 : a.ts > b.ts ? 1 : 0
  );
  const sessions: Explanation["sessions"] = {};
  const earlierAttempts: Explanation["earlierAttempts"] = {};
  for (const f of [src, dst]) {
    if (!f) continue;
    sessions[f.role] = f.session;
    if (f.earlierAttempts > 0) earlierAttempts[f.role] = f.earlierAttempts;
  }
  const fp = fingerprints(src, dst);
  const found = Boolean(
    src?.setFd || dst?.setFd || src?.protocolOffered || dst?.protocolOffered,
  );

  let verdict = src ? sideFailure(src) : undefined;
  if (!verdict && dst) verdict = sideFailure(dst, src);
  if (verdict && dst) verdict = refineRejection(verdict, src, dst);
  if (!verdict && src?.end?.faults?.includes("state-corrupt")) {
    verdict = {
      step: "SAVE",
      side: "source",
      culprit: "proxy",
      reason: "the source proxy altered the saved state (fault state-corrupt)" +
        (dst ? "" : "; the destination's log would show what the back-end made of it"),
    };
  }
  if (!verdict && src?.setFd && dst && !dst.setFd) {
    verdict = {
      step: "SET_DEVICE_STATE_FD",
      side: "destination",
      culprit: "front-end",
      reason: "the source saved its state, but the destination front-end never sent " +
        "SET_DEVICE_STATE_FD(LOAD) to its back-end",
    };
  }
  if (verdict) {
    return {
      failed: true,
      ...verdict,
      found: true,
      fingerprints: fp,
      sessions,
      earlierAttempts,
      timeline,
    };
  }
  if (!src?.setFd && !dst?.setFd) {
    return {
      failed: false,
      step: null,
      side: null,
      culprit: null,
      reason: "no device-state migration was found in the log" + (destination ? "s" : ""),
      found,
      fingerprints: fp,
      sessions,
      earlierAttempts,
      timeline,
    };
  }
  const parts = [src?.end && "the source saved", dst?.end && "the destination loaded"].filter(
    Boolean,
  );
  let reason = `the migration of the back-end state succeeded: ${parts.join(" and ")} the state`;
  if (fp.equal === true) reason += " with equal fingerprints";
  if (!dst && src) reason += " (no destination log given)";
  return {
    failed: false,
    step: null,
    side: null,
    culprit: null,
    reason,
    found: true,
    fingerprints: fp,
    sessions,
    earlierAttempts,
    timeline,
  };
}

/** Renders an explanation for a person: the timeline, the fingerprints, then the verdict. */
export function formatExplanation(e: Explanation): string {
  const lines: string[] = [];
  const where = Object.entries(e.sessions).map(([side, n]) => {
    const earlier = e.earlierAttempts[side as MigrationRole];
    return `${side} session ${n}${earlier ? `, its last of ${earlier + 1} attempts` : ""}`;
  }).join(", ");
  lines.push(`Migration timeline${where ? ` (${where})` : ""}, times in UTC:`);
  for (const t of e.timeline) {
    const time = t.ts.length >= 23 ? t.ts.slice(11, 23) : t.ts;
    const mark = t.ok === false ? "✗" : " ";
    lines.push(`  ${time}  ${mark} ${t.side.padEnd(11)} ${t.step.padEnd(22)} ${t.detail}`);
  }
  const fp = e.fingerprints;
  if (fp.source || fp.destination) {
    const cmp = fp.equal === undefined ? "" : fp.equal ? "  (equal)" : "  (DIFFER)";
    const algorithm = fp.destinationAlgorithm
      ? `source ${fp.algorithm}, destination ${fp.destinationAlgorithm}: not comparable`
      : fp.algorithm;
    lines.push(
      `Fingerprints (${algorithm}): source ${fp.source ?? "–"}, destination ${
        fp.destination ?? "–"
      }${cmp}`,
    );
  }
  if (e.failed) {
    lines.push(
      `Verdict: FAILED at ${e.step} on the ${e.side}; culprit: the ${
        e.culpritSide && e.culpritSide !== e.side ? `${e.culpritSide} ` : ""
      }${e.culprit}`,
    );
  } else {
    lines.push(`Verdict: ${e.found ? "OK" : "nothing to explain"}`);
  }
  lines.push(`  ${e.reason}`);
  return lines.join("\n");
}
