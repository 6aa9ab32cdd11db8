/**
 * The long fuzz of the live relay (`deno task fuzz`): random and mutated traffic from both
 * sides through the proxy subprocess for as long as asked, then a summary — cases run,
 * messages, what each mutation led to, and every failure with the command that replays it.
 *
 * Usage: deno task fuzz [--seconds N] [--seed S] [--case N] [--rate R]
 *   --seconds N  how long to start new cases (default 60)
 *   --seed S     run seed (default: from the clock; printed, so any run can be repeated)
 *   --case N     replay only case N of the seed's run
 *   --rate R     share of messages mutated (default 0.2)
 *
 * Exit code 0 without failures, 1 with, 2 on a bad command line.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type FuzzReport, runLiveFuzz } from "./live_fuzz.ts";

function numberOf(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`run.ts: ${flag} must be a non-negative number, not "${value}"`);
    Deno.exit(2);
  }
  return n;
}

function summary(r: FuzzReport): string {
  const lines = [
    `seed ${r.seed}: ${r.cases} cases, ${r.messages} messages (${r.mutated} mutated, ` +
    `${r.truncations} closes mid-message) in ${(r.elapsedMs / 1000).toFixed(1)} s; ` +
    `proxy peak RSS ${(r.peakRssKiB / 1024).toFixed(1)} MiB`,
    "mutation              relayed  rejected",
  ];
  for (const [name, o] of Object.entries(r.outcomes)) {
    lines.push(
      `${name.padEnd(22)}${String(o.relayed).padStart(7)}${String(o.rejected).padStart(10)}`,
    );
  }
  lines.push(`failures: ${r.failures.length}`);
  // One entry per kind of failure (numbers stripped), with the first case that shows it.
  const kinds = new Map<string, { count: number; first: FuzzReport["failures"][number] }>();
  for (const f of r.failures) {
    const kind = f.what.split("\n")[0].replace(/\d+/g, "N");
    const k = kinds.get(kind);
    if (k) k.count++;
    else kinds.set(kind, { count: 1, first: f });
  }
  for (const [kind, { count, first }] of kinds) {
    lines.push(
      `- ${count} × ${kind}\n  first: case ${first.caseIndex}: ${first.what}\n` +
        `  replay: deno task fuzz --seed ${r.seed} --case ${first.caseIndex}` +
        (first.script.length > 0 ? `\n    ${first.script.join("\n    ")}` : ""),
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    strict: true,
    options: {
      seconds: { type: "string" },
      seed: { type: "string" },
      case: { type: "string" },
      rate: { type: "string" },
    },
  });
  const seed = numberOf(values.seed, "--seed", Date.now() % 2 ** 31) >>> 0;
  const only = values.case === undefined ? undefined : numberOf(values.case, "--case", 0);
  const seconds = numberOf(values.seconds, "--seconds", 60);
  console.log(
    `fuzzing the live relay: seed ${seed}, ${only === undefined ? `${seconds} s` : `case ${only}`}`,
  );
  const report = await runLiveFuzz({
    seconds,
    seed,
    only,
    mutationRate: numberOf(values.rate, "--rate", 0.2),
    log: (line) => console.log(line),
  });
  console.log(summary(report));
  Deno.exit(report.failures.length > 0 ? 1 : 0);
}

export { summary };
