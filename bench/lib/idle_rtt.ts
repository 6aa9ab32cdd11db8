// Round trips that each wake an idle relay: pingpong --gap-ms sleeps between requests, as QEMU's
// switch-over requests reach a relay that has been asleep. Back-to-back round trips keep the
// relay's code and data in the caches; these show what a trip costs when they are cold (the
// proxy's working set — a V8 runtime — is far larger than the C relay's). Information beside the
// goals: the switch-over figure (downtime.ts) is the one judged.

import type { Children } from "./children.ts";
import type { GoalRow } from "./goals.ts";
import type { Endpoint } from "./paths.ts";
import { runPingpong } from "./pingpong.ts";
import { median } from "./stats.ts";

/** Sleep between the round trips, ms: far longer than a CPU stays hot for a task. */
export const IDLE_GAP_MS = 50;
const ROUNDS = 40;
const RUNS = 3;

/** p50 of each run per path (µs), the paths interleaved. */
export async function idleRtt(
  children: Children,
  pingpong: string,
  endpoints: Endpoint[],
  log: (line: string) => void,
): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for (let run = 1; run <= RUNS; run++) {
    for (const ep of endpoints) {
      const r = await runPingpong(children, {
        bin: pingpong,
        socket: ep.socket,
        rounds: ROUNDS,
        warmup: 1,
        fd: false,
        gapMs: IDLE_GAP_MS,
      });
      log(`idle-gap run ${run}/${RUNS} ${ep.name} p50 ${r.p50_us.toFixed(1)} µs`);
      out.set(ep.name, [...(out.get(ep.name) ?? []), r.p50_us]);
    }
  }
  return out;
}

/** Information rows: each relay's added p50 after idle, proxy against the C relay. */
export function idleRttRows(p50s: Map<string, number[]>): GoalRow[] {
  const direct = p50s.get("direct");
  if (!direct) return [];
  const base = median(direct);
  const added = (name: string) => {
    const runs = p50s.get(name);
    return runs ? median(runs) - base : undefined;
  };
  const c = added("c");
  const rows: GoalRow[] = [];
  for (const [name, label] of [["proxy", ""], ["proxyLog", ", --log on"]] as const) {
    const p = added(name);
    if (p === undefined || c === undefined) continue;
    rows.push({
      figure: `added RTT p50 after ${IDLE_GAP_MS} ms idle${label}`,
      measured: `${sign(p)} / ${sign(c)} µs (C relay), direct ${base.toFixed(1)} µs`,
      value: c >= 5 ? `${(p / c).toFixed(2)}×` : "n/a (C relay < 5 µs)",
      goal: "information (cold caches)",
      pass: null,
    });
  }
  return rows;
}

const sign = (v: number) => `${v >= 0 ? "+" : ""}${v.toFixed(1)}`;
