/**
 * The proxy's log as data, and the offline tools over it, with no FFI: importing this module
 * needs no permission (reading a log file needs `--allow-read`, at the call).
 *
 * - the record types ({@link LogRecord} and its members), one JSON object per line of a
 *   `--log` file;
 * - {@link formatRecord}, the one-line human rendering the proxy's console log uses;
 * - reading logs ({@link parseLog}, {@link loadLog}, {@link readLog}, {@link followLog}) and
 *   the tools behind `vhost-user-proxy log`: {@link showLog}, {@link summarizeLog},
 *   {@link diffLogs}, {@link explainMigration} and the conformance lint {@link lintLog}.
 *
 * @example Summarise a log given as text
 * ```ts
 * import { formatSummary, parseLog, summarizeLog } from "./mod.ts";
 *
 * const text = [
 *   '{"type":"session-start","ts":"2026-01-01T00:00:00Z","session":1}',
 *   '{"type":"session-end","ts":"2026-01-01T00:00:01Z","session":1,"reason":"closed"}',
 * ].join("\n");
 * const { records, problems } = parseLog(text);
 * if (problems.length > 0) throw new Error(problems[0]);
 * for (const line of formatSummary(summarizeLog(records))) console.log(line);
 * ```
 *
 * @module
 */

export type * from "./record.ts";
export type { LintFindingRecord, LintVerdictRecord } from "./lint_record.ts";
export { formatRecord } from "./format.ts";
export {
  diffLogs,
  followLog,
  type FollowOptions,
  formatSummary,
  type LoadedLog,
  loadLog,
  type LogDiff,
  type LogSummary,
  parseLog,
  problemOf,
  readLog,
  sessionsOf,
  type ShowFilter,
  showFilter,
  showLog,
  summarizeLog,
} from "./tools.ts";
export {
  type Culprit,
  type ExplainEvent,
  type ExplainFingerprints,
  explainMigration,
  type Explanation,
  formatExplanation,
  type MigrationRole,
} from "./explain.ts";
export {
  formatLintReport,
  LintEngine,
  lintLog,
  type LintOptions,
  type LintReport,
  lintSink,
  type SessionLint,
} from "./lint.ts";
export {
  type FindingInput,
  LINT_RULES,
  type LintRule,
  type LintSeverity,
  type MessageEvent,
  type Report,
  type SpecQuote,
} from "./lint_rules.ts";
export type {
  Expectation,
  LintPeer,
  LintSession,
  PendingRequest,
  Region,
  Transfer,
  WaitingCheck,
} from "./lint_model.ts";
