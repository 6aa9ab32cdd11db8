// The downtime section of `deno task bench` (issue 12's switch-over figure): live migrations of a
// real QEMU 10 guest (512 MiB, TCG) with the rust virtiofsd 1.13, three rotating chains —
// directly, with the C poll relay on each side (the cost of the extra hop alone, as in the
// latency section), with a proxy on each side (`run --quiet`, no log) — each destination
// becoming the next source (one boot per path), the paths in turn in every run. The guest
// works as in the rig: a writer appends a line every 50 ms through one fd, a file is
// held open, 100 files are looked up.
//
// The goal figure is the switch-over: the sum of the vhost-user round trips while the guest is
// stopped, source and destination, from QEMU's own trace timestamps (lib/switchover.ts says
// what counts). Goals: the proxy's median ≤ 1.3× the C relay's, and its slowest run ≤ 2× the
// C relay's slowest. QEMU's `downtime` is printed beside it with its spread, as information:
// under TCG on two cores its last RAM pass swings it by 100 ms and more on any path.

import {
  describeMigration,
  MigrationRig,
  sequenceGaps,
  type Side,
  START_HOLDER,
  START_SEQUENCE_WRITER,
  STOP_SEQUENCE_WRITER,
} from "../tests/e2e/_migration_rig.ts";
import { readTimedTrace, SWITCHOVER_TRACE_EVENTS } from "../tests/harness/vhost_user_trace.ts";
import type { GoalRow } from "./lib/goals.ts";
import { median } from "./lib/stats.ts";
import {
  longestRoundTrips,
  type RoundTrip,
  type Switchover,
  switchoverOf,
  type SwitchoverSide,
} from "./lib/switchover.ts";
import type { StateBenchOptions, StreamContext } from "./state.ts";

/** Issue 12: the proxy's median switch-over ≤ 1.3× the C relay's median. */
export const SWITCHOVER_MEDIAN_GOAL = 1.3;
/** Issue 12: the proxy's slowest switch-over ≤ 2× the C relay's slowest. */
export const SWITCHOVER_SLOWEST_GOAL = 2;

/** QEMU straight to virtiofsd, through the C poll relay, through the proxy. */
export type DowntimePath = "direct" | "c" | "proxy";
export const DOWNTIME_PATHS: readonly DowntimePath[] = ["direct", "c", "proxy"];

const LOOKED_UP_FILES = 100;
/** How long the traces may take to show a finished switch-over after the migration returns. */
const TRACE_WAIT_MS = 5_000;

/** One migration. */
export interface DowntimeRun {
  run: number;
  /** QEMU's `downtime` and `total-time`. */
  downtimeMs: number;
  totalMs: number;
  switchover: Switchover;
  /**
   * From the start of the destination side (virtiofsd, then its relay, then QEMU) to its first
   * switch-over request: how young its relay was (a proxy's start-up rehearsal, cold code).
   */
  destinationAgeMs: number;
}

/** The guest's writer at the end: its lines on the host and any gap in them. */
export interface WriterCheck {
  lines: number;
  problems: string[];
}

/** The downtime section. */
export interface DowntimeResult {
  runs: number;
  perRun: Record<DowntimePath, DowntimeRun[]>;
  /** Switch-over sums per run, ms, in order. */
  switchoverMs: Record<DowntimePath, number[]>;
  downtimeMs: Record<DowntimePath, number[]>;
  writers: Partial<Record<DowntimePath, WriterCheck>>;
  /** proxy / C relay, medians of the switch-over. */
  medianRatio: number;
  /** proxy / C relay, slowest runs of the switch-over. */
  slowestRatio: number;
  /** Both switch-over goals met. */
  pass: boolean;
}

const perPath = <T>(make: (p: DowntimePath) => T) =>
  Object.fromEntries(DOWNTIME_PATHS.map((p) => [p, make(p)])) as Record<DowntimePath, T>;

/** The guest's work during the migrations (per path: the three guests share one directory). */
async function startGuestWork(rig: MigrationRig, path: DowntimePath, side: Side): Promise<void> {
  // An open file gives virtiofsd a state with handles, as a real guest has.
  await side.vm.agent.check(START_HOLDER);
  await side.vm.agent.check(
    START_SEQUENCE_WRITER.replaceAll("/mnt/seq.txt", `/mnt/seq-${path}.txt`),
  );
  const dir = `${rig.share}/looked-up-${path}`;
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 1; i <= LOOKED_UP_FILES; i++) await Deno.writeTextFile(`${dir}/f${i}`, `${i}\n`);
  await side.vm.agent.check(`ls -l /mnt/looked-up-${path} >/dev/null`, { timeoutMs: 30_000 });
}

async function stopWriter(rig: MigrationRig, path: DowntimePath, side: Side): Promise<WriterCheck> {
  await side.vm.agent.check(STOP_SEQUENCE_WRITER, { timeoutMs: 30_000 });
  const text = await Deno.readTextFile(`${rig.share}/seq-${path}.txt`);
  return { lines: text.split("\n").filter((l) => l !== "").length, problems: sequenceGaps(text) };
}

/** The switch-over of the migration just done, once both traces show its end. */
async function readSwitchover(src: Side, dst: Side): Promise<Switchover> {
  const deadline = Date.now() + TRACE_WAIT_MS;
  while (true) {
    try {
      return switchoverOf(
        await readTimedTrace(src.vm.paths.trace!),
        await readTimedTrace(dst.vm.paths.trace!),
      );
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Three rotating migration chains, direct, through C relays, through proxies. */
export async function downtimeBench(
  ctx: StreamContext,
  opts: StateBenchOptions,
): Promise<DowntimeResult> {
  await using rig = await MigrationRig.create("bench-downtime");
  const spec = (path: DowntimePath, hop: number, incoming: boolean) => ({
    name: `${path}-${hop}`,
    backend: "rust" as const,
    proxies: path === "direct" ? [] : [[]],
    relayBin: path === "c" ? ctx.bins.poll_relay : undefined,
    incoming,
    // Like the latency and stream sections: the bare relay (`--quiet`, no JSONL log).
    proxyLog: false,
    traceEvents: [...SWITCHOVER_TRACE_EVENTS],
    traceTimestamps: true,
  });
  ctx.log("booting the direct, the C-relayed and the proxied guest…");
  const booted = await Promise.allSettled(
    DOWNTIME_PATHS.map((p) => rig.startSide(spec(p, 0, false))),
  );
  const failed = booted.find((b): b is PromiseRejectedResult => b.status === "rejected");
  if (failed) throw failed.reason;
  const current = perPath((p) =>
    (booted[DOWNTIME_PATHS.indexOf(p)] as PromiseFulfilledResult<Side>).value
  );
  for (const p of DOWNTIME_PATHS) await startGuestWork(rig, p, current[p]);

  const perRun = perPath<DowntimeRun[]>(() => []);
  for (let run = 1; run <= opts.downtimeRuns; run++) {
    // Rotate which path goes first, so none always follows another's clean-up.
    const order = DOWNTIME_PATHS.map((_, i) => DOWNTIME_PATHS[(i + run) % DOWNTIME_PATHS.length]);
    for (const path of order) {
      const src = current[path];
      const startedAt = Date.now();
      const dst = await rig.startSide(spec(path, run, true));
      const result = await rig.migrate(src, dst);
      if (result.status !== "completed" || result.downtimeMs === undefined) {
        throw new Error(`${path} migration ${run} failed: ${describeMigration(result)}`);
      }
      await dst.vm.agent.waitReady({ timeoutMs: 30_000 });
      const switchover = await readSwitchover(src, dst);
      const r: DowntimeRun = {
        run,
        downtimeMs: result.downtimeMs,
        totalMs: result.totalTimeMs ?? NaN,
        switchover,
        destinationAgeMs: (switchover.destination.roundTrips[0]?.atUs ?? NaN) / 1000 - startedAt,
      };
      perRun[path].push(r);
      ctx.log(`switch-over ${path} run ${run}: ${runLine(r)}`);
      await src.stop();
      current[path] = dst;
    }
  }
  const writers: Partial<Record<DowntimePath, WriterCheck>> = {};
  for (const p of DOWNTIME_PATHS) {
    writers[p] = await stopWriter(rig, p, current[p]).catch((e) => ({
      lines: 0,
      problems: [`could not stop the writer: ${(e as Error).message}`],
    }));
  }
  const switchoverMs = perPath((p) => perRun[p].map((r) => r.switchover.sumUs / 1000));
  const medianRatio = median(switchoverMs.proxy) / median(switchoverMs.c);
  const slowestRatio = Math.max(...switchoverMs.proxy) / Math.max(...switchoverMs.c);
  return {
    runs: opts.downtimeRuns,
    perRun,
    switchoverMs,
    downtimeMs: perPath((p) => perRun[p].map((r) => r.downtimeMs)),
    writers,
    medianRatio,
    slowestRatio,
    pass: medianRatio <= SWITCHOVER_MEDIAN_GOAL && slowestRatio <= SWITCHOVER_SLOWEST_GOAL,
  };
}

const fixed = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "–");
const ms = (us: number) => `${fixed(us / 1000, 2)} ms`;

const LABELS: Record<DowntimePath, string> = { direct: "direct", c: "C relay", proxy: "proxy" };

const tripText = (t: RoundTrip) => `${t.name} (${t.side}) ${ms(t.us)}`;

function runLine(r: DowntimeRun): string {
  const s = r.switchover;
  const stream = s.source.streamUs === undefined ? "" : `, SAVE read ${ms(s.source.streamUs)}`;
  return `switch-over ${ms(s.sumUs)} (source ${ms(s.source.sumUs)}, destination ` +
    `${ms(s.destination.sumUs)}), longest ${s.dominant ? tripText(s.dominant) : "–"}${stream}; ` +
    `traced stop ${ms(s.windowUs)}, downtime ${r.downtimeMs} ms, total ${r.totalMs} ms`;
}

/** min / median / max of `xs`, as text. */
function spread(xs: number[], digits: number): string {
  if (xs.length === 0) return "–";
  return [Math.min(...xs), median(xs), Math.max(...xs)].map((x) => fixed(x, digits)).join(" / ");
}

/** `median [min–max]` of `xs` in ms, as text. */
function range(xs: number[]): string {
  if (xs.length === 0) return "–";
  return `${fixed(median(xs), 0)} [${Math.min(...xs)}–${Math.max(...xs)}]`;
}

type RequestKey = `${SwitchoverSide} ${string}`;

/** Per run, the time of each request (side and name) summed over its round trips, µs. */
function perRequest(runs: DowntimeRun[]): Map<RequestKey, number[]> {
  const out = new Map<RequestKey, number[]>();
  runs.forEach((r, i) => {
    const trips = [...r.switchover.source.roundTrips, ...r.switchover.destination.roundTrips];
    for (const t of trips) {
      const key: RequestKey = `${t.side} ${t.name}`;
      const xs = out.get(key) ?? Array(runs.length).fill(0);
      xs[i] += t.us;
      out.set(key, xs);
    }
  });
  return out;
}

/** The proxy runs whose switch-over alone misses the median goal, with what dominated them. */
function outlierLines(r: DowntimeResult): string[] {
  const limit = SWITCHOVER_MEDIAN_GOAL * median(r.switchoverMs.c) * 1000;
  const cPerRequest = perRequest(r.perRun.c);
  const outliers = r.perRun.proxy.filter((run) => run.switchover.sumUs > limit);
  if (outliers.length === 0) return [`  proxy outliers (switch-over > ${ms(limit)}): none`];
  return [
    `  proxy outliers (switch-over > ${SWITCHOVER_MEDIAN_GOAL}× the C relay's median, ${
      ms(limit)
    }):`,
    ...outliers.map((run) => {
      const top = longestRoundTrips(run.switchover, 3).map((t) => {
        const c = cPerRequest.get(`${t.side} ${t.name}`);
        const share = fixed((100 * t.us) / run.switchover.sumUs, 0);
        return `${tripText(t)} = ${share}% (C relay median ${c ? ms(median(c)) : "–"})`;
      });
      const stream = run.switchover.source.streamUs;
      return `    run ${run.run}: ${ms(run.switchover.sumUs)}; longest ${top.join(", ")}; SAVE ` +
        `read ${stream === undefined ? "–" : ms(stream)}; destination side started ` +
        `${fixed(run.destinationAgeMs, 0)} ms before its first request`;
    }),
  ];
}

/** The downtime section's lines. */
export function downtimeText(r: DowntimeResult): string {
  const sums = (p: DowntimePath) =>
    `  ${LABELS[p].padEnd(8)} switch-over min/median/max ${spread(r.switchoverMs[p], 2)} ms ` +
    `[${r.switchoverMs[p].map((x) => fixed(x, 2)).join(", ")}]`;
  const downtimes = (p: DowntimePath) =>
    `  ${LABELS[p].padEnd(8)} downtime min/median/max ${spread(r.downtimeMs[p], 0)} ms ` +
    `[${r.downtimeMs[p].join(", ")}]`;
  const requests = DOWNTIME_PATHS.map((p) => perRequest(r.perRun[p]));
  const keys = [...new Set(requests.flatMap((m) => [...m.keys()]))];
  const requestLines = keys.map((k) =>
    `    ${k.padEnd(42)} ${
      requests.map((m) => fixed(median(m.get(k) ?? [0]), 0).padStart(6)).join(" / ")
    }`
  );
  const streams = (side: "source" | "destination") =>
    DOWNTIME_PATHS.map((p) =>
      fixed(median(r.perRun[p].map((x) => x.switchover[side].streamUs ?? NaN)), 0)
    ).join(" / ");
  const writer = (p: DowntimePath) => {
    const w = r.writers[p];
    if (!w) return `${p} –`;
    return `${p} ${w.lines} lines, ${w.problems.length === 0 ? "no gaps" : w.problems.join("; ")}`;
  };
  return [
    `switch-over and downtime: live migrations of a 512 MiB TCG guest (QEMU 10, rust virtiofsd ` +
    `1.13; a writer appending every 50 ms, a file held open, ${LOOKED_UP_FILES} files looked up), ` +
    `${r.runs} per path, the paths in turn, each destination the next source`,
    "switch-over = the vhost-user round trips while the guest is stopped, source + destination " +
    "(QEMU's trace timestamps, write → reply header):",
    ...DOWNTIME_PATHS.map(sums),
    `  proxy / C relay: median ${fixed(r.medianRatio, 2)}× (goal ≤ ${SWITCHOVER_MEDIAN_GOAL}×), ` +
    `slowest ${fixed(r.slowestRatio, 2)}× (goal ≤ ${SWITCHOVER_SLOWEST_GOAL}×)`,
    "QEMU's downtime (information: its last RAM pass under TCG swings it on every path):",
    ...DOWNTIME_PATHS.map(downtimes),
    "per request, median over runs of its round trips in a run, µs (direct / C relay / proxy):",
    ...requestLines,
    `  state through the pipe (SET_DEVICE_STATE_FD reply → CHECK request), median µs: source ` +
    `(SAVE, QEMU reads to EOF) ${streams("source")}; destination (LOAD) ${streams("destination")}`,
    "runs:",
    ...DOWNTIME_PATHS.flatMap((p) =>
      r.perRun[p].map((run) => `  ${LABELS[p].padEnd(8)} run ${run.run}: ${runLine(run)}`)
    ),
    ...outlierLines(r),
    `writers at the end: ${DOWNTIME_PATHS.map(writer).join("; ")}`,
  ].join("\n");
}

/** The goal rows of the downtime section (and QEMU's downtime as information). */
export function downtimeGoals(r: DowntimeResult): GoalRow[] {
  const med = (p: DowntimePath) => median(r.switchoverMs[p]);
  const max = (p: DowntimePath) => Math.max(...r.switchoverMs[p]);
  return [
    {
      figure: `switch-over round trips, median of ${r.runs} migrations`,
      measured: `${fixed(med("proxy"), 2)} / ${fixed(med("c"), 2)} ms (C relay)`,
      value: `${fixed(r.medianRatio, 2)}×`,
      goal: `≤ ${SWITCHOVER_MEDIAN_GOAL}× the C relay's`,
      pass: Number.isFinite(r.medianRatio) ? r.medianRatio <= SWITCHOVER_MEDIAN_GOAL : null,
    },
    {
      figure: `switch-over round trips, slowest of ${r.runs} migrations`,
      measured: `${fixed(max("proxy"), 2)} / ${fixed(max("c"), 2)} ms (C relay)`,
      value: `${fixed(r.slowestRatio, 2)}×`,
      goal: `≤ ${SWITCHOVER_SLOWEST_GOAL}× the C relay's`,
      pass: Number.isFinite(r.slowestRatio) ? r.slowestRatio <= SWITCHOVER_SLOWEST_GOAL : null,
    },
    {
      figure: `migration downtime (QEMU's), median [min–max] of ${r.runs}`,
      measured: `${range(r.downtimeMs.proxy)} / ${range(r.downtimeMs.c)} ms (C relay)`,
      value: `direct ${range(r.downtimeMs.direct)} ms`,
      goal: "information (TCG noise)",
      pass: null,
    },
  ];
}
