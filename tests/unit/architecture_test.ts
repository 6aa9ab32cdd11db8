/**
 * The folders are the layers, and every import points down (issue 11): a test, so that CI fails
 * on an upward or circular import. Reads the import statements of every module under the layer
 * folders; `import type` counts too, since a type is a dependency as well.
 *
 *   ffi/, protocol/      know nothing above them (protocol does not even know ffi/, and its
 *                        tests, beside it, run with no permission)
 *   log/                 records, their human form, sinks, offline tools: protocol/, ffi/
 *   device_state/        the state transfer: log/, protocol/, ffi/
 *   relay/               framing, sessions, the engine, restarts: everything below
 *   cli/, cli.ts, mod.ts the command line and the library's face: anything
 */

import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";

const ROOT = normalize(new URL("../..", import.meta.url).pathname);

/** What each layer may import, besides itself. */
const MAY_IMPORT: Record<string, readonly string[]> = {
  ffi: [],
  protocol: [],
  log: ["protocol", "ffi"],
  device_state: ["log", "protocol", "ffi"],
  relay: ["device_state", "log", "protocol", "ffi"],
  cli: ["relay", "device_state", "log", "protocol", "ffi"],
};

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^"';]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)|new URL\(\s*["'](\.{1,2}\/[^"']+\.ts)["']/g;

function modules(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(join(ROOT, dir))) {
      const p = join(dir, e.name);
      if (e.isDirectory) walk(p);
      else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(p);
    }
  };
  for (const layer of Object.keys(MAY_IMPORT)) walk(layer);
  return out.sort();
}

function importsOf(file: string): string[] {
  const text = Deno.readTextFileSync(join(ROOT, file));
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = m[1] ?? m[2] ?? m[3];
    out.push(relative(ROOT, normalize(join(ROOT, dirname(file), spec))));
  }
  return out;
}

const layerOf = (file: string) => file.split("/")[0];

Deno.test("architecture: every import between the layer folders points down", () => {
  const upward: string[] = [];
  for (const file of modules()) {
    const from = layerOf(file);
    for (const target of importsOf(file)) {
      const to = layerOf(target);
      if (to === from || !(to in MAY_IMPORT)) continue;
      if (!MAY_IMPORT[from].includes(to)) upward.push(`${file} → ${target}`);
    }
  }
  assert.deepEqual(upward, [], `imports that point up:\n${upward.join("\n")}`);
});

Deno.test("architecture: no circular imports between modules", () => {
  const graph = new Map(modules().map((f) => [f, importsOf(f)]));
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (f: string) => {
    state.set(f, "open");
    path.push(f);
    for (const t of graph.get(f) ?? []) {
      if (!graph.has(t)) continue;
      if (state.get(t) === "open") cycles.push([...path.slice(path.indexOf(t)), t].join(" → "));
      else if (!state.has(t)) visit(t);
    }
    path.pop();
    state.set(f, "done");
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f);
  assert.deepEqual(cycles, [], `circular imports:\n${cycles.join("\n")}`);
});

Deno.test("architecture: protocol/ and the offline log tools import without any permission", async () => {
  for (const entry of ["protocol/mod.ts", "log/mod.ts"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--quiet", "--no-config", "--no-lock", "-"],
      cwd: ROOT,
      stdin: "piped",
      stderr: "piped",
      stdout: "piped",
    }).spawn();
    const w = out.stdin.getWriter();
    await w.write(
      new TextEncoder().encode(
        `import * as m from "./${entry}"; console.log(Object.keys(m).length);`,
      ),
    );
    await w.close();
    const r = await out.output();
    assert.equal(r.code, 0, `${entry} needs a permission: ${new TextDecoder().decode(r.stderr)}`);
  }
});

Deno.test("architecture: protocol/'s own tests pass with no permission (deno test protocol/)", async () => {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--no-prompt", "--quiet", "protocol/"],
    cwd: ROOT,
    stderr: "piped",
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, `deno test protocol/ failed without permissions:\n${text.slice(-2000)}`);
  assert.match(text, /\b[1-9]\d* passed\b/, "protocol/ has tests beside its code");
});
