/**
 * Rendering records for people: one line per record, arrows for direction, names and key fields.
 *
 * @module
 */

import type { DeviceStateRecord, LogRecord, MessageRecord } from "./record.ts";
import { formatLintRecord, isLintRecord } from "./lint_record.ts";

/** Time of day with its zone: `21:17:45.123Z` (records are stamped in UTC, ISO 8601). */
export function timeOfDay(ts: string): string {
  return clock(ts);
}

function clock(ts: string): string {
  const m = /^\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)$/.exec(ts);
  return m ? `${m[1].slice(0, 12)}${m[2]}` : ts;
}

function messageLine(r: MessageRecord): string {
  const chan = r.channel === "main" ? "" : " [backend-ch]";
  const way = r.from === "front-end" ? "front→back" : "back→front";
  const kind = r.kind === "reply" ? " reply" : "";
  const flags = r.flagNames?.includes("NEED_REPLY") ? " (need reply)" : "";
  const fds = r.fds?.length ? ` fds=[${r.fds.map((f) => f.kind).join(",")}]` : "";
  const lat = r.latencyUs !== undefined ? ` +${formatLatency(r.latencyUs)}` : "";
  const summary = r.summary ? ` ${r.summary}` : "";
  const action = r.action ? ` <${r.action}>` : "";
  const warn = r.warnings?.length ? ` !${r.warnings.join("; ")}` : "";
  return `${
    clock(r.ts)
  } s${r.session}${chan} ${way} ${r.name}${kind}${flags}${summary}${fds}${lat}${action}${warn}`;
}

function formatLatency(us: number): string {
  return us >= 10_000 ? `${(us / 1000).toFixed(1)}ms` : `${us}µs`;
}

function deviceStateText(r: DeviceStateRecord): string {
  switch (r.event) {
    case "transfer-start":
      return `${r.direction} started via ${r.via} (${r.mode})`;
    case "transfer-end": {
      const what = r.ok ? "done" : `FAILED: ${r.error ?? "unknown error"}`;
      const state = r.state ? ` ${JSON.stringify(r.state)}` : "";
      const dump = r.dump ? ` dump=${r.dump}` : "";
      // The named fingerprint; a log from before it has only `sha256`.
      const fp = r.fingerprint ?? (r.sha256 ? { algorithm: "sha256", value: r.sha256 } : undefined);
      const digest = fp ? `${fp.algorithm}=${fp.value}` : "fingerprint=(off)";
      return `${r.direction} ${what}: ${r.bytes} bytes in ${num(r.durationMs)} ms ` +
        `(${num(r.throughputMiBps)} MiB/s) ${digest}${dump}${state}`;
    }
    case "check": {
      const back = r.backendResult !== undefined ? ` back-end=${r.backendResult}` : "";
      const why = r.reason ? ` (${r.reason})` : "";
      const failed = r.result !== 0 ? " FAILED" : "";
      return `CHECK_DEVICE_STATE${failed} result=${r.result}${back}${why}`;
    }
    case "note":
      return r.message;
    default:
      return JSON.stringify(r);
  }
}

function num(v: number | undefined): string {
  return typeof v === "number" ? v.toFixed(1) : "?";
}

/** One human-readable line for a record. */
export function formatRecord(r: LogRecord): string {
  if (isLintRecord(r)) return formatLintRecord(r);
  switch (r.type) {
    case "message":
      return messageLine(r);
    case "session-start": {
      const fe = r.frontEnd ? ` (front-end pid ${r.frontEnd.pid} uid ${r.frontEnd.uid})` : "";
      return `${clock(r.ts)} s${r.session} session start${fe} → ${r.backend}`;
    }
    case "session-end": {
      const s = r.summary;
      if (!s) return `${clock(r.ts)} s${r.session} session end: ${r.reason}`;
      return `${
        clock(r.ts)
      } s${r.session} session end: ${r.reason}; ${s.messages} messages, ${s.fdsRelayed} fds, ${s.errors} errors, ${
        s.warnings ?? 0
      } warnings, ${s.durationMs} ms`;
    }
    case "error":
    case "warning": {
      const where = r.session !== undefined ? ` s${r.session}` : "";
      return `${clock(r.ts)}${where} ${r.type.toUpperCase()}: ${r.message}`;
    }
    case "device-state":
      return `${clock(r.ts)} s${r.session} device-state ${deviceStateText(r)}`;
    case "proxy":
      return `${clock(r.ts)} proxy ${r.event}${r.listen ? ` on ${r.listen}` : ""}${
        r.backend ? ` → ${r.backend}` : ""
      }`;
    case "restart":
      if (r.event === "step") {
        return `${clock(r.ts)} s${r.session} restart ${r.step} ${r.ok ? "ok" : "FAILED"} ${
          num(r.ms)
        } ms${r.detail ? ` (${r.detail})` : ""}`;
      }
      if (r.event === "done") {
        return `${clock(r.ts)} s${r.session} restart ${
          r.ok ? "done" : `FAILED${r.failedStep ? ` at ${r.failedStep}` : ""}`
        } → ${r.backend}: pause ${num(r.pauseMs)} ms, total ${num(r.totalMs)} ms${
          r.withState ? `, state ${r.stateBytes ?? "?"} bytes` : ", without state"
        }${r.error ? `: ${r.error}` : ""}${r.rolledBack ? ` (rolled back: ${r.rolledBack})` : ""}`;
      }
      return JSON.stringify(r);
    default:
      return JSON.stringify(r);
  }
}
