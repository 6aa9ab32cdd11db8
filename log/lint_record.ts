/**
 * The records the conformance lint adds to the log (`"type": "lint"`): a finding per rule a
 * peer broke, and at the end of each session a verdict per peer. Plain JSON-safe data like
 * every other record (`log_record.ts`).
 *
 * @module
 */

import type { Side as SenderSide } from "../protocol/catalogue.ts";

/** A conformance-lint finding (`log/lint_rules.ts`): a peer departed from a spec rule. */
export interface LintFindingRecord {
  /** Discriminant of the record union, with {@link LintFindingRecord.event}. */
  type: "lint";
  /** Which lint record this is. */
  event: "finding";
  /** Time of the message (or session end) the finding is about. */
  ts: string;
  /** The session the finding is in. */
  session: number;
  /** Rule id, e.g. `reply-missing`. */
  rule: string;
  /** The peer that broke the rule. */
  peer: SenderSide;
  /** `error` for a broken MUST, `warning` for a SHOULD or an approximate check. */
  severity: "error" | "warning";
  /** What the peer did, one sentence with the values. */
  message: string;
  /** The values the finding rests on. */
  values: Record<string, unknown>;
  /** Section of the spec text the rule quotes. */
  spec: string;
}

/** The lint's verdict on one peer at the end of a session. */
export interface LintVerdictRecord {
  /** Discriminant of the record union, with {@link LintVerdictRecord.event}. */
  type: "lint";
  /** Which lint record this is. */
  event: "verdict";
  /** ISO-8601 time of the session's end (or of the log's last record). */
  ts: string;
  /** The session judged. */
  session: number;
  /** The peer judged: one verdict per peer and session. */
  peer: SenderSide;
  /** `clean`: no rule fired for this peer in this session. */
  verdict: "clean" | "findings";
  /** Messages the peer sent in the session. */
  messages: number;
  /** Findings against this peer, including those beyond the per-rule record cap. */
  findings: number;
  /** Findings by severity (not top-level `errors`/`warnings`: the log tools read a record's
   * `warnings` as a list of relay warnings). */
  bySeverity: { error: number; warning: number };
  /** Findings per rule id. */
  rules: Record<string, number>;
  /** The log stops before the session's end: requests still waiting were not judged. */
  incomplete?: boolean;
}

/** A lint record. */
export type LintRecord = LintFindingRecord | LintVerdictRecord;

/** Whether a parsed record is a lint record. */
export function isLintRecord(r: { type: string }): r is LintRecord {
  return r.type === "lint";
}

function clock(ts: string): string {
  const m = /^\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)$/.exec(ts);
  return m ? `${m[1].slice(0, 12)}${m[2]}` : ts;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * One human line for a lint record, as the live log and `log show` print it.
 *
 * @example
 * ```ts
 * const line = formatLintRecord({
 *   type: "lint",
 *   event: "finding",
 *   ts: "2026-01-01T14:00:35.961Z",
 *   session: 1,
 *   rule: "reply-missing",
 *   peer: "back-end",
 *   severity: "error",
 *   message: "GET_VRING_BASE(index=1 num=0) got no reply",
 *   values: {},
 *   spec: "Communication",
 * });
 * console.log(line); // "14:00:35.961Z s1 LINT error back-end [reply-missing] GET_VRING_BASE(index=1 num=0) got no reply"
 * ```
 */
export function formatLintRecord(r: LintRecord): string {
  const head = `${clock(r.ts)} s${r.session} LINT`;
  if (r.event === "finding") {
    return `${head} ${r.severity} ${r.peer} [${r.rule}] ${r.message}`;
  }
  const rules = Object.entries(r.rules).map(([id, n]) => `${id} ×${n}`).join(", ");
  const what = r.verdict === "clean"
    ? "clean"
    : `${plural(r.findings, "finding")} (${plural(r.bySeverity.error, "error")}, ${
      plural(r.bySeverity.warning, "warning")
    }): ${rules}`;
  const incomplete = r.incomplete ? "; the log stops before the session's end" : "";
  return `${head} verdict ${r.peer}: ${what} (${plural(r.messages, "message")}${incomplete})`;
}
