/**
 * The drop-in back-end program (`bin/vhost-user-proxy-virtiofsd`): launched the way QEMU's
 * back-end conventions and libvirt launch virtiofsd, with the real virtiofsd behind it.
 */

import assert from "node:assert/strict";
import {
  Child,
  peerPath,
  requirePeers,
  settlesWithin,
  startVm,
  TestDir,
  waitFor,
} from "../harness/mod.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const WRAPPER = `${ROOT}bin/vhost-user-proxy-virtiofsd`;
const TAG = "myfs";

async function capabilities(binary: string, proxyArgs = ""): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(WRAPPER, {
    args: ["--print-capabilities"],
    env: { VUP_BACKEND_BINARY: binary, VUP_PROXY_ARGS: proxyArgs },
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("drop-in: --print-capabilities is the real back-end's, plus migrate-precopy when emulating", async () => {
  await requirePeers("virtiofsd", "virtiofsd-c");
  const rust = await capabilities(peerPath("virtiofsd"));
  const direct = JSON.parse(
    new TextDecoder().decode(
      (await new Deno.Command(peerPath("virtiofsd"), { args: ["--print-capabilities"] }).output())
        .stdout,
    ),
  );
  assert.deepEqual(rust, direct);
  assert.equal(rust.type, "fs");
  const c = await capabilities(peerPath("virtiofsd-c"), "--device-state emulate");
  assert.ok((c.features as string[]).includes("migrate-precopy"));
});

/** Starts the wrapper as libvirt would, with its log in `dir`. */
function launch(dir: TestDir, name: string, argv: string[], log: string): Child {
  return new Child({
    name,
    cmd: argv[0],
    args: argv.slice(1),
    stdoutPath: dir.join(`${name}.out`),
    stderrPath: dir.join(`${name}.err`),
    env: {
      VUP_BACKEND_BINARY: peerPath("virtiofsd"),
      VUP_PROXY_ARGS: `--quiet --log ${log}`,
    },
  });
}

async function bootAndUse(
  dir: TestDir,
  socket: string,
  share: string,
  name: string,
): Promise<void> {
  const vm = await startVm({ dir: dir.path, name, fs: [{ socketPath: socket, tag: TAG }] });
  try {
    await vm.agent.check(`echo ${name} >/mnt/${name}.txt`);
    assert.equal(await Deno.readTextFile(`${share}/${name}.txt`), `${name}\n`);
  } finally {
    await vm.stop();
  }
}

function names(log: string): string[] {
  return Deno.readTextFileSync(log).trim().split("\n").map((l) => JSON.parse(l))
    .filter((r) => r.type === "message").map((r) => r.name);
}

Deno.test("drop-in: --socket-path, a guest works through it, and it exits when virtiofsd does", async () => {
  await requirePeers("virtiofsd", "qemu");
  await using dir = await TestDir.create("dropin-path");
  const share = await dir.mkdir("share");
  const socket = dir.join("fs.sock");
  const log = dir.join("proxy.jsonl");
  const wrapper = launch(dir, "wrapper", [
    WRAPPER,
    `--socket-path=${socket}`,
    "--shared-dir",
    share,
  ], log);
  try {
    await waitFor(async () => (await Deno.stat(socket).catch(() => undefined))?.isSocket, {
      timeoutMs: 15_000,
      what: "the drop-in's socket",
    });
    await bootAndUse(dir, socket, share, "viapath");
    // virtiofsd serves one connection and exits when QEMU leaves; the drop-in follows it.
    assert.ok(await settlesWithin(wrapper.exited, 10_000), await wrapper.stderrText());
    assert.equal(wrapper.status?.code, 0, await wrapper.stderrText());
    const seen = names(log);
    assert.ok(seen.includes("GET_FEATURES") && seen.includes("SET_VRING_KICK"), seen.join(" "));
    assert.equal(await wrapper.stdoutText(), "", "stdout stays the back-end's (empty here)");
  } finally {
    await wrapper.stop();
  }
});

Deno.test("drop-in: --fd=N with a listening socket created by the launcher (libvirt style)", async () => {
  await requirePeers("virtiofsd", "qemu");
  await using dir = await TestDir.create("dropin-fd");
  const share = await dir.mkdir("share");
  const socket = dir.join("fs.sock");
  const log = dir.join("proxy.jsonl");
  // Python stands in for libvirt: bind + listen, then exec the back-end with the fd inherited.
  const launcher = [
    "python3",
    "-c",
    `import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); s.listen(1); os.set_inheritable(s.fileno(), True)
os.execv(sys.argv[2], [sys.argv[2], "--fd=%d" % s.fileno(), "--shared-dir", sys.argv[3]])`,
    socket,
    WRAPPER,
    share,
  ];
  const wrapper = launch(dir, "wrapper", launcher, log);
  try {
    await waitFor(async () => (await Deno.stat(socket).catch(() => undefined))?.isSocket, {
      timeoutMs: 15_000,
      what: "the launcher's socket",
    });
    await bootAndUse(dir, socket, share, "viafd");
    assert.ok(await settlesWithin(wrapper.exited, 10_000), await wrapper.stderrText());
    assert.ok(names(log).includes("SET_MEM_TABLE") || names(log).includes("ADD_MEM_REG"));
  } finally {
    await wrapper.stop();
  }
});

Deno.test("drop-in: SIGTERM stops the proxy and the real back-end promptly", async () => {
  await requirePeers("virtiofsd");
  await using dir = await TestDir.create("dropin-term");
  const share = await dir.mkdir("share");
  const socket = dir.join("fs.sock");
  const wrapper = launch(dir, "wrapper", [
    WRAPPER,
    `--socket-path=${socket}`,
    "--shared-dir",
    share,
  ], dir.join("p.jsonl"));
  await waitFor(async () => (await Deno.stat(socket).catch(() => undefined))?.isSocket, {
    timeoutMs: 15_000,
    what: "the drop-in's socket",
  });
  const started = performance.now();
  Deno.kill(wrapper.pid, "SIGTERM");
  assert.ok(await settlesWithin(wrapper.exited, 5000), "exited within 5 s of SIGTERM");
  console.log(`SIGTERM to exit: ${Math.round(performance.now() - started)} ms`);
  assert.equal(wrapper.status?.code, 0);
  const left = new TextDecoder().decode(
    (await new Deno.Command("pgrep", { args: ["-f", share] }).output()).stdout,
  ).trim();
  assert.equal(left, "", "no virtiofsd left behind");
});
