// Runs the pingpong client against one socket and returns its parsed measurement.

import type { Children } from "./children.ts";

/** What pingpong.c prints (all latencies in µs). */
export interface RttRun {
  n: number;
  fd: boolean;
  request: number;
  /** Fds that came back in replies; n when the relay passes fds both ways. */
  fds_back: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  p999_us: number;
  mean_us: number;
  max_us: number;
}

export const RTT_KEYS = ["p50_us", "p90_us", "p99_us", "p999_us", "mean_us", "max_us"] as const;
export type RttSummary = Record<typeof RTT_KEYS[number], number>;

export interface PingpongArgs {
  bin: string;
  socket: string;
  rounds: number;
  warmup: number;
  fd: boolean;
  /** Sleep between round trips (pingpong --gap-ms): every trip then wakes an idle relay. */
  gapMs?: number;
}

export async function runPingpong(children: Children, a: PingpongArgs): Promise<RttRun> {
  const args = ["--socket", a.socket, "--rounds", `${a.rounds}`, "--warmup", `${a.warmup}`];
  if (a.fd) args.push("--fd");
  if (a.gapMs) args.push("--gap-ms", `${a.gapMs}`);
  // Generous: 1 ms per round trip is 20-40× slower than anything measured so far, so hitting
  // it means a hang, not a slow relay (pingpong also gives up after 5 s without a reply).
  const timeoutMs = 30_000 + (a.rounds + a.warmup) * (1 + (a.gapMs ?? 0));
  const r = await children.run("pingpong", a.bin, args, timeoutMs);
  if (r.timedOut) throw new Error(`pingpong timed out after ${timeoutMs} ms`);
  if (r.code !== 0) throw new Error(`pingpong failed (exit ${r.code}): ${r.stderr || "no output"}`);
  return JSON.parse(r.stdout) as RttRun;
}
