/**
 * Reads what QEMU's `vhost_user_write` trace event recorded: every request QEMU wrote to a
 * vhost-user back-end, in order. Debian's QEMU uses the `log` trace backend, so
 * `-trace enable=vhost_user_write,file=F` writes text lines `vhost_user_write req:N flags:0xF`.
 *
 * With `-msg timestamp=on` (`VmOptions.traceTimestamps`) every line starts with the tracing
 * thread and the wall clock, `11239@1796347288.838709:vhost_user_write req:18 flags:0x9`;
 * {@linkcode parseTimedTrace} reads those lines of any event (the switch-over bench uses
 * {@linkcode SWITCHOVER_TRACE_EVENTS}), and {@linkcode parseVhostUserTrace} still finds the
 * requests in them.
 *
 * @module
 */

// The spec's transcription, not the proxy's catalogue: the harness stays independent of the
// code under test.
import { SPEC_FRONT_END_NAMES } from "../support/spec_names.ts";

/** One request QEMU wrote, as traced. */
export interface TracedRequest {
  /** Request code (front-end → back-end numbering of the upstream spec). */
  code: number;
  /** Upstream name, e.g. `SET_DEVICE_STATE_FD`; `UNKNOWN_<code>` if not in the table. */
  name: string;
  /** Header flags QEMU sent (version 0x1, NEED_REPLY 0x8). */
  flags: number;
}

const TRACE_LINE = /vhost_user_write req:(\d+) flags:0x([0-9a-fA-F]+)/;

/** Parses trace text (lines not from `vhost_user_write` are ignored). */
export function parseVhostUserTrace(text: string): TracedRequest[] {
  const requests: TracedRequest[] = [];
  for (const line of text.split("\n")) {
    const match = line.match(TRACE_LINE);
    if (!match) continue;
    const code = Number(match[1]);
    requests.push({
      code,
      name: SPEC_FRONT_END_NAMES[code] ?? `UNKNOWN_${code}`,
      flags: parseInt(match[2], 16),
    });
  }
  return requests;
}

/**
 * Reads a QEMU trace file written with `-trace enable=vhost_user_write,file=F` (see
 * `VmOptions.traceVhostUser`). QEMU flushes each line, so this works while QEMU runs. With
 * several vhost-user devices the requests of all of them are interleaved.
 *
 * @example
 * ```ts
 * const names = (await readVhostUserTrace(vm.paths.trace!)).map((r) => r.name);
 * assert(names.includes("SET_DEVICE_STATE_FD"));
 * ```
 */
export async function readVhostUserTrace(file: string): Promise<TracedRequest[]> {
  return parseVhostUserTrace(await Deno.readTextFile(file));
}

/**
 * The events the switch-over figure needs (bench/lib/switchover.ts): every vhost-user message
 * QEMU writes and every reply header it reads, its run-state changes and migration states, and
 * the start of an incoming migration's load.
 */
export const SWITCHOVER_TRACE_EVENTS: readonly string[] = [
  "vhost_user_write",
  "vhost_user_read",
  "vm_state_notify",
  "migrate_set_state",
  "loadvm_state_setup",
];

/** One line of a trace written with `-msg timestamp=on` (`VmOptions.traceTimestamps`). */
export interface TimedTraceEvent {
  /** QEMU's thread that traced it. */
  tid: number;
  /** Wall clock (gettimeofday), µs since the epoch: comparable between QEMUs of one host. */
  us: number;
  /** Event name, e.g. `vhost_user_read`. */
  event: string;
  /** The rest of the line, e.g. `req:11 flags:0x5`. */
  args: string;
}

// The log backend's prefix with a timestamp (QEMU 10, trace/log): `11239@1796347288.838709:`.
const TIMED_LINE = /^(\d+)@(\d+)\.(\d{6}):(\w+) ?(.*)$/;

/**
 * Parses the text of a timestamped trace; lines without the `<tid>@<sec>.<usec>:` prefix
 * (a trace without `-msg timestamp=on`, a line still being written) are skipped.
 *
 * @example
 * ```ts
 * const [e] = parseTimedTrace("11239@1796347288.838709:vhost_user_write req:18 flags:0x9\n");
 * // e: { tid: 11239, us: 1796347288838709, event: "vhost_user_write", args: "req:18 flags:0x9" }
 * ```
 */
export function parseTimedTrace(text: string): TimedTraceEvent[] {
  const events: TimedTraceEvent[] = [];
  for (const line of text.split("\n")) {
    const match = line.match(TIMED_LINE);
    if (!match) continue;
    events.push({
      tid: Number(match[1]),
      us: Number(match[2]) * 1_000_000 + Number(match[3]),
      event: match[4],
      args: match[5].trimEnd(),
    });
  }
  return events;
}

/** One vhost-user message in a timed trace: a request QEMU wrote or a reply header it read. */
export interface TimedVhostUserMessage {
  /** `write`: QEMU sent the request; `read`: QEMU read a reply's header. */
  kind: "write" | "read";
  code: number;
  /** Upstream name, e.g. `GET_VRING_BASE`; `UNKNOWN_<code>` if not in the table. */
  name: string;
  /** Header flags (NEED_REPLY 0x8 on a request, REPLY 0x4 on a reply). */
  flags: number;
  tid: number;
  us: number;
}

const MESSAGE_ARGS = /^req:(\d+) flags:0x([0-9a-fA-F]+)/;

/** The event as a vhost-user message, if it is `vhost_user_write` or `vhost_user_read`. */
export function vhostUserMessageOf(event: TimedTraceEvent): TimedVhostUserMessage | undefined {
  const kind = event.event === "vhost_user_write"
    ? "write"
    : event.event === "vhost_user_read"
    ? "read"
    : undefined;
  const match = kind && event.args.match(MESSAGE_ARGS);
  if (!kind || !match) return undefined;
  const code = Number(match[1]);
  return {
    kind,
    code,
    name: SPEC_FRONT_END_NAMES[code] ?? `UNKNOWN_${code}`,
    flags: parseInt(match[2], 16),
    tid: event.tid,
    us: event.us,
  };
}

/** Reads a timestamped trace file (see {@linkcode parseTimedTrace}). */
export async function readTimedTrace(file: string): Promise<TimedTraceEvent[]> {
  return parseTimedTrace(await Deno.readTextFile(file));
}
