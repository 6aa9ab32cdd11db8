/**
 * The whole test suite: unit tests, then end-to-end tests with real QEMU, virtiofsd and DPDK.
 * Prints Deno's own report, then a plain `N passed, N failed` line (what CI reads), counted from
 * the JUnit report so that it is the real result of every test case.
 *
 * Usage: deno task test [-- <deno test filter args / paths>]
 *
 * @module
 */

const root = new URL("..", import.meta.url).pathname;
const outDir = `${root}out`;
Deno.mkdirSync(outDir, { recursive: true });
const junit = `${outDir}/junit.xml`;
try {
  Deno.removeSync(junit);
} catch {
  // first run
}

const paths = Deno.args.length > 0
  ? Deno.args
  : ["protocol", "tests/unit", "tests/hostile", "tests/e2e"];
const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", "--no-prompt", `--junit-path=${junit}`, ...paths],
  cwd: root,
  stdout: "inherit",
  stderr: "inherit",
}).spawn();
const status = await child.status;

let passed = 0;
let failed = 0;
try {
  const xml = Deno.readTextFileSync(junit);
  for (const m of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const body = m[2] ?? "";
    if (/<(failure|error)\b/.test(body)) failed++;
    else if (!/<skipped\b/.test(body)) passed++;
  }
} catch (e) {
  console.error(`Cannot read the JUnit report at ${junit}: ${e instanceof Error ? e.message : e}`);
}
// A crash before any report (type error, missing file) must not look like success.
if (!status.success && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(failed > 0 || !status.success ? 1 : 0);
