// The library's pure entries load with no permission at all: a program that only decodes
// messages or reads logs must not have to grant --allow-ffi (or anything else) to import them.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

/** Runs `source` as a module read from stdin, with no permission and no prompt, from the repo. */
async function runWithoutPermissions(source: string): Promise<Deno.CommandOutput> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--quiet", "-"],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(source));
  await writer.close();
  return await child.output();
}

for (const entry of ["protocol/mod.ts", "log/mod.ts"]) {
  Deno.test(`${entry} imports with no permission`, async () => {
    const out = await runWithoutPermissions(
      `import * as api from "./${entry}";\nconsole.log(Object.keys(api).length);\n`,
    );
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `importing ${entry} needed a permission or failed:\n${stderr}`);
    assert.ok(Number(new TextDecoder().decode(out.stdout).trim()) > 0, `${entry} exports nothing`);
  });
}

Deno.test("protocol/mod.ts decodes what it encodes with no permission", async () => {
  const out = await runWithoutPermissions(`
import * as p from "./protocol/mod.ts";
const { createMessage, decodeMessage, encodeMessage, HEADER_SIZE, NOTHING_NEGOTIATED, readHeader } = p;
const bytes = encodeMessage(createMessage({
  channel: "main",
  sender: "front-end",
  request: "GET_FEATURES",
  payload: { layout: "empty" },
}));
const r = decodeMessage(readHeader(bytes), bytes.subarray(HEADER_SIZE), 0, {
  channel: "main",
  sender: "front-end",
  dialect: "upstream",
  negotiated: NOTHING_NEGOTIATED,
});
console.log(r.ok ? r.message.name : r.error.message);
`);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "GET_FEATURES");
});

Deno.test("mod.ts re-exports the pure entries and the runtime", async () => {
  const mod = await import("../../mod.ts");
  const protocol = await import("../../protocol/mod.ts");
  const log = await import("../../log/mod.ts");
  for (const [name, value] of Object.entries({ ...protocol, ...log })) {
    assert.equal((mod as Record<string, unknown>)[name], value, `mod.ts lacks ${name}`);
  }
  assert.equal(typeof mod.startProxy, "function");
  assert.equal(mod.catalogue, mod.REQUESTS);
});

Deno.test("defaultEngineConfig: the CLI's defaults, only listen and back-end given", async () => {
  const { defaultEngineConfig } = await import("../../mod.ts");
  const c = defaultEngineConfig("/run/proxy.sock", "/run/vfs.sock");
  assert.deepEqual(c, {
    listen: { path: "/run/proxy.sock" },
    backend: "/run/vfs.sock",
    frontDialect: "upstream",
    backDialect: "upstream",
    stuckAfterMs: 5000,
    connectTimeoutMs: 10_000,
    logMessages: true,
    deviceState: {
      mode: "relay",
      buffer: false,
      hash: true,
      hashAlgorithm: "xxh3-128",
      hashBacklogMiB: 256,
      faults: [],
    },
  });
  assert.deepEqual(defaultEngineConfig({ fd: 3 }, "b").listen, { fd: 3 });
  assert.notEqual(defaultEngineConfig("a", "b").deviceState, c.deviceState);
});

/** Source files with doc examples, found by walking the repository (survives files moving). */
function filesWithExamples(dir = ROOT, skip = new Set(["toolchain", "tests", "bench", "out"])) {
  const found: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    if (e.name.startsWith(".") || (dir === ROOT && skip.has(e.name))) continue;
    const path = `${dir}${dir.endsWith("/") ? "" : "/"}${e.name}`;
    if (e.isDirectory) found.push(...filesWithExamples(path, skip));
    else if (e.name.endsWith(".ts") && Deno.readTextFileSync(path).includes("```ts")) {
      found.push(path.slice(ROOT.length));
    }
  }
  return found.sort();
}

async function deno(...args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, output: text };
}

Deno.test("deno doc --lint finds nothing to report on the library's entries", async () => {
  const r = await deno("doc", "--lint", "mod.ts", "protocol/mod.ts", "log/mod.ts");
  assert.equal(r.code, 0, r.output);
});

Deno.test("every doc example type-checks and runs (deno test --doc)", async () => {
  const files = filesWithExamples();
  assert.ok(files.includes("mod.ts") && files.includes("protocol/mod.ts"), files.join(", "));
  const r = await deno("test", "--doc", "-A", "--quiet", "--no-prompt", ...files);
  assert.equal(r.code, 0, r.output);
});
