/**
 * Tools over JSON Lines logs: render them for people (`log show`), summarise a run
 * (`log summary`: counts, reply latencies, device-state transfers, problems) and compare two
 * runs message by message (`log diff`: where two conversations part ways).
 *
 * @module
 */

import { formatRecord } from "./log_format.ts";
import type { LogRecord, MessageRecord, TransferEndRecord } from "./log_record.ts";

/** Reads a JSONL log; malformed lines are reported with their number, not thrown. */
export function readLog(path: string): { records: LogRecord[]; problems: string[] } {
  const records: LogRecord[] = [];
  const problems: string[] = [];
  const lines = Deno.readTextFileSync(path).split("\n");
  lines.forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      const r = JSON.parse(line);
      if (typeof r === "object" && r !== null && typeof r.type === "string") records.push(r);
      else problems.push(`line ${i + 1}: not a log record`);
    } catch (e) {
      problems.push(`line ${i + 1}: ${e instanceof Error ? e.message : e}`);
    }
  });
  return { records, problems };
}

/** Filters for `log show`. */
export interface ShowFilter {
  session?: number;
  name?: string;
  channel?: string;
  problemsOnly?: boolean;
}

/** Human lines for the records that pass the filter. */
export function showLog(records: LogRecord[], f: ShowFilter = {}): string[] {
  return records.filter((r) => {
    if (f.session !== undefined && "session" in r && r.session !== f.session) return false;
    if (f.problemsOnly && r.type !== "error" && r.type !== "warning") return false;
    if (f.name !== undefined && (r.type !== "message" || r.name !== f.name)) return false;
    if (f.channel !== undefined && (r.type !== "message" || r.channel !== f.channel)) return false;
    return true;
  }).map(formatRecord);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** A run in numbers. */
export interface LogSummary {
  sessions: number;
  messages: number;
  byName: {
    name: string;
    requests: number;
    replies: number;
    p50Us?: number;
    p99Us?: number;
    maxUs?: number;
  }[];
  fds: number;
  errors: string[];
  warnings: string[];
  transfers: {
    session: number;
    direction: string;
    ok: boolean;
    bytes: number;
    durationMs: number;
    sha256?: string;
    error?: string;
  }[];
  sessionEnds: { session: number; reason: string; closedBy?: string }[];
}

/** Summarises a log. */
export function summarizeLog(records: LogRecord[]): LogSummary {
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
  };
  for (const r of records) {
    switch (r.type) {
      case "session-start":
        out.sessions++;
        break;
      case "session-end":
        out.sessionEnds.push({ session: r.session, reason: r.reason, closedBy: r.closedBy });
        break;
      case "message": {
        out.messages++;
        out.fds += r.fds.length;
        const key = r.channel === "main" ? r.name : `${r.name} [backend-ch]`;
        const e = names.get(key) ?? { requests: 0, replies: 0, latencies: [] };
        if (r.kind === "reply") {
          e.replies++;
          if (r.latencyUs !== undefined) e.latencies.push(r.latencyUs);
        } else e.requests++;
        names.set(key, e);
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
            error: t.error,
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
  const lines = [`${s.sessions} session(s), ${s.messages} messages, ${s.fds} fds`];
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
        } ${t.bytes} bytes ${t.durationMs} ms sha256=${t.sha256 ?? "(off)"}${
          t.error ? ` (${t.error})` : ""
        }`,
      );
    }
  }
  for (const e of s.sessionEnds) {
    lines.push(
      `session ${e.session} ended: ${e.reason}${e.closedBy ? ` [closed by ${e.closedBy}]` : ""}`,
    );
  }
  if (s.errors.length > 0) lines.push("", "errors:", ...s.errors.map((e) => `  ${e}`));
  if (s.warnings.length > 0) lines.push("", "warnings:", ...s.warnings.map((w) => `  ${w}`));
  return lines;
}

/** The comparable identity of a message: what was said, not when or with which addresses. */
function signature(m: MessageRecord): string {
  return `${m.channel} ${m.from} ${m.name}${
    m.kind === "reply" ? " reply" : ""
  } fds=${m.fds.length}`;
}

/** Where two logs' conversations differ. */
export interface LogDiff {
  same: boolean;
  /** Index (in messages) of the first difference, when they differ. */
  firstDifference?: number;
  left?: string;
  right?: string;
  /** Messages per signature that one side has more of. */
  counts: { signature: string; left: number; right: number }[];
  leftMessages: number;
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
