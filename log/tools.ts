/**
 * Tools over JSON Lines logs: render them for people (`log show`), summarise a run
 * (`log summary`: counts, reply latencies, device-state transfers, problems) and compare two
 * runs message by message (`log diff`: where two conversations part ways).
 *
 * @module
 */

import { recordFingerprint } from "./explain.ts";
import { formatRecord } from "./format.ts";
import type { LogRecord, MessageRecord, TransferEndRecord } from "./record.ts";

/** Record types this version knows, with the fields its tools read. */
const REQUIRED: Record<string, Record<string, string>> = {
  message: {
    ts: "string",
    session: "number",
    channel: "string",
    from: "string",
    kind: "string",
    name: "string",
  },
  "session-start": { ts: "string", session: "number" },
  "session-end": { ts: "string", session: "number", reason: "string" },
  error: { ts: "string", message: "string" },
  warning: { ts: "string", message: "string" },
  "device-state": { ts: "string", session: "number", event: "string" },
  proxy: { ts: "string", event: "string" },
  restart: { ts: "string", session: "number", event: "string" },
  lint: { ts: "string", session: "number", event: "string" },
};

/** Optional fields the tools iterate over, when present. */
const LISTS = ["fds", "flagNames", "warnings", "faults", "inFlight"];

function kindOf(v: unknown): string {
  return typeof v;
}

/** Why a parsed line is not a record the tools can use, or undefined when it is. */
function recordDefect(r: unknown): string | undefined {
  if (typeof r !== "object" || r === null || Array.isArray(r)) return "not a log record";
  const o = r as Record<string, unknown>;
  if (typeof o.type !== "string") return 'not a log record: no "type"';
  const fields = REQUIRED[o.type];
  // A type this version does not know (a newer proxy's) is kept and shown as it is.
  if (fields === undefined) return typeof o.ts === "string" ? undefined : 'record without "ts"';
  const missing = Object.entries(fields).filter(([k, t]) => kindOf(o[k]) !== t).map(([k]) => k);
  if (missing.length > 0) {
    return `${o.type} record without ${missing.map((k) => `"${k}"`).join(", ")}`;
  }
  const notLists = LISTS.filter((k) => o[k] !== undefined && !Array.isArray(o[k]));
  if (notLists.length > 0) {
    return `${o.type} record whose ${notLists.map((k) => `"${k}"`).join(", ")} is not a list`;
  }
  return undefined;
}

/** One JSONL line as a record, or why it is not one. */
function parseLine(line: string): { record: LogRecord } | { problem: string } {
  let r: unknown;
  try {
    r = JSON.parse(line);
  } catch (e) {
    return { problem: `not JSON: ${e instanceof Error ? e.message : e}` };
  }
  const defect = recordDefect(r);
  return defect === undefined ? { record: r as LogRecord } : { problem: defect };
}

/** Records from JSONL text; lines that are not records are reported with their number. */
export function parseLog(text: string): { records: LogRecord[]; problems: string[] } {
  const records: LogRecord[] = [];
  const problems: string[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    const parsed = parseLine(line);
    if ("record" in parsed) records.push(parsed.record);
    else problems.push(`line ${i + 1}: ${parsed.problem}`);
  });
  return { records, problems };
}

/** Options of {@linkcode followLog}. */
export interface FollowOptions {
  /** Start at the end of the file: only records written from now on. */
  fromEnd?: boolean;
  /** How often to look for new lines; default 200 ms. */
  intervalMs?: number;
  /** Ends the generator. */
  signal?: AbortSignal;
  /** A line that is not a record, or the file was truncated or replaced. */
  onProblem?: (problem: string) => void;
}

/**
 * The records of a log as they are written (`log follow`): the complete lines already there
 * (unless `fromEnd`), then each new complete line, until `signal` aborts. A file that is
 * truncated or replaced (log rotation) is read again from its start. Throws, with the path and
 * the cause, only when the file cannot be opened at the start.
 *
 * @example
 * ```ts
 * const path = Deno.makeTempFileSync({ suffix: ".jsonl" }); // a --log file
 * Deno.writeTextFileSync(path, '{"type":"proxy","ts":"2026-01-01T00:00:00.000Z","event":"listening"}\n');
 * const stop = new AbortController();
 * for await (const r of followLog(path, { signal: stop.signal })) {
 *   console.log(r.type); // "proxy"
 *   stop.abort(); // `log follow` runs until it is stopped
 * }
 * Deno.removeSync(path);
 * ```
 */
export async function* followLog(
  path: string,
  options: FollowOptions = {},
): AsyncGenerator<LogRecord> {
  const interval = options.intervalMs ?? 200;
  const open = () => {
    try {
      if (Deno.statSync(path).isDirectory) throw new Deno.errors.IsADirectory();
      return Deno.openSync(path, { read: true });
    } catch (e) {
      throw new Error(`Cannot follow log "${path}": ${ioCause(e)}`);
    }
  };
  let file = open();
  let ino = file.statSync().ino;
  let offset = 0;
  let pending = "";
  let lineNo = 0;
  let skipPartial = false;
  if (options.fromEnd) {
    offset = file.statSync().size;
    if (offset > 0) {
      // Begin after the last complete line: a line being written is not half-shown.
      const last = new Uint8Array(1);
      file.seekSync(offset - 1, Deno.SeekMode.Start);
      file.readSync(last);
      skipPartial = last[0] !== 0x0a;
    }
    lineNo = Number.NaN; // numbers relative to an unread beginning would mislead
  }
  const decoder = new TextDecoder();
  const buf = new Uint8Array(1 << 16);
  const sleep = () =>
    new Promise<void>((resolve) => {
      const t = setTimeout(done, interval);
      function done() {
        clearTimeout(t);
        options.signal?.removeEventListener("abort", done);
        resolve();
      }
      options.signal?.addEventListener("abort", done, { once: true });
    });
  try {
    while (!options.signal?.aborted) {
      // Rotation or truncation: start again on whatever the path names now.
      let current: Deno.FileInfo | undefined;
      try {
        current = Deno.statSync(path);
      } catch {
        current = undefined; // moved away, not yet recreated: keep reading the old one
      }
      if (current && current.ino !== ino) {
        options.onProblem?.(`"${path}" was replaced: following the new file from its start`);
        file.close();
        file = open();
        ino = file.statSync().ino;
        offset = 0;
        pending = "";
        lineNo = 0;
        skipPartial = false;
      } else if (file.statSync().size < offset) {
        options.onProblem?.(`"${path}" was truncated: following it from its start`);
        offset = 0;
        pending = "";
        lineNo = 0;
        skipPartial = false;
      }
      file.seekSync(offset, Deno.SeekMode.Start);
      let grew = false;
      for (;;) {
        const n = file.readSync(buf);
        if (n === null || n === 0) break;
        offset += n;
        grew = true;
        pending += decoder.decode(buf.subarray(0, n), { stream: true });
      }
      if (grew) {
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) {
          lineNo++;
          if (skipPartial) {
            skipPartial = false;
            continue;
          }
          if (line.trim() === "") continue;
          const parsed = parseLine(line);
          if ("record" in parsed) yield parsed.record;
          else {
            options.onProblem?.(
              `${Number.isNaN(lineNo) ? "a new line" : `line ${lineNo}`}: ${parsed.problem}`,
            );
          }
        }
      }
      if (options.signal?.aborted) break;
      await sleep();
    }
  } finally {
    file.close();
  }
}

/** Why a file could not be read, in a few words: `No such file or directory`. */
export function ioCause(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "No such file or directory";
  if (e instanceof Deno.errors.PermissionDenied) return "Permission denied";
  if (e instanceof Deno.errors.IsADirectory) return "Is a directory";
  const m = e instanceof Error ? e.message : String(e);
  // Deno's messages read `Is a directory (os error 21): read '/tmp/x'`: the cause is the part
  // before the os error number; the path is already in ours.
  const cut = m.search(/ \(os error \d+\)/);
  if (cut > 0) return m.slice(0, cut);
  if (e instanceof TypeError && /not valid UTF-8|invalid utf-8/i.test(m)) return "not a text file";
  return m;
}

/** A log read from a file: its records, or why there are none. */
export type LoadedLog =
  | { ok: true; records: LogRecord[]; problems: string[] }
  | { ok: false; error: string; problems: string[] };

/**
 * Reads a JSONL log as a value: `ok: false` with one sentence (path and cause) when the file
 * cannot be read or holds no record at all. Lines that are not records are `problems`.
 *
 * @example
 * ```ts
 * const log = loadLog("vfs.jsonl");
 * if (!log.ok) console.error(log.error);
 * ```
 */
export function loadLog(path: string): LoadedLog {
  let text: string;
  try {
    if (Deno.statSync(path).isDirectory) {
      return { ok: false, error: `Cannot read log "${path}": Is a directory`, problems: [] };
    }
    text = new TextDecoder("utf-8", { fatal: true }).decode(Deno.readFileSync(path));
  } catch (e) {
    const cause = e instanceof TypeError ? "not a text file" : ioCause(e);
    return { ok: false, error: `Cannot read log "${path}": ${cause}`, problems: [] };
  }
  const { records, problems } = parseLog(text);
  if (records.length === 0) {
    const why = text.trim() === ""
      ? "the file is empty"
      : `none of its ${problems.length} line(s) is a log record (${problems[0]}${
        problems.length > 1 ? `; and ${problems.length - 1} more` : ""
      })`;
    return { ok: false, error: `No log records in "${path}": ${why}`, problems };
  }
  return { ok: true, records, problems };
}

/** Reads a JSONL log; malformed lines are reported with their number. Throws when the file
 * cannot be read (see {@linkcode loadLog} for the same as a value). */
export function readLog(path: string): { records: LogRecord[]; problems: string[] } {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new Error(`Cannot read log "${path}": ${ioCause(e)}`);
  }
  return parseLog(text);
}

/**
 * What went wrong in a record, as one line, or undefined when nothing did: error and warning
 * records (violations, stuck requests, I/O failures), a message the proxy relayed with warnings,
 * a device-state transfer that failed, was cut short or was corrupted on purpose (`--fault`), a
 * SET_DEVICE_STATE_FD that was refused, a CHECK_DEVICE_STATE that did not report success.
 */
export function problemOf(r: LogRecord): string | undefined {
  const where = "session" in r && r.session !== undefined ? `s${r.session}: ` : "";
  switch (r.type) {
    case "error":
    case "warning":
      return `${where}${r.type}: ${r.message}`;
    case "message": {
      const refused = r.name === "SET_DEVICE_STATE_FD" && r.kind === "reply" ? setFdError(r) : 0;
      if (refused !== 0) {
        return `${where}error: SET_DEVICE_STATE_FD refused with error ${refused}${
          r.injected ? " by the proxy" : ""
        }${r.warnings?.length ? `; ${r.warnings.join("; ")}` : ""}`;
      }
      return r.warnings?.length
        ? `${where}warning: ${r.name}${r.kind === "reply" ? " reply" : ""}: ${
          r.warnings.join("; ")
        }`
        : undefined;
    }
    case "lint":
      // A conformance-lint finding: a peer broke a rule of the spec (verdicts are not problems).
      return r.event === "finding"
        ? `${where}lint ${r.severity}: ${r.peer} [${r.rule}] ${r.message}`
        : undefined;
    case "device-state":
      if (r.event === "transfer-end" && !r.ok) {
        return `${where}error: ${r.direction} transfer failed after ${r.bytes} bytes: ${
          r.error ?? "unknown error"
        }`;
      }
      if (r.event === "transfer-end" && typeof r.bytesIn === "number" && r.bytes < r.bytesIn) {
        return `${where}error: ${r.direction} transfer cut short: ${r.bytes} of ${r.bytesIn} bytes delivered${
          r.faults?.length ? ` (fault ${r.faults.join(", ")})` : ""
        }`;
      }
      if (r.event === "transfer-end" && r.faults?.includes("state-corrupt")) {
        return `${where}error: ${r.direction} transfer altered by the proxy (fault state-corrupt)`;
      }
      if (r.event === "check" && r.result !== 0) {
        return `${where}error: CHECK_DEVICE_STATE${
          r.direction ? ` (${r.direction})` : ""
        } failed: result ${r.result}${
          r.backendResult !== undefined ? `, back-end said ${r.backendResult}` : ""
        }${r.reason ? `: ${r.reason}` : ""}`;
      }
      return undefined;
    case "restart":
      if (r.event === "step" && !r.ok) {
        return `${where}error: back-end restart step ${r.step} failed${
          r.detail ? `: ${r.detail}` : ""
        }`;
      }
      if (r.event === "done" && !r.ok) {
        return `${where}error: back-end restart failed${r.failedStep ? ` at ${r.failedStep}` : ""}${
          r.error ? `: ${r.error}` : ""
        }${r.rolledBack ? ` (rolled back: ${r.rolledBack})` : ""}`;
      }
      return undefined;
    default:
      return undefined;
  }
}

/** The error code of a SET_DEVICE_STATE_FD reply (bits 0–7 of its u64), 0 when none. */
function setFdError(m: MessageRecord): number {
  const e = m.payload?.error;
  return typeof e === "number" ? e : Number(e ?? 0) || 0;
}

/** The sessions a log holds, in order of first appearance. */
export function sessionsOf(records: LogRecord[]): number[] {
  const seen = new Set<number>();
  for (const r of records) {
    if ("session" in r && typeof r.session === "number") seen.add(r.session);
  }
  return [...seen];
}

/** Filters for `log show` and `log follow`. */
export interface ShowFilter {
  /** Only records of this session (records without a session always pass). */
  session?: number;
  /** Request name, any case, with or without the `VHOST_USER_` prefix. */
  name?: string;
  /** Only messages on this channel, `main` or `backend`. */
  channel?: string;
  /** Only records {@linkcode problemOf} finds a problem in. */
  problemsOnly?: boolean;
}

/** The request name as records carry it: upper case, without `VHOST_USER_`. */
function normalName(name: string): string {
  return name.toUpperCase().replace(/^VHOST_USER_/, "");
}

/** A predicate for the records that pass the filter. */
export function showFilter(f: ShowFilter = {}): (r: LogRecord) => boolean {
  const name = f.name === undefined ? undefined : normalName(f.name);
  return (r) => {
    if (f.session !== undefined && "session" in r && r.session !== f.session) return false;
    if (f.problemsOnly && problemOf(r) === undefined) return false;
    if (name !== undefined && (r.type !== "message" || normalName(r.name) !== name)) return false;
    if (f.channel !== undefined && (r.type !== "message" || r.channel !== f.channel)) return false;
    return true;
  };
}

/** Human lines for the records that pass the filter. */
export function showLog(records: LogRecord[], f: ShowFilter = {}): string[] {
  return records.filter(showFilter(f)).map(formatRecord);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** A run in numbers. */
export interface LogSummary {
  /** Sessions that started in the log. */
  sessions: number;
  /** Message records (requests and replies). */
  messages: number;
  /** Per request name: requests, replies and reply latencies (µs), most frequent first. */
  byName: {
    name: string;
    requests: number;
    replies: number;
    p50Us?: number;
    p99Us?: number;
    maxUs?: number;
  }[];
  /** Fds the messages carried. */
  fds: number;
  /** Error records, one line each. */
  errors: string[];
  /** Warning records, one line each. */
  warnings: string[];
  /** Every device-state transfer that ended, with its size, time and fingerprint. */
  transfers: {
    session: number;
    direction: string;
    ok: boolean;
    bytes: number;
    durationMs: number;
    sha256?: string;
    /** The fingerprint and its algorithm (from `sha256` in logs written before it). */
    fingerprint?: { algorithm: string; value: string };
    error?: string;
  }[];
  /** Why each session ended and who closed it. */
  sessionEnds: { session: number; reason: string; closedBy?: string }[];
  /** Every CHECK_DEVICE_STATE answer the proxy logged (0 = success). */
  checks: { session: number; direction?: string; result: number; reason?: string }[];
  /** Messages relayed with warnings, one line each (`s1: warning: NAME: …`). */
  messageWarnings: string[];
  /**
   * Everything that went wrong, one line each, in log order: errors and warnings, messages with
   * warnings, failed or truncated transfers, failed CHECKs. Non-empty ⇒ `log summary` exits 1.
   */
  problems: string[];
  /** The session the summary is restricted to (`--session`), when it is. */
  session?: number;
}

/** Summarises a log, or one session of it (records without a session are kept). */
export function summarizeLog(
  all: LogRecord[],
  options: { session?: number } = {},
): LogSummary {
  const records = options.session === undefined
    ? all
    : all.filter((r) => !("session" in r) || r.session === options.session);
  const names = new Map<string, { requests: number; replies: number; latencies: number[] }>();
  const out: LogSummary = {
    sessions: 0,
    messages: 0,
    byName: [],
    fds: 0,
    errors: [],
    warnings: [],
    transfers: [],
    sessionEnds: [],
    checks: [],
    messageWarnings: [],
    problems: [],
  };
  if (options.session !== undefined) out.session = options.session;
  for (const r of records) {
    const problem = problemOf(r);
    if (problem !== undefined) out.problems.push(problem);
    switch (r.type) {
      case "session-start":
        out.sessions++;
        break;
      case "session-end":
        out.sessionEnds.push({ session: r.session, reason: r.reason, closedBy: r.closedBy });
        break;
      case "message": {
        // A request the proxy held (CHECK_DEVICE_STATE during a copy) is logged again when it is
        // released: the same message, counted once.
        if (r.kind === "request" && /^released after/.test(r.action ?? "")) {
          if (problem !== undefined) out.messageWarnings.push(problem);
          break;
        }
        out.messages++;
        out.fds += r.fds?.length ?? 0;
        const key = r.channel === "main" ? r.name : `${r.name} [backend-ch]`;
        const e = names.get(key) ?? { requests: 0, replies: 0, latencies: [] };
        if (r.kind === "reply") {
          e.replies++;
          if (r.latencyUs !== undefined) e.latencies.push(r.latencyUs);
        } else e.requests++;
        names.set(key, e);
        if (problem !== undefined) out.messageWarnings.push(problem);
        break;
      }
      case "error":
        out.errors.push(r.session !== undefined ? `s${r.session}: ${r.message}` : r.message);
        break;
      case "warning":
        out.warnings.push(r.session !== undefined ? `s${r.session}: ${r.message}` : r.message);
        break;
      case "device-state":
        if (r.event === "transfer-end") {
          const t: TransferEndRecord = r;
          out.transfers.push({
            session: t.session,
            direction: t.direction,
            ok: t.ok,
            bytes: t.bytes,
            durationMs: t.durationMs,
            sha256: t.sha256,
            fingerprint: recordFingerprint(t),
            error: t.error,
          });
        } else if (r.event === "check") {
          out.checks.push({
            session: r.session,
            direction: r.direction,
            result: r.result,
            reason: r.reason,
          });
        }
        break;
    }
  }
  for (const [name, e] of [...names.entries()].sort((a, b) => b[1].requests - a[1].requests)) {
    const sorted = [...e.latencies].sort((a, b) => a - b);
    const row: LogSummary["byName"][number] = { name, requests: e.requests, replies: e.replies };
    if (sorted.length > 0) {
      row.p50Us = percentile(sorted, 50);
      row.p99Us = percentile(sorted, 99);
      row.maxUs = sorted[sorted.length - 1];
    }
    out.byName.push(row);
  }
  return out;
}

/** Renders a summary as text. */
export function formatSummary(s: LogSummary): string[] {
  const lines = [
    `${
      s.session !== undefined ? `session ${s.session}: ` : ""
    }${s.sessions} session(s), ${s.messages} messages, ${s.fds} fds, ${s.problems.length} problem(s)`,
  ];
  lines.push(
    "",
    "request                                   requests  replies   p50 µs   p99 µs   max µs",
  );
  for (const r of s.byName) {
    const lat = (v?: number) => (v === undefined ? "-" : String(v)).padStart(8);
    lines.push(
      `${r.name.padEnd(40)} ${String(r.requests).padStart(9)} ${String(r.replies).padStart(8)} ${
        lat(r.p50Us)
      } ${lat(r.p99Us)} ${lat(r.maxUs)}`,
    );
  }
  if (s.transfers.length > 0) {
    lines.push("", "device-state transfers:");
    for (const t of s.transfers) {
      lines.push(
        `  s${t.session} ${t.direction} ${
          t.ok ? "ok" : "FAILED"
        } ${t.bytes} bytes ${t.durationMs} ms ${
          t.fingerprint ? `${t.fingerprint.algorithm}=${t.fingerprint.value}` : "fingerprint=(off)"
        }${t.error ? ` (${t.error})` : ""}`,
      );
    }
  }
  if (s.checks.length > 0) {
    lines.push("", "CHECK_DEVICE_STATE:");
    for (const c of s.checks) {
      lines.push(
        `  s${c.session}${c.direction ? ` ${c.direction}` : ""} ${
          c.result === 0 ? "ok" : `FAILED result=${c.result}`
        }${c.reason ? ` (${c.reason})` : ""}`,
      );
    }
  }
  for (const e of s.sessionEnds) {
    lines.push(
      `session ${e.session} ended: ${e.reason}${e.closedBy ? ` [closed by ${e.closedBy}]` : ""}`,
    );
  }
  if (s.problems.length > 0) {
    lines.push("", `problems (${s.problems.length}):`, ...s.problems.map((p) => `  ${p}`));
  } else lines.push("", "no problems");
  return lines;
}

/** The comparable identity of a message: what was said, not when or with which addresses. */
function signature(m: MessageRecord): string {
  return `${m.channel} ${m.from} ${m.name}${m.kind === "reply" ? " reply" : ""} fds=${
    m.fds?.length ?? 0
  }`;
}

/** Where two logs' conversations differ. */
export interface LogDiff {
  /** The two message sequences are equal. */
  same: boolean;
  /** Index (in messages) of the first difference, when they differ. */
  firstDifference?: number;
  /** The left log's message at the first difference (`(end of log)` when it ran out). */
  left?: string;
  /** The right log's message at the first difference. */
  right?: string;
  /** Messages per signature that one side has more of. */
  counts: { signature: string; left: number; right: number }[];
  /** Messages compared from the left log. */
  leftMessages: number;
  /** Messages compared from the right log. */
  rightMessages: number;
}

/** Compares the message sequences of two logs (optionally one session of each). */
export function diffLogs(
  a: LogRecord[],
  b: LogRecord[],
  options: { sessionA?: number; sessionB?: number } = {},
): LogDiff {
  const pick = (rs: LogRecord[], s?: number) =>
    rs.filter((r): r is MessageRecord =>
      r.type === "message" && (s === undefined || r.session === s)
    )
      .map(signature);
  const left = pick(a, options.sessionA);
  const right = pick(b, options.sessionB);
  const diff: LogDiff = {
    same: true,
    counts: [],
    leftMessages: left.length,
    rightMessages: right.length,
  };
  const n = Math.max(left.length, right.length);
  for (let i = 0; i < n; i++) {
    if (left[i] !== right[i]) {
      diff.same = false;
      diff.firstDifference = i;
      diff.left = left[i] ?? "(end of log)";
      diff.right = right[i] ?? "(end of log)";
      break;
    }
  }
  const count = (xs: string[]) => {
    const m = new Map<string, number>();
    for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
    return m;
  };
  const ca = count(left), cb = count(right);
  for (const sig of new Set([...ca.keys(), ...cb.keys()])) {
    const l = ca.get(sig) ?? 0, r = cb.get(sig) ?? 0;
    if (l !== r) diff.counts.push({ signature: sig, left: l, right: r });
  }
  return diff;
}
