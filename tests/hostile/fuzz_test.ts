/**
 * The CI-sized fuzz of the live relay (the long run is `deno task fuzz`): 25 s of random and
 * mutated traffic from both sides through the proxy subprocess. The proxy must never crash or
 * hang, must close only the offending session, must forward nothing a strict peer rejects,
 * and its fds must come back to the baseline after every case. The seed is fixed so that CI
 * is repeatable; FUZZ_SEED and FUZZ_SECONDS override it.
 */

import assert from "node:assert/strict";
import { runLiveFuzz } from "../fuzz/live_fuzz.ts";
import { summary } from "../fuzz/run.ts";

Deno.test({
  name: "fuzz: random and mutated traffic through the live relay for 25 s",
  sanitizeOps: false,
  sanitizeResources: false,
  sanitizeExit: false,
  fn: async () => {
    const report = await runLiveFuzz({
      seconds: Number(Deno.env.get("FUZZ_SECONDS") ?? 25),
      seed: Number(Deno.env.get("FUZZ_SEED") ?? 20261125),
    });
    console.log(summary(report));
    assert.ok(report.cases > 50, `only ${report.cases} cases ran`);
    assert.deepEqual(report.failures.map((f) => `case ${f.caseIndex}: ${f.what}`), []);
  },
});
