/**
 * The conformance lint: which peer broke which rule of the vhost-user spec, from the proxy's
 * log records. A pure engine (records in, lint records out; no I/O, no FFI), so that the same
 * code judges a live proxy (`lintSink`, on the main thread, over the record stream the relay
 * already produces) and a recording (`lintLog`, behind `vhost-user-proxy log lint`).
 *
 * The rules are the table in `lint_rules.ts`; the session model they judge against is
 * `lint_model.ts`. A finding is stamped with the time of the message it is about, so a live run
 * and a later `log lint` of its log give the same findings. Message records exist only when
 * the proxy logs messages (`logMessages`: a `--log` file or the human log), so the lint runs
 * only then.
 *
 * @example
 * ```ts
 * import { parseLog } from "./tools.ts";
 *
 * // Two lines of a --log file: a session that did nothing.
 * const { records } = parseLog([
 *   '{"type":"session-start","ts":"2026-01-01T00:00:00.000Z","session":1,"frontEnd":null,"backend":"vfs.sock"}',
 *   '{"type":"session-end","ts":"2026-01-01T00:00:01.000Z","session":1,"reason":"front-end closed","inFlight":[]}',
 * ].join("\n"));
 * for (const line of formatLintReport(lintLog(records))) console.log(line);
 * ```
 *
 * @module
 */

import type { LogRecord, MessageRecord, SessionEndRecord } from "./record.ts";
import {
  formatLintRecord,
  type LintFindingRecord,
  type LintRecord,
  type LintVerdictRecord,
} from "./lint_record.ts";
import {
  applyMessage,
  awaitReply,
  isHeldRelease,
  type LintPeer,
  type LintSession,
  matchReply,
  newSession,
} from "./lint_model.ts";
import { type FindingInput, LINT_RULES, type LintRule, type MessageEvent } from "./lint_rules.ts";

/** Options of {@linkcode LintEngine}. */
export interface LintOptions {
  /** The rules to run; default {@link LINT_RULES}. */
  rules?: readonly LintRule[];
  /** Finding records per rule and session; later ones are only counted (default 10). */
  maxFindingsPerRule?: number;
}

const PEERS: readonly LintPeer[] = ["front-end", "back-end"];

interface Tally {
  byPeer: Record<LintPeer, { errors: number; warnings: number; rules: Record<string, number> }>;
}

/**
 * Judges a stream of log records. {@linkcode push} takes each record in log order and returns
 * the lint records it gives rise to (findings; at a session's end, its verdicts).
 * {@linkcode finish} returns the verdicts of sessions the stream never ended.
 * Sessions whose `session-start` the stream does not hold are not judged (the negotiation the
 * rules need is missing); {@linkcode unjudged} lists them.
 */
export class LintEngine {
  readonly #rules: readonly LintRule[];
  readonly #max: number;
  readonly #sessions = new Map<number, { model: LintSession; tally: Tally }>();
  readonly #unjudged = new Set<number>();

  /** A fresh engine: no session seen yet, the rules of `options` (default every rule). */
  constructor(options: LintOptions = {}) {
    this.#rules = options.rules ?? LINT_RULES;
    this.#max = options.maxFindingsPerRule ?? 10;
  }

  /** Sessions that had messages but no `session-start` in the stream. */
  get unjudged(): number[] {
    return [...this.#unjudged];
  }

  /** Takes one record; returns the lint records it produces. Lint records are ignored. */
  push(record: LogRecord | LintRecord): LintRecord[] {
    const out: LintRecord[] = [];
    const r = record as LogRecord | LintRecord;
    switch (r.type) {
      case "lint":
        return out;
      case "proxy":
        // A new run appending to the log: sessions of the earlier run that never ended stop here.
        if (r.event === "listening") out.push(...this.finish(r.ts));
        return out;
      case "session-start":
        out.push(...this.#end(r.session, undefined, r.ts));
        this.#sessions.set(r.session, { model: newSession(r.session), tally: newTally() });
        return out;
      case "session-end":
        return this.#end(r.session, r, r.ts);
      case "message":
        return this.#message(r);
      case "device-state": {
        const entry = this.#sessions.get(r.session);
        if (!entry) return out;
        const t = entry.model.transfer;
        if (r.event === "transfer-start" && t) t.streamed = true;
        if (r.event === "transfer-end" && t) {
          t.endTs = r.ts;
          this.#run(
            entry,
            r.ts,
            out,
            (rule, report) => rule.onTransferEnd?.(r.ts, entry.model, report),
          );
        }
        return out;
      }
      case "error":
      case "warning": {
        const entry = r.session === undefined ? undefined : this.#sessions.get(r.session);
        if (!entry) return out;
        this.#run(entry, r.ts, out, (rule, report) => rule.onProblem?.(r, entry.model, report));
        return out;
      }
      default:
        return out;
    }
  }

  /** Verdicts for every session still open (the stream ended before their `session-end`). */
  finish(ts?: string): LintRecord[] {
    const out: LintRecord[] = [];
    for (const session of [...this.#sessions.keys()]) {
      out.push(...this.#end(session, undefined, ts));
    }
    return out;
  }

  #message(r: MessageRecord): LintRecord[] {
    const out: LintRecord[] = [];
    const entry = this.#sessions.get(r.session);
    if (!entry) {
      this.#unjudged.add(r.session);
      return out;
    }
    const s = entry.model;
    const event: MessageEvent = { record: r, missed: [] };
    if (r.kind === "reply") {
      const m = matchReply(s, r);
      event.answers = m.request;
      event.missed = m.missed;
    }
    this.#run(entry, r.ts, out, (rule, report) => rule.onMessage?.(event, s, report));
    if (r.kind === "request" && !isHeldRelease(r)) awaitReply(s, r);
    applyMessage(s, r);
    return out;
  }

  #end(session: number, end: SessionEndRecord | undefined, ts?: string): LintRecord[] {
    const out: LintRecord[] = [];
    const entry = this.#sessions.get(session);
    if (!entry) return out;
    const at = end?.ts ?? ts ?? new Date().toISOString();
    this.#run(entry, at, out, (rule, report) => rule.onEnd?.(entry.model, end, report));
    this.#sessions.delete(session);
    for (const peer of PEERS) {
      const t = entry.tally.byPeer[peer];
      const findings = t.errors + t.warnings;
      const verdict: LintVerdictRecord = {
        type: "lint",
        event: "verdict",
        ts: at,
        session,
        peer,
        verdict: findings === 0 ? "clean" : "findings",
        messages: entry.model.sent[peer],
        findings,
        bySeverity: { error: t.errors, warning: t.warnings },
        rules: { ...t.rules },
      };
      if (!end) verdict.incomplete = true;
      out.push(verdict);
    }
    return out;
  }

  /** Runs every rule's hook, turning what it reports into finding records. */
  #run(
    entry: { model: LintSession; tally: Tally },
    ts: string,
    out: LintRecord[],
    hook: (rule: LintRule, report: (f: FindingInput) => void) => void,
  ): void {
    for (const rule of this.#rules) {
      hook(rule, (f) => {
        const t = entry.tally.byPeer[f.peer];
        if (rule.severity === "error") t.errors++;
        else t.warnings++;
        const n = (t.rules[rule.id] ?? 0) + 1;
        t.rules[rule.id] = n;
        if (n > this.#max) return;
        const finding: LintFindingRecord = {
          type: "lint",
          event: "finding",
          ts: f.at?.ts ?? ts,
          session: entry.model.session,
          rule: rule.id,
          peer: f.peer,
          severity: rule.severity,
          message: f.message,
          values: f.values,
          spec: rule.spec.section,
        };
        out.push(finding);
      });
    }
  }
}

function newTally(): Tally {
  const empty = () => ({ errors: 0, warnings: 0, rules: {} as Record<string, number> });
  return { byPeer: { "front-end": empty(), "back-end": empty() } };
}

/** What the lint found in one session. */
export interface SessionLint {
  /** The session number. */
  session: number;
  /** Its findings, up to the per-rule cap, in log order. */
  findings: LintFindingRecord[];
  /** One per peer. */
  verdicts: LintVerdictRecord[];
}

/** What `log lint` reports about a log. */
export interface LintReport {
  /** Every judged session, in the order its verdicts came. */
  sessions: SessionLint[];
  /** Findings in all sessions (including those beyond the per-rule record cap). */
  findings: number;
  /** Sessions with messages but no `session-start` in the log: not judged. */
  unjudged: number[];
}

/**
 * Lints a recorded log: the same engine as the live proxy over the log's records (lint records
 * already in the log are ignored and made afresh), sessions in order of their verdicts.
 */
export function lintLog(records: readonly LogRecord[], options: LintOptions = {}): LintReport {
  const engine = new LintEngine(options);
  const out: LintRecord[] = [];
  for (const r of records) out.push(...engine.push(r));
  out.push(...engine.finish(records.at(-1)?.ts));
  const bySession = new Map<number, SessionLint>();
  const entry = (n: number) => {
    let e = bySession.get(n);
    if (!e) bySession.set(n, e = { session: n, findings: [], verdicts: [] });
    return e;
  };
  for (const r of out) {
    if (r.event === "finding") entry(r.session).findings.push(r);
    else entry(r.session).verdicts.push(r);
  }
  const sessions = [...bySession.values()];
  const findings = sessions.reduce(
    (n, s) => n + s.verdicts.reduce((m, v) => m + v.findings, 0),
    0,
  );
  return { sessions, findings, unjudged: engine.unjudged };
}

/** The report as human lines: per session its findings, then a verdict per peer. */
export function formatLintReport(report: LintReport): string[] {
  const lines: string[] = [];
  for (const s of report.sessions) {
    lines.push(`session ${s.session}:`);
    for (const f of s.findings) lines.push(`  ${formatLintRecord(f)}`);
    for (const v of s.verdicts) {
      const shown = s.findings.filter((f) => f.peer === v.peer).length;
      lines.push(`  ${formatLintRecord(v)}`);
      if (shown < v.findings) {
        lines.push(`    (${v.findings - shown} more findings of the same rules not shown)`);
      }
    }
  }
  if (report.unjudged.length > 0) {
    lines.push(
      `not judged: session(s) ${report.unjudged.join(", ")} (the log does not hold their start)`,
    );
  }
  const peers = report.sessions.flatMap((s) => s.verdicts);
  const departing = peers.filter((v) => v.verdict === "findings");
  lines.push(
    report.findings === 0
      ? `lint: clean (${report.sessions.length} session(s), both peers conform to every rule)`
      : `lint: ${report.findings} finding(s); ${
        departing.map((v) => `s${v.session} ${v.peer}`).join(", ")
      } depart from the spec`,
  );
  return lines;
}

/**
 * A sink that runs the lint over the records going to `next`: every record is passed on, then
 * the lint records it produced (findings as they happen, verdicts at each session's end).
 * Runs on the main thread, after the relay Worker's batch: never in the relay's path.
 *
 * @example
 * ```ts
 * import { formatRecord } from "./format.ts";
 *
 * // Print every record, and the lint's findings and verdicts among them.
 * const sink = lintSink((r) => console.log(formatRecord(r)));
 * sink({ type: "session-start", ts: new Date().toISOString(), session: 1, frontEnd: null, backend: "/run/vfs.sock" });
 * ```
 */
export function lintSink(
  next: (r: LogRecord) => void,
  engine: LintEngine = new LintEngine(),
): (r: LogRecord) => void {
  return (r) => {
    next(r);
    for (const out of engine.push(r)) next(out as unknown as LogRecord);
  };
}

/**
 * The rule table as Markdown rows (id, peer, severity, the spec sentence with its section), as
 * the README's "Conformance lint" shows it; a unit test keeps the two equal.
 */
export function lintRuleTable(rules: readonly LintRule[] = LINT_RULES): string[] {
  const cell = (s: string) => s.replaceAll("|", "\\|");
  return [
    "| rule | peer | severity | the spec says |",
    "| ---- | ---- | -------- | ------------- |",
    ...rules.map((r) =>
      `| \`${r.id}\` | ${r.peer} | ${r.severity} | ${cell(r.spec.section)}: "${
        cell(r.spec.quote)
      }" |`
    ),
  ];
}
