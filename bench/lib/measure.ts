// The measurement loop: every run visits every (fd mode, path) once, so slow drift on the VM
// (other tenants, frequency changes) spreads over all paths instead of biasing whichever path
// would otherwise have run last.

import type { BenchOptions, PathName } from "./args.ts";
import { type Children, Interrupted } from "./children.ts";
import type { Endpoint } from "./paths.ts";
import { RTT_KEYS, type RttRun, type RttSummary, runPingpong } from "./pingpong.ts";
import { type MemSample, readCpuTicks, readMem, RssSampler } from "./procfs.ts";
import { medianOf } from "./stats.ts";

export interface PathResult {
  path: PathName;
  fd: boolean;
  runs: RttRun[];
  /** Median over runs of each per-run percentile. */
  summary: RttSummary;
  /** False if replies brought back a different number of fds than the back-end attached. */
  fdsBackOk: boolean;
  /** CPU time (user + system, all threads) of the relay per relayed message, µs. */
  relayCpuUsPerMsg?: number;
}

export interface RelayMemory {
  /** Listening, before any load. */
  idle: MemSample | null;
  /** Largest VmRSS sampled during load, KiB. */
  loadMaxRssKiB: number;
  /** After the last run, still running: VmHWM is the peak over the whole bench. */
  after: MemSample | null;
}

export interface Measurement {
  results: PathResult[];
  /** Paths that broke during the runs, with the reason. */
  failures: Partial<Record<PathName, string>>;
  memory: Partial<Record<PathName, RelayMemory>>;
}

interface Accumulator {
  runs: RttRun[];
  cpuTicks: number;
  messages: number;
}

/** Why the relay is gone, if it is: its exit status and last output. */
async function relayExit(ep: Endpoint): Promise<string> {
  if (!ep.relay?.exited) return "";
  const { code, signal } = await ep.relay.status;
  const output = ep.relay.output.trim();
  return `\n${ep.relay.name} exited (${signal ?? `code ${code}`})` + (output ? `:\n${output}` : "");
}

export async function measure(
  children: Children,
  pingpongBin: string,
  endpoints: Endpoint[],
  opts: BenchOptions,
  ticksPerSecond: number,
  progress: (line: string) => void,
): Promise<Measurement> {
  const acc = new Map<string, Accumulator>();
  const failures: Partial<Record<PathName, string>> = {};
  const memory: Partial<Record<PathName, RelayMemory>> = {};
  for (const ep of endpoints) {
    if (ep.relay) memory[ep.name] = { idle: readMem(ep.relay.pid), loadMaxRssKiB: 0, after: null };
  }

  for (let run = 1; run <= opts.runs; run++) {
    for (const fd of [false, true]) {
      for (const ep of endpoints) {
        if (failures[ep.name]) continue;
        const key = `${ep.name}/${fd}`;
        const a = acc.get(key) ?? { runs: [], cpuTicks: 0, messages: 0 };
        acc.set(key, a);
        const pid = ep.relay?.pid;
        const sampler = pid === undefined ? undefined : new RssSampler(pid);
        const cpu0 = pid === undefined ? null : readCpuTicks(pid);
        sampler?.start();
        try {
          const r = await runPingpong(children, {
            bin: pingpongBin,
            socket: ep.socket,
            rounds: opts.rounds,
            warmup: opts.warmup,
            fd,
          });
          a.runs.push(r);
          progress(
            `run ${run}/${opts.runs} ${ep.name.padEnd(6)} fd=${fd ? 1 : 0}  ` +
              `p50 ${r.p50_us.toFixed(1)} µs  p99 ${r.p99_us.toFixed(1)} µs`,
          );
        } catch (e) {
          // A pingpong killed by Ctrl-C is not the path's fault: stop, report nothing.
          if (children.closed) throw new Interrupted();
          failures[ep.name] = (e as Error).message + await relayExit(ep);
          progress(`run ${run}/${opts.runs} ${ep.name} fd=${fd ? 1 : 0}  FAILED`);
          continue;
        } finally {
          const maxRss = sampler?.stop() ?? 0;
          const mem = memory[ep.name];
          if (mem) mem.loadMaxRssKiB = Math.max(mem.loadMaxRssKiB, maxRss);
        }
        const cpu1 = pid === undefined ? null : readCpuTicks(pid);
        if (cpu0 !== null && cpu1 !== null) {
          a.cpuTicks += cpu1 - cpu0;
          // A round trip is two relayed messages (request and reply); warm-up ones count too,
          // because the CPU counters cannot tell them apart.
          a.messages += 2 * (opts.rounds + opts.warmup);
        }
      }
    }
  }

  for (const ep of endpoints) {
    const mem = memory[ep.name];
    if (mem && ep.relay) mem.after = readMem(ep.relay.pid);
  }

  const results: PathResult[] = [];
  for (const fd of [false, true]) {
    for (const ep of endpoints) {
      const a = acc.get(`${ep.name}/${fd}`);
      if (!a || a.runs.length === 0 || failures[ep.name]) continue;
      results.push({
        path: ep.name,
        fd,
        runs: a.runs,
        summary: medianOf(a.runs, RTT_KEYS),
        fdsBackOk: a.runs.every((r) => r.fds_back === (fd && opts.fdBack ? r.n : 0)),
        relayCpuUsPerMsg: a.messages > 0
          ? a.cpuTicks / ticksPerSecond * 1e6 / a.messages
          : undefined,
      });
    }
  }
  return { results, failures, memory };
}
