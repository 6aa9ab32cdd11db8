// The switch-over figure of issue 12: what the vhost-user round trips cost while the guest is
// stopped, from QEMU's own timestamps (`-msg timestamp=on` with the trace events of
// SWITCHOVER_TRACE_EVENTS, tests/harness/vhost_user_trace.ts).
//
// A round trip is a request QEMU wrote (`vhost_user_write`, traced once the request is on the
// socket) up to the header of its reply (`vhost_user_read`, traced once the header is read):
// the time QEMU waits for the back-end, and what a relay in between adds to. A request without
// a reply (SET_VRING_CALL, SET_VRING_KICK… without NEED_REPLY) counts zero: QEMU does not wait
// for it, and its send is QEMU's own work, the same on every path.
//
// The windows (seen in QEMU 10.0's traces, one vhost-user-fs device):
//   source       `vm_state_notify running 0 … (finish-migrate)` → its `migrate_set_state new
//                state completed`: ring stop (SET_VRING_ENABLE 0, GET_VRING_BASE), then in the
//                device's section SET_DEVICE_STATE_FD(SAVE), QEMU reading the state to EOF,
//                CHECK_DEVICE_STATE.
//   destination  `loadvm_state_setup` → its `migrate_set_state new state completed`: the
//                device's section (SET_DEVICE_STATE_FD(LOAD), QEMU writing the state,
//                CHECK_DEVICE_STATE), then the ring start (memory, rings, SET_VRING_ENABLE 1).
//                The ring start runs in vm_state_notify's callbacks, after `vm_state_notify
//                running 1` is traced and before the vCPUs resume, so the window ends at
//                `completed`, not at `running 1`. Nothing vhost-user happens on the destination
//                before the source has stopped (its device section comes after the stop).
// The time QEMU spends moving the state through the pipe, from SET_DEVICE_STATE_FD's reply to
// CHECK_DEVICE_STATE's request, is not a round trip; it is kept beside them (`streamUs`): a
// proxy that interposes its own pipe adds there on a SAVE.

import {
  type TimedTraceEvent,
  type TimedVhostUserMessage,
  vhostUserMessageOf,
} from "../../tests/harness/vhost_user_trace.ts";

export type SwitchoverSide = "source" | "destination";

/** One request QEMU waited for. */
export interface RoundTrip {
  side: SwitchoverSide;
  /** Upstream name, e.g. `GET_VRING_BASE`. */
  name: string;
  code: number;
  /** When QEMU had written it, µs wall clock. */
  atUs: number;
  /** Write to the reply's header, µs. */
  us: number;
}

/** One side's part of a switch-over. */
export interface SideSwitchover {
  side: SwitchoverSide;
  /** The window, µs wall clock. */
  startUs: number;
  endUs: number;
  /** In order. */
  roundTrips: RoundTrip[];
  /** Sum of the round trips, µs. */
  sumUs: number;
  /** Requests in the window QEMU did not wait for. */
  oneWay: number;
  /** SET_DEVICE_STATE_FD's reply → CHECK_DEVICE_STATE's request, µs (absent without both). */
  streamUs?: number;
}

/** One migration's switch-over, both sides. */
export interface Switchover {
  source: SideSwitchover;
  destination: SideSwitchover;
  /** Both sides' round trips, µs: the figure of the goal. */
  sumUs: number;
  /** The source's stop → the destination's `completed`, µs (one host, one wall clock). */
  windowUs: number;
  /** The longest round trip of the two sides. */
  dominant: RoundTrip | undefined;
}

const SET_DEVICE_STATE_FD = 42;
const CHECK_DEVICE_STATE = 43;

const isStop = (e: TimedTraceEvent) =>
  e.event === "vm_state_notify" && /^running 0\b.*\(finish-migrate\)/.test(e.args);
const isLoadStart = (e: TimedTraceEvent) => e.event === "loadvm_state_setup";
const isEnd = (e: TimedTraceEvent) =>
  e.event === "migrate_set_state" && /^new state (completed|failed|cancelled)\b/.test(e.args);

/**
 * The events of the last window that starts where `isStart` holds and ends at the next final
 * migration state (a side is a destination once, then perhaps a source, in a rotating chain).
 */
function lastWindow(
  events: TimedTraceEvent[],
  isStart: (e: TimedTraceEvent) => boolean,
  what: string,
): TimedTraceEvent[] {
  const start = events.findLastIndex(isStart);
  if (start < 0) {
    throw new Error(`Cannot find the switch-over in the ${what} trace: no ${what} start`);
  }
  const end = events.findIndex((e, i) => i > start && isEnd(e));
  if (end < 0) {
    throw new Error(`Cannot find the switch-over in the ${what} trace: no final migration state`);
  }
  return events.slice(start, end + 1);
}

/**
 * Pairs each reply header with the latest unanswered request of the same code (QEMU waits for
 * each reply before its next request on a device's socket, so in practice the one before it).
 */
export function sideSwitchover(side: SwitchoverSide, window: TimedTraceEvent[]): SideSwitchover {
  const messages = window.map(vhostUserMessageOf).filter((m): m is TimedVhostUserMessage =>
    m !== undefined
  );
  const pending = new Map<number, TimedVhostUserMessage[]>();
  const roundTrips: RoundTrip[] = [];
  let writes = 0;
  let stateFdReplyUs: number | undefined;
  let checkWriteUs: number | undefined;
  for (const m of messages) {
    if (m.kind === "write") {
      writes++;
      pending.set(m.code, [...(pending.get(m.code) ?? []), m]);
      if (m.code === CHECK_DEVICE_STATE) checkWriteUs ??= m.us;
      continue;
    }
    const request = pending.get(m.code)?.pop();
    if (!request) continue;
    roundTrips.push({
      side,
      name: request.name,
      code: m.code,
      atUs: request.us,
      us: m.us - request.us,
    });
    if (m.code === SET_DEVICE_STATE_FD) stateFdReplyUs ??= m.us;
  }
  return {
    side,
    startUs: window[0].us,
    endUs: window[window.length - 1].us,
    roundTrips,
    sumUs: roundTrips.reduce((sum, r) => sum + r.us, 0),
    oneWay: writes - roundTrips.length,
    ...(stateFdReplyUs !== undefined && checkWriteUs !== undefined
      ? { streamUs: checkWriteUs - stateFdReplyUs }
      : {}),
  };
}

/**
 * The switch-over of the last migration out of `source` into `destination`, from their
 * timestamped traces. Throws if a trace lacks its window (not timestamped, or not complete yet).
 */
export function switchoverOf(
  source: TimedTraceEvent[],
  destination: TimedTraceEvent[],
): Switchover {
  const src = sideSwitchover("source", lastWindow(source, isStop, "source"));
  const dst = sideSwitchover("destination", lastWindow(destination, isLoadStart, "destination"));
  const all = [...src.roundTrips, ...dst.roundTrips];
  return {
    source: src,
    destination: dst,
    sumUs: src.sumUs + dst.sumUs,
    windowUs: dst.endUs - src.startUs,
    dominant: all.reduce<RoundTrip | undefined>((a, b) => (a && a.us >= b.us ? a : b), undefined),
  };
}

/** The round trips of a switch-over, longest first. */
export function longestRoundTrips(s: Switchover, n: number): RoundTrip[] {
  return [...s.source.roundTrips, ...s.destination.roundTrips].sort((a, b) => b.us - a.us)
    .slice(0, n);
}
