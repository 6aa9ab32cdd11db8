/**
 * The README's first command is checked in the suite: `deno task demo` (what
 * `bash scripts/demo.sh` runs after the set-up) migrates a guest with open files through two
 * proxies and explains a rehearsed failure, checking every step itself; here it must exit 0 and
 * show the two verdicts. Needs `scripts/setup_peers.sh`; fails without.
 */

import assert from "node:assert/strict";

const ROOT = new URL("../..", import.meta.url).pathname;

Deno.test("demo: the README's main job runs from start to end (migration, then an explained failure)", async () => {
  const started = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "demo"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const seconds = Math.round((performance.now() - started) / 100) / 10;
  assert.equal(out.code, 0, `the demo failed after ${seconds} s:\n${text.slice(-4000)}`);
  assert.match(text, /Verdict: OK/, "the clean migration is explained as OK");
  assert.match(text, /FAILED at CHECK_DEVICE_STATE on the destination/, "the rehearsed failure");
  console.log(`demo passed in ${seconds} s`);
});
