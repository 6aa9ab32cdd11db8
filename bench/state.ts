// Device-state benches, the `deno task bench` sections after the latency table:
//
// stream   — 256 MiB SET_DEVICE_STATE_FD transfers, 3 SAVEs then 3 LOADs back to back, between
//            state_client (the QEMU side, c/state_client.c) and state_backend (a synthetic
//            back-end with F_DEVICE_STATE, c/state_backend.c): directly, through the C poll
//            relay, and through the proxy in relay mode, which interposes its own pipe and
//            fingerprints every byte (xxh3-128 inline by default; sha256 trailing on its thread
//            and off are printed beside it). Target: proxy ≥ 0.8× direct, and its memory
//            (idle ≤ 64 MiB, peak ≤ 96 MiB). A plain `state_stream write | read` pipe is
//            printed as the ceiling.
// downtime — live migrations of a real QEMU 10 guest through three rotating chains (direct, the
//            C poll relay on each side, a proxy on each side): the switch-over (the vhost-user
//            round trips while the guest is stopped, from QEMU's trace timestamps) against the C
//            relay's, and QEMU's downtime beside it; in downtime.ts.
//
// Runs interleave the paths so drift on the 2-vCPU VM hits both alike; medians are reported.

import { downtimeBench, downtimeGoals, type DowntimeResult, downtimeText } from "./downtime.ts";
import type { HelperPaths } from "./lib/build.ts";
import { type Child, type Children, waitForSocket } from "./lib/children.ts";
import type { GoalRow } from "./lib/goals.ts";
import { readMem, RssSampler } from "./lib/procfs.ts";
import { median } from "./lib/stats.ts";

export const STATE_SECTIONS = ["stream", "downtime"] as const;
export type StateSection = typeof STATE_SECTIONS[number];

/** Options of the device-state sections. */
export interface StateBenchOptions {
  sections: StateSection[];
  /** Size of the synthetic state. */
  mib: number;
  /** Back-to-back transfers per path and direction in one round. */
  streamRuns: number;
  /** Rounds; each visits every path in turn, and the median round is reported. */
  streamRounds: number;
  /** Migrations per path. */
  downtimeRuns: number;
}

export const STREAM_TARGET = 0.8;
/** Issue 12: RSS ≤ 64 MiB idle and ≤ 96 MiB at peak during 256 MiB transfers. */
export const IDLE_RSS_GOAL_MIB = 64;
export const PEAK_RSS_GOAL_MIB = 96;

const HELPER_START_MS = 5_000;
const PROXY_START_MS = 60_000;
const TRANSFER_TIMEOUT_MS = 120_000;

type Direction = "SAVE" | "LOAD";
/**
 * Stream paths: direct; the C poll relay (the pipe passes through to the back-end); the proxy
 * as shipped (fingerprint xxh3-128, inline); with `--state-hash sha256` (the former default,
 * trailing on its thread); with `--state-hash off` (pure splice).
 */
type StreamVariant = "direct" | "c" | "proxy" | "proxySha256" | "proxyNoHash";
const STREAM_VARIANTS: readonly StreamVariant[] = [
  "direct",
  "c",
  "proxy",
  "proxySha256",
  "proxyNoHash",
];
const PROXY_ARGS: Partial<Record<StreamVariant, string[]>> = {
  proxy: [],
  proxySha256: ["--state-hash", "sha256"],
  proxyNoHash: ["--state-hash", "off"],
};

/** One state_client run, as it prints it. */
interface TransferRun {
  direction: Direction;
  bytes: number;
  secs: number;
  mib_s: number;
  ok: boolean;
  check: number;
}

/** A proxy's memory around its transfers, KiB. */
export interface StreamMemory {
  /** VmRSS listening, before its first transfer. */
  idleKiB: number;
  /** Largest VmRSS sampled (every 250 ms) during its timed transfers. */
  peakKiB: number;
  /** VmHWM at the end: the peak over the process's life, start-up included. */
  hwmKiB: number;
}

/** The stream section. */
export interface StreamResult {
  mib: number;
  /** Back-to-back transfers per path and direction in one round. */
  runs: number;
  rounds: number;
  /** `state_stream write | state_stream read`: the pipe alone, no vhost-user. */
  pipeMiBps: number;
  /**
   * MiB/s per path and direction: the median over rounds of each round's back-to-back
   * transfers (all their bytes over all their time, each timed from SET_DEVICE_STATE_FD to
   * CHECK's reply).
   */
  MiBps: Record<StreamVariant, Record<Direction, number>>;
  /** Each round's MiB/s, in order. */
  perRound: Record<StreamVariant, Record<Direction, number[]>>;
  /** Every timed transfer, MiB/s, in order. */
  perRun: Record<StreamVariant, Record<Direction, number[]>>;
  /** Each path / direct. */
  ratios: Record<StreamVariant, Record<Direction, number>>;
  /** The proxies' memory. */
  memory: Partial<Record<StreamVariant, StreamMemory>>;
  /** The target holds for the proxy as shipped (fingerprint on). */
  pass: boolean;
}

export interface StreamContext {
  children: Children;
  bins: HelperPaths;
  dir: string;
  proxyBin: string;
  log: (line: string) => void;
}

/** Starts a state_backend for `name` and returns its socket. */
async function startStateBackend(ctx: StreamContext, name: string, mib: number): Promise<string> {
  const socket = `${ctx.dir}/state-${name}-backend.sock`;
  const child = ctx.children.start(`state_backend (${name})`, ctx.bins.state_backend, [
    "--mib",
    String(mib),
    socket,
  ]);
  await waitForSocket(socket, child, HELPER_START_MS);
  return socket;
}

async function transfer(
  ctx: StreamContext,
  socket: string,
  direction: Direction,
  mib: number,
): Promise<TransferRun> {
  const args = ["--mib", String(mib), ...(direction === "LOAD" ? ["--load"] : []), socket];
  const out = await ctx.children.run(
    "state_client",
    ctx.bins.state_client,
    args,
    TRANSFER_TIMEOUT_MS,
  );
  const line = out.stdout.trim().split("\n").at(-1) ?? "";
  if (out.timedOut) throw new Error(`state_client ${direction} timed out: ${out.stderr}`);
  let run: TransferRun;
  try {
    run = JSON.parse(line) as TransferRun;
  } catch {
    throw new Error(`state_client ${direction} exited ${out.code}: ${out.stderr || line}`);
  }
  if (!run.ok) {
    throw new Error(`state_client ${direction}: transfer failed ${line} ${out.stderr}`);
  }
  return run;
}

/** The bare pipe: how fast the kernel moves the pattern between two processes. */
async function pipeCeiling(ctx: StreamContext, mib: number): Promise<number> {
  const out = await ctx.children.run("state_stream pipe", "/bin/sh", [
    "-c",
    `"$0" write --mib ${mib} | "$0" read --mib ${mib}`,
    ctx.bins.state_stream,
  ], TRANSFER_TIMEOUT_MS);
  const result = JSON.parse(out.stdout.trim()) as { ok: boolean; mib_s: number };
  if (!result.ok) throw new Error(`state_stream pipe failed: ${out.stdout} ${out.stderr}`);
  return result.mib_s;
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The stream section: in each round, per path, `runs` SAVEs back to back, then `runs` LOADs
 * back to back (each a new QEMU-like session, as state_client is one), the paths in turn; the
 * rounds interleave the paths so that the machine's drift (it is shared) hits all of them.
 */
export async function streamBench(
  ctx: StreamContext,
  opts: StateBenchOptions,
): Promise<StreamResult> {
  const { mib, streamRuns, streamRounds } = opts;
  const sockets = {} as Record<StreamVariant, string>;
  const relays: Partial<Record<StreamVariant, Child>> = {};
  for (const variant of STREAM_VARIANTS) {
    const backend = await startStateBackend(ctx, variant, mib);
    if (variant === "direct") {
      sockets[variant] = backend;
      continue;
    }
    sockets[variant] = `${ctx.dir}/state-${variant}.sock`;
    const relay = variant === "c"
      ? ctx.children.start("poll_relay (state)", ctx.bins.poll_relay, [sockets[variant], backend])
      : ctx.children.start(`vhost-user-proxy (state, ${variant})`, ctx.proxyBin, [
        "run",
        ...["--listen", sockets[variant], "--backend", backend],
        "--quiet",
        ...PROXY_ARGS[variant]!,
      ]);
    await waitForSocket(
      sockets[variant],
      relay,
      variant === "c" ? HELPER_START_MS : PROXY_START_MS,
    );
    relays[variant] = relay;
  }
  // The proxies' idle memory, once their start-up (warm-up rehearsal included) is over.
  await settle(1500);
  const memory: Partial<Record<StreamVariant, StreamMemory>> = {};
  for (const variant of STREAM_VARIANTS) {
    const relay = relays[variant];
    if (variant in PROXY_ARGS && relay) {
      memory[variant] = { idleKiB: readMem(relay.pid)?.vmRssKiB ?? NaN, peakKiB: 0, hwmKiB: NaN };
    }
  }

  const pipeRuns: number[] = [];
  const runs = {} as Record<StreamVariant, Record<Direction, number[]>>;
  const perRound = {} as Record<StreamVariant, Record<Direction, number[]>>;
  for (const variant of STREAM_VARIANTS) {
    runs[variant] = { SAVE: [], LOAD: [] };
    perRound[variant] = { SAVE: [], LOAD: [] };
  }
  for (let round = 1; round <= streamRounds; round++) {
    ctx.log(`state stream round ${round}/${streamRounds}…`);
    pipeRuns.push(await pipeCeiling(ctx, mib));
    for (const variant of STREAM_VARIANTS) {
      const relay = relays[variant];
      const sampler = relay && memory[variant] ? new RssSampler(relay.pid) : undefined;
      sampler?.start();
      try {
        for (const direction of ["SAVE", "LOAD"] as const) {
          let bytes = 0, secs = 0;
          for (let run = 1; run <= streamRuns; run++) {
            const r = await transfer(ctx, sockets[variant], direction, mib);
            runs[variant][direction].push(r.mib_s);
            bytes += r.bytes;
            secs += r.secs;
          }
          perRound[variant][direction].push(bytes / (1 << 20) / secs);
        }
      } finally {
        const peak = sampler?.stop();
        const mem = memory[variant];
        if (mem && peak !== undefined) {
          mem.peakKiB = Math.max(mem.peakKiB, peak);
          mem.hwmKiB = (relay && readMem(relay.pid)?.vmHwmKiB) ?? NaN;
        }
      }
    }
  }
  const MiBps = {} as Record<StreamVariant, Record<Direction, number>>;
  for (const v of STREAM_VARIANTS) {
    MiBps[v] = { SAVE: median(perRound[v].SAVE), LOAD: median(perRound[v].LOAD) };
  }
  const ratios = {} as Record<StreamVariant, Record<Direction, number>>;
  for (const v of STREAM_VARIANTS) {
    ratios[v] = {
      SAVE: MiBps[v].SAVE / MiBps.direct.SAVE,
      LOAD: MiBps[v].LOAD / MiBps.direct.LOAD,
    };
  }
  return {
    mib,
    runs: streamRuns,
    rounds: streamRounds,
    pipeMiBps: median(pipeRuns),
    MiBps,
    perRound,
    perRun: runs,
    ratios,
    memory,
    pass: ratios.proxy.SAVE >= STREAM_TARGET && ratios.proxy.LOAD >= STREAM_TARGET,
  };
}

const fixed = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "–");

const STREAM_LABELS: Record<StreamVariant, string> = {
  direct: "direct",
  c: "C poll relay",
  proxy: "proxy (xxh3-128, default)",
  proxySha256: "proxy --state-hash sha256",
  proxyNoHash: "proxy --state-hash off",
};

const mibOf = (kib: number) => `${fixed(kib / 1024)} MiB`;

/** The stream section's lines. */
export function streamText(r: StreamResult): string {
  const line = (path: StreamVariant) =>
    `  ${STREAM_LABELS[path].padEnd(26)} SAVE ${fixed(r.MiBps[path].SAVE).padStart(7)} MiB/s ` +
    `${fixed(r.ratios[path].SAVE, 2)}×   LOAD ${fixed(r.MiBps[path].LOAD).padStart(7)} MiB/s ` +
    `${fixed(r.ratios[path].LOAD, 2)}×   (rounds ${
      r.perRound[path].SAVE.map((x) => fixed(x, 0)).join("/")
    } | ${r.perRound[path].LOAD.map((x) => fixed(x, 0)).join("/")})`;
  const mem = (path: StreamVariant) => {
    const m = r.memory[path];
    return m
      ? `  ${STREAM_LABELS[path].padEnd(26)} VmRSS idle ${mibOf(m.idleKiB)}, peak during its ` +
        `transfers ${mibOf(m.peakKiB)}, VmHWM ${mibOf(m.hwmKiB)}`
      : undefined;
  };
  return [
    `device-state stream: ${r.mib} MiB, ${r.runs} SAVEs then ${r.runs} LOADs back to back per ` +
    `path (each SET_DEVICE_STATE_FD → EOF → CHECK reply), the paths in turn, ${r.rounds} ` +
    `rounds; MiB/s over a round's transfers, median round, × direct`,
    ...STREAM_VARIANTS.map(line),
    `  (bare pipe, no vhost-user: ${fixed(r.pipeMiBps)} MiB/s)`,
    "proxy memory (VmRSS of the proxy process):",
    ...STREAM_VARIANTS.map(mem).filter((x): x is string => x !== undefined),
  ].join("\n");
}

/** The goal rows of the stream section. */
export function streamGoals(r: StreamResult): GoalRow[] {
  const rows: GoalRow[] = [];
  for (const d of ["SAVE", "LOAD"] as const) {
    rows.push({
      figure: `state ${d}, ${r.runs}× ${r.mib} MiB back to back, fingerprint on`,
      measured: `${fixed(r.MiBps.proxy[d], 0)} / ${fixed(r.MiBps.direct[d], 0)} MiB/s (direct)`,
      value: `${fixed(r.ratios.proxy[d], 2)}×`,
      goal: `≥ ${STREAM_TARGET}× direct`,
      pass: r.ratios.proxy[d] >= STREAM_TARGET,
    });
  }
  const m = r.memory.proxy;
  if (m) {
    rows.push({
      figure: "proxy RSS idle (listening)",
      measured: mibOf(m.idleKiB),
      value: mibOf(m.idleKiB),
      goal: `≤ ${IDLE_RSS_GOAL_MIB} MiB`,
      pass: m.idleKiB / 1024 <= IDLE_RSS_GOAL_MIB,
    });
    rows.push({
      figure: `proxy RSS peak during the ${r.mib} MiB transfers`,
      measured: `${mibOf(m.peakKiB)} (VmHWM ${mibOf(m.hwmKiB)})`,
      value: mibOf(m.peakKiB),
      goal: `≤ ${PEAK_RSS_GOAL_MIB} MiB`,
      pass: m.peakKiB / 1024 <= PEAK_RSS_GOAL_MIB,
    });
  }
  return rows;
}

/** What `out/bench/state.json` holds. */
export interface StateBenchJson {
  schema: 1;
  date: string;
  options: StateBenchOptions;
  stream?: StreamResult;
  downtime?: DowntimeResult;
  failures: Partial<Record<StateSection, string>>;
}

/**
 * Runs the selected device-state sections, prints them, writes `jsonPath`, and returns the
 * bench exit code: 1 if a section could not run, 3 if a target was missed, else 0.
 */
export async function runStateSections(
  ctx: StreamContext,
  opts: StateBenchOptions,
  jsonPath: string,
  goals: GoalRow[] = [],
): Promise<number> {
  const json: StateBenchJson = {
    schema: 1,
    date: new Date().toISOString(),
    options: opts,
    failures: {},
  };
  if (opts.sections.includes("stream")) {
    ctx.log("device-state stream bench…");
    try {
      json.stream = await streamBench(ctx, opts);
      console.log(`\n${streamText(json.stream)}`);
      goals.push(...streamGoals(json.stream));
    } catch (e) {
      if (ctx.children.closed) throw e;
      json.failures.stream = (e as Error).message;
      console.log(`\nDEVICE-STATE STREAM FAILED: ${json.failures.stream}`);
    }
  }
  if (opts.sections.includes("downtime")) {
    ctx.log("migration switch-over and downtime bench (real QEMU + virtiofsd)…");
    try {
      json.downtime = await downtimeBench(ctx, opts);
      console.log(`\n${downtimeText(json.downtime)}`);
      goals.push(...downtimeGoals(json.downtime));
    } catch (e) {
      if (ctx.children.closed) throw e;
      json.failures.downtime = (e as Error).message;
      console.log(`\nMIGRATION DOWNTIME FAILED: ${json.failures.downtime}`);
    }
  }
  await Deno.mkdir(jsonPath.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.writeTextFile(jsonPath, JSON.stringify(json, null, 2) + "\n");
  console.log(`\ndevice-state results written to ${jsonPath}`);
  if (Object.keys(json.failures).length > 0) return 1;
  const missed = json.stream?.pass === false || json.downtime?.pass === false;
  return missed ? 3 : 0;
}
