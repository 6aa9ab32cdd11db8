// The issue-12 goals as the bench prints them: one row per figure, with what it was measured
// against in the same run, the goal and a verdict. Every section adds its rows; run.ts prints
// them together at the end (and a later section, e.g. the switch-over, only adds rows).

/** One figure checked against its goal. */
export interface GoalRow {
  /** What was measured, e.g. "added RTT p50, no fd". */
  figure: string;
  /** The figure and its baseline, as text ("+54.1 / +31.0 µs"). */
  measured: string;
  /** The ratio or value the goal is about, as text ("1.75×", "81.2 MiB"). */
  value: string;
  /** The goal, as text ("≤ 1.3× the C relay's"). */
  goal: string;
  /** null: could not be judged (a baseline missing or pure noise). */
  pass: boolean | null;
}

export const verdictWord = (pass: boolean | null): string =>
  pass === null ? "n/a" : pass ? "PASS" : "FAIL";

/** The rows as an aligned table. */
export function goalsTable(rows: GoalRow[]): string {
  const head = ["figure", "measured (proxy / baseline)", "value", "goal", "verdict"];
  const all = [
    head,
    ...rows.map((r) => [r.figure, r.measured, r.value, r.goal, verdictWord(r.pass)]),
  ];
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()).join("\n");
}

/** Load of the machine, for the record of a run (the bench shares 2 cores with others). */
export function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}
