// `deno task bench`: round-trip latency of direct, C-poll-relay and proxy paths (as shipped,
// and with `--log <file>`), plus the proxy's memory and CPU per message; then the device-state
// stream (state.ts: back-to-back 256 MiB SAVE and LOAD, proxy vs direct, fingerprint on), the
// proxy's memory with idle sessions (lib/sessions.ts) and the switch-over of real QEMU
// migrations (downtime.ts). Each figure is printed at the end as a ratio against its baseline
// measured in the same run, with its goal (issue 12) and a PASS/FAIL verdict (lib/goals.ts).
// `--sections` picks a subset.
//
// BENCH_PROXY_BIN overrides the proxy launcher (default bin/vhost-user-proxy), e.g. to compare
// two builds; it is called with the fixed CLI contract `run --listen S --backend B --quiet`
// (the switch-over section migrates through the rig's own bin/vhost-user-proxy).
//
// Exit codes: 0 all measured and target met (or not evaluated); 1 a path could not be
// started or failed mid-run (e.g. the proxy is not built yet); 2 bad arguments;
// 3 everything ran but the proxy missed a target (latency, CPU, state stream, memory or
//   switch-over).

import { type BenchOptions, parseArgs, type PathName, USAGE, UsageError } from "./lib/args.ts";
import { buildHelpers, type HelperPaths } from "./lib/build.ts";
import { Children, Interrupted } from "./lib/children.ts";
import { measure } from "./lib/measure.ts";
import { type Endpoint, PATH_LABELS, startPath } from "./lib/paths.ts";
import { clockTicksPerSecond } from "./lib/procfs.ts";
import { type GoalRow, goalsTable, loadAverage } from "./lib/goals.ts";
import { latencyTable, memoryText, verdictText } from "./lib/report.ts";
import { toJson, writeJson } from "./lib/results_json.ts";
import { sessionsSection } from "./lib/sessions.ts";
import { IDLE_GAP_MS, idleRtt, idleRttRows } from "./lib/idle_rtt.ts";
import { judge, judgeCpu, LOG_TARGET_RATIO, TARGET_RATIO } from "./lib/verdict.ts";
import { runStateSections, type StateSection } from "./state.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const OUT_DIR = `${ROOT}/out/bench`;

const log = (line: string) => console.error(line);

async function bench(opts: BenchOptions, children: Children, dir: string): Promise<number> {
  log("compiling C helpers…");
  const bins = await buildHelpers(`${OUT_DIR}/bin`);
  const proxyBin = Deno.env.get("BENCH_PROXY_BIN") ?? `${ROOT}/bin/vhost-user-proxy`;
  const codes: number[] = [];
  const goals: GoalRow[] = [];
  const started = performance.now();
  const loadAtStart = loadAverage();
  if (opts.sections.includes("latency")) {
    codes.push(await latencySection(opts, children, dir, bins, proxyBin, goals));
  }
  const stateSections = opts.sections.filter((s): s is StateSection =>
    s === "stream" || s === "downtime"
  );
  if (stateSections.length > 0) {
    codes.push(
      await runStateSections(
        { children, bins, dir, proxyBin, log },
        {
          sections: stateSections,
          mib: opts.stateMib,
          streamRuns: opts.stateRuns,
          streamRounds: opts.stateRounds,
          downtimeRuns: opts.downtimeRuns,
        },
        `${OUT_DIR}/state.json`,
        goals,
      ),
    );
  }
  if (opts.sections.includes("memory")) {
    codes.push(await sessionsSection({ children, bins, dir, proxyBin, log }, goals));
  }
  console.log(
    `
Goals (issue 12), ${new Date().toISOString()}, load average ${loadAtStart} at the ` +
      `start, ${loadAverage()} at the end, ${((performance.now() - started) / 1000).toFixed(0)} s:`,
  );
  console.log(goalsTable(goals));
  const judged = goals.filter((g) => g.pass !== null);
  if (judged.length > 0) {
    const met = judged.filter((g) => g.pass).length;
    const info = goals.length - judged.length;
    console.log(
      `${met} of ${judged.length} goals met${info > 0 ? ` (${info} row(s) not judged: n/a)` : ""}`,
    );
  }
  // A section that could not run outranks a missed target.
  if (codes.includes(1)) return 1;
  return codes.includes(3) || goals.some((g) => g.pass === false) ? 3 : 0;
}

const fmt = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : "–");
const signed = (v: number) => `${v >= 0 ? "+" : ""}${fmt(v)}`;

/** The latency and CPU goals of one proxy path against the C relay. */
function latencyGoals(m: Awaited<ReturnType<typeof measure>>, goals: GoalRow[]): void {
  for (
    const [path, limit, label] of [
      ["proxy", TARGET_RATIO, ""],
      ["proxyLog", LOG_TARGET_RATIO, ", --log on"],
    ] as const
  ) {
    const v = judge(m.results, path, limit);
    for (const c of v.checks) {
      goals.push({
        figure: `added RTT p50, ${c.fd ? "1 fd" : "no fd"}${label}`,
        measured: `${signed(c.proxyAddedP50)} / ${signed(c.cAddedP50)} µs (C relay)`,
        value: c.ratio === null ? "n/a (C relay < 5 µs: noise)" : `${fmt(c.ratio, 2)}×`,
        goal: `≤ ${limit}× the C relay's`,
        pass: c.ratio === null ? null : c.pass,
      });
    }
    for (const c of judgeCpu(m.results, path, limit)) {
      goals.push({
        figure: `CPU per relayed message, ${c.fd ? "1 fd" : "no fd"}${label}`,
        measured: `${fmt(c.proxyUsPerMsg)} / ${fmt(c.cUsPerMsg)} µs (C relay)`,
        value: `${fmt(c.ratio, 2)}×`,
        goal: `≤ ${limit}× the C relay's`,
        pass: c.pass,
      });
    }
  }
}

async function latencySection(
  opts: BenchOptions,
  children: Children,
  dir: string,
  bins: HelperPaths,
  proxyBin: string,
  goals: GoalRow[],
): Promise<number> {
  const endpoints: Endpoint[] = [];
  const startFailures: Partial<Record<PathName, string>> = {};
  const ctx = { children, bins, dir, proxyBin, fdBack: opts.fdBack };
  for (const name of opts.only) {
    log(`starting ${PATH_LABELS[name]}…`);
    try {
      endpoints.push(await startPath(ctx, name));
    } catch (e) {
      if (children.closed) throw new Interrupted();
      startFailures[name] = (e as Error).message;
      log(`could not start ${PATH_LABELS[name]}: ${(e as Error).message}`);
    }
  }

  const m = await measure(children, bins.pingpong, endpoints, opts, clockTicksPerSecond(), log);
  const verdict = judge(m.results);
  const alive = endpoints.filter((ep) => !m.failures[ep.name] && !ep.relay?.exited);
  const idle = await idleRtt(children, bins.pingpong, alive, log);

  console.log(`\n${latencyTable(m, opts)}\n`);
  console.log(verdictText(verdict));
  latencyGoals(m, goals);
  goals.push(...idleRttRows(idle));
  console.log(
    `Round trips after ${IDLE_GAP_MS} ms idle (p50 per run, µs): ${
      [...idle].map(([name, runs]) => `${name} ${runs.map((v) => v.toFixed(1)).join(", ")}`)
        .join("; ")
    }`,
  );
  for (const [name, mem] of Object.entries(m.memory)) {
    if (mem) console.log(memoryText(PATH_LABELS[name as PathName], mem));
  }
  const failures = { ...startFailures, ...m.failures };
  for (const [name, why] of Object.entries(failures)) {
    console.log(`\n${PATH_LABELS[name as PathName].toUpperCase()} FAILED: ${why}`);
  }
  if (failures.proxy && startFailures.proxy) {
    console.log("(the proxy could not start: is it built yet? The numbers above are without it.)");
  }

  const jsonPath = `${OUT_DIR}/latest.json`;
  await writeJson(jsonPath, toJson(opts, m, startFailures, verdict));
  console.log(`\nresults written to ${jsonPath}`);

  if (Object.keys(failures).length > 0) return 1;
  return verdict.pass === false ? 3 : 0;
}

async function main(): Promise<number> {
  let opts: BenchOptions;
  try {
    opts = parseArgs(Deno.args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    if (e.message === "help") {
      console.log(USAGE);
      return 0;
    }
    console.error(`${e.message}\n${USAGE}`);
    return 2;
  }

  const children = new Children();
  const dir = await Deno.makeTempDir({ prefix: "vhost-user-bench-" });
  const cleanup = async () => {
    await children.stopAll();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  // Ctrl-C or a CI timeout must not leave relays or sockets behind.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    Deno.addSignalListener(sig, () => {
      console.error(`\n${sig}: stopping children…`);
      cleanup().finally(() => Deno.exit(130));
    });
  }
  try {
    return await bench(opts, children, dir);
  } catch (e) {
    if (e instanceof Interrupted || children.closed) return 130;
    console.error(`bench failed: ${(e as Error).message}`);
    return 1;
  } finally {
    await cleanup();
  }
}

Deno.exit(await main());
