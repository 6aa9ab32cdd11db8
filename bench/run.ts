// `deno task bench`: round-trip latency of direct, C-poll-relay and proxy paths, plus the
// proxy's memory and CPU per message, checked against the target in ffi-notes §3; then the
// device-state sections (state.ts): state-stream throughput and migration downtime, proxy vs
// direct. `--sections` picks a subset.
//
// BENCH_PROXY_BIN overrides the proxy launcher (default bin/vhost-user-proxy), e.g. to compare
// two builds; it is called with the fixed CLI contract `run --listen S --backend B --quiet`.
//
// Exit codes: 0 all measured and target met (or not evaluated); 1 a path could not be
// started or failed mid-run (e.g. the proxy is not built yet); 2 bad arguments;
// 3 everything ran but the proxy missed a target (latency, state stream or downtime).

import { type BenchOptions, parseArgs, type PathName, USAGE, UsageError } from "./lib/args.ts";
import { buildHelpers, type HelperPaths } from "./lib/build.ts";
import { Children, Interrupted } from "./lib/children.ts";
import { measure } from "./lib/measure.ts";
import { type Endpoint, PATH_LABELS, startPath } from "./lib/paths.ts";
import { clockTicksPerSecond } from "./lib/procfs.ts";
import { latencyTable, memoryText, verdictText } from "./lib/report.ts";
import { toJson, writeJson } from "./lib/results_json.ts";
import { judge } from "./lib/verdict.ts";
import { runStateSections, type StateSection } from "./state.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const OUT_DIR = `${ROOT}/out/bench`;

const log = (line: string) => console.error(line);

async function bench(opts: BenchOptions, children: Children, dir: string): Promise<number> {
  log("compiling C helpers…");
  const bins = await buildHelpers(`${OUT_DIR}/bin`);
  const proxyBin = Deno.env.get("BENCH_PROXY_BIN") ?? `${ROOT}/bin/vhost-user-proxy`;
  const codes: number[] = [];
  if (opts.sections.includes("latency")) {
    codes.push(await latencySection(opts, children, dir, bins, proxyBin));
  }
  if (opts.sections.some((s) => s !== "latency")) {
    codes.push(
      await runStateSections({ children, bins, dir, proxyBin, log }, {
        sections: opts.sections.filter((s): s is StateSection => s !== "latency"),
        mib: opts.stateMib,
        streamRuns: opts.stateRuns,
        downtimeRuns: opts.downtimeRuns,
      }, `${OUT_DIR}/state.json`),
    );
  }
  // A section that could not run outranks a missed target.
  return codes.includes(1) ? 1 : codes.includes(3) ? 3 : 0;
}

async function latencySection(
  opts: BenchOptions,
  children: Children,
  dir: string,
  bins: HelperPaths,
  proxyBin: string,
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

  console.log(`\n${latencyTable(m, opts)}\n`);
  console.log(verdictText(verdict));
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
