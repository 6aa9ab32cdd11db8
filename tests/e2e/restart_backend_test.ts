/**
 * Restarting virtiofsd under a running guest, with its state (issue 13): QEMU 10 keeps its one
 * connection to the proxy, `ctl restart-backend` swaps virtiofsd 1.13 for a new process (once for
 * a copy of the binary at another path: an upgrade), and the guest's open fds, its appending
 * writer and the files it looked up carry on. Needs `scripts/setup_peers.sh`; fails without.
 *
 * Run: `deno test -A tests/e2e/restart_backend_test.ts`
 */

import assert from "node:assert/strict";
import {
  Child,
  peerPath,
  startVirtiofsd,
  startVm,
  TestDir,
  type Virtiofsd,
  waitFor,
} from "../harness/mod.ts";
import {
  holderRoundTrip,
  lineCount,
  MigrationRig,
  PROXY_BIN,
  sequenceGaps,
  START_HOLDER,
  START_SEQUENCE_WRITER,
  STOP_SEQUENCE_WRITER,
  TAG,
} from "./_migration_rig.ts";
import type { LogRecord, RestartRecord } from "../../log/record.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

async function ctl(
  control: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(PROXY_BIN, {
    args: ["ctl", control, ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/**
 * The drop-in as libvirt starts it (virtiofsd's command line, proxy options in VUP_PROXY_ARGS),
 * once its control socket is there.
 */
async function startDropIn(
  dir: TestDir,
  control: string,
  virtiofsdArgs: string[],
  proxyArgs: string,
): Promise<Child> {
  const wrapper = new Child({
    name: "dropin",
    cmd: `${ROOT}bin/vhost-user-proxy-virtiofsd`,
    args: virtiofsdArgs,
    stdoutPath: dir.join("dropin.out"),
    stderrPath: dir.join("dropin.err"),
    env: { VUP_BACKEND_BINARY: peerPath("virtiofsd"), VUP_PROXY_ARGS: proxyArgs },
  });
  try {
    await waitFor(async () => (await Deno.stat(control).catch(() => undefined))?.isSocket, {
      timeoutMs: 30_000,
      what: "the drop-in's control socket",
      detail: () => wrapper.stderrText(),
    });
  } catch (e) {
    await wrapper.stop();
    throw e;
  }
  return wrapper;
}

/** An upgrade: the same virtiofsd, installed at another path (a wrapper to a copied binary). */
async function copiedVirtiofsd(dir: string): Promise<string> {
  const wrapper = await Deno.readTextFile("/var/cache/vhost-user-proxy/peers/bin/virtiofsd");
  const root = /ROOT='([^']+)'/.exec(wrapper)?.[1];
  assert.ok(root, `cannot read the virtiofsd wrapper: ${wrapper}`);
  const copy = `${dir}/virtiofsd-upgraded`;
  await Deno.copyFile(`${root}/usr/libexec/virtiofsd`, copy);
  await Deno.chmod(copy, 0o755);
  const script = `${dir}/virtiofsd-upgraded.sh`;
  await Deno.writeTextFile(script, wrapper.replace(`"$ROOT/usr/libexec/virtiofsd"`, `"${copy}"`));
  await Deno.chmod(script, 0o755);
  return script;
}

Deno.test("restart-backend: virtiofsd restarted three times (once upgraded) under a guest with open files", async () => {
  await using rig = await MigrationRig.create("restart");
  const control = rig.dir.join("control.sock");
  const src = await rig.startSide({
    name: "src",
    backend: "rust",
    proxies: [["--control", control]],
  });
  const files = `${rig.share}/looked-up`;
  await Deno.mkdir(files);
  for (let i = 0; i < 100; i++) await Deno.writeTextFile(`${files}/f${i}`, `file ${i}\n`);
  const agent = src.vm.agent;
  await agent.check(START_HOLDER);
  assert.equal(await agent.check(holderRoundTrip("before")), "before\n");
  assert.equal(
    (await agent.check("cat /mnt/looked-up/f* | wc -l")).trim(),
    "100",
    "100 files looked up",
  );
  await agent.check(START_SEQUENCE_WRITER);
  const seqPath = `${rig.share}/seq.txt`;
  await waitFor(async () => (await lineCount(seqPath)) >= 10 || undefined, {
    what: "the writer's first 10 lines",
    timeoutMs: 20_000,
  });

  const status = await ctl(control, ["status"]);
  assert.equal(status.code, 0, status.stderr);
  console.log(status.stdout);
  assert.match(status.stdout, /DEVICE_STATE/);
  assert.match(status.stdout, /restart: possible/);

  const upgraded = await copiedVirtiofsd(rig.dir.path);
  const olds: Virtiofsd[] = [src.virtiofsd];
  const pauses: number[] = [];
  for (let round = 1; round <= 3; round++) {
    const next = await startVirtiofsd({
      name: `vfs-${round}`,
      socketPath: rig.dir.join(`vfs-${round}.sock`),
      sharedDir: rig.share,
      logDir: rig.dir.path,
      ...(round === 2 ? { binary: upgraded } : {}),
    });
    const before = await lineCount(seqPath);
    const r = await ctl(control, ["restart-backend", "--backend", next.socketPath]);
    console.log(`restart ${round}: ${r.stdout.trim()} ${r.stderr.trim()}`);
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /with its state \(\d+ bytes\): the guest paused [\d.]+ ms/);
    pauses.push(Number(/paused ([\d.]+) ms/.exec(r.stdout)![1]));
    // The old virtiofsd is let go: it exits once its connection is closed.
    const old = olds[olds.length - 1];
    const exited = await Promise.race([
      old.exited,
      new Promise<undefined>((res) => setTimeout(() => res(undefined), 10_000)),
    ]);
    assert.ok(exited, `the old virtiofsd ${old.name} is gone`);
    olds.push(next);
    // The guest goes on: the writer appends through its old fd, the held fds read and write.
    await waitFor(async () => (await lineCount(seqPath)) >= before + 5 || undefined, {
      what: `5 more lines from the writer after restart ${round}`,
      timeoutMs: 30_000,
    });
    assert.equal(
      await agent.check(holderRoundTrip(`after${round}`)),
      `after${round}\n`,
      `the held fds work after restart ${round}`,
    );
  }
  const stopped = (await agent.check(STOP_SEQUENCE_WRITER)).trim();
  assert.match(stopped, /^\d+$/, `the writer reported a failed write: ${stopped}`);
  assert.deepEqual(sequenceGaps(await Deno.readTextFile(seqPath)), [], "no gap, no duplicate");
  assert.equal(await lineCount(seqPath), Number(stopped));
  assert.equal(
    (await agent.check("cat /mnt/looked-up/f* | wc -l")).trim(),
    "100",
    "the looked-up files read back",
  );
  assert.equal(
    await Deno.readTextFile(`${rig.share}/held.txt`),
    "before\nafter1\nafter2\nafter3\n",
  );
  const records: LogRecord[] = await src.frontProxy.records();
  const done = records.filter((r): r is RestartRecord =>
    r.type === "restart" && r.event === "done"
  );
  assert.equal(done.length, 3);
  assert.ok(done.every((d) => d.ok && d.withState && (d.stateBytes ?? 0) > 0));
  console.log(`pauses the guest saw: ${pauses.join(", ")} ms; writer ${stopped} lines`);
  for (const o of olds.slice(1)) await o.stop().catch(() => {});
});

Deno.test("restart-backend in drop-in mode: the proxy starts the new virtiofsd itself, then an upgraded one", async () => {
  await using dir = await TestDir.create("restart-dropin");
  const share = await dir.mkdir("share");
  const socket = dir.join("fs.sock");
  const control = dir.join("control.sock");
  const log = dir.join("proxy.jsonl");
  const wrapper = await startDropIn(dir, control, [
    `--socket-path=${socket}`,
    `--shared-dir=${share}`,
    "--migration-mode=find-paths",
    "--migration-on-error=abort",
  ], `--quiet --log ${log} --control ${control}`);
  try {
    await using vm = await startVm({
      dir: dir.path,
      name: "g",
      fs: [{ socketPath: socket, tag: TAG }],
    });
    await vm.agent.check(START_HOLDER);
    assert.equal(await vm.agent.check(holderRoundTrip("one")), "one\n");
    const first = await ctl(control, ["status", "--json"]);
    assert.equal(first.code, 0, first.stderr);
    const pid0 = JSON.parse(first.stdout).backendPid as number;
    assert.ok(pid0 > 0);

    const same = await ctl(control, ["restart-backend"]);
    assert.equal(same.code, 0, `${same.stdout}${same.stderr}`);
    assert.match(same.stdout, /with its state .* the guest paused [\d.]+ ms/);
    assert.equal(await vm.agent.check(holderRoundTrip("two")), "two\n");

    const upgraded = await copiedVirtiofsd(dir.path);
    const up = await ctl(control, ["restart-backend", "--binary", upgraded, "--json"]);
    assert.equal(up.code, 0, `${up.stdout}${up.stderr}`);
    const upJson = JSON.parse(up.stdout);
    assert.equal(upJson.binary, upgraded);
    assert.equal(await vm.agent.check(holderRoundTrip("three")), "three\n");
    console.log(`drop-in restarts: ${same.stdout.trim()} | upgraded pause ${upJson.pauseMs} ms`);
    // The first virtiofsd is gone; the wrapper lives on with the upgraded one.
    await waitFor(async () => {
      try {
        await Deno.stat(`/proc/${pid0}`);
        return undefined;
      } catch {
        return true;
      }
    }, { what: `virtiofsd ${pid0} to exit`, timeoutMs: 10_000 });
    assert.equal(wrapper.status, undefined, "the drop-in still runs");
    const bad = await ctl(control, ["restart-backend", "--binary", "/nonexistent/virtiofsd"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /failed at step "start".*nothing was changed/);
    assert.equal(await vm.agent.check(holderRoundTrip("four")), "four\n");
    assert.equal(await Deno.readTextFile(`${share}/held.txt`), "one\ntwo\nthree\nfour\n");
  } finally {
    await wrapper.stop();
  }
});

Deno.test("--restart-on-exit: virtiofsd killed with SIGKILL; QEMU and the guest stay up, and after a remount the share works", async () => {
  await using dir = await TestDir.create("restart-on-exit");
  const share = await dir.mkdir("share");
  const socket = dir.join("fs.sock");
  const control = dir.join("control.sock");
  const log = dir.join("proxy.jsonl");
  const wrapper = await startDropIn(
    dir,
    control,
    [`--socket-path=${socket}`, `--shared-dir=${share}`],
    `--quiet --log ${log} --control ${control} --restart-on-exit`,
  );
  try {
    await using vm = await startVm({
      dir: dir.path,
      name: "g",
      fs: [{ socketPath: socket, tag: TAG }],
    });
    await vm.agent.check("echo before >/mnt/before.txt");
    const status = JSON.parse((await ctl(control, ["status", "--json"])).stdout);
    const pid = status.backendPid as number;
    Deno.kill(pid, "SIGKILL");
    const records = () =>
      Deno.readTextFileSync(log).trim().split("\n").map((l) => JSON.parse(l) as LogRecord);
    const done = await waitFor(
      () => records().find((r): r is RestartRecord => r.type === "restart" && r.event === "done"),
      {
        what: "the reconnect after the kill",
        timeoutMs: 30_000,
        detail: () => wrapper.stderrText(),
      },
    );
    assert.equal(done.ok, true, JSON.stringify(done));
    assert.equal(done.withState, false);
    assert.ok(records().some((r) => r.type === "restart" && r.event === "backend-lost"));
    assert.equal(vm.child.status, undefined, "QEMU is still running");
    assert.equal(wrapper.status, undefined, "the drop-in is still running");
    // The new virtiofsd never saw this mount's FUSE_INIT: remount, then the share works again.
    const remount = await vm.agent.run(
      "umount -l /mnt; mount -t virtiofs myfs /mnt && cat /mnt/before.txt && echo after >/mnt/after.txt",
      { timeoutMs: 30_000 },
    );
    assert.equal(remount.code, 0, JSON.stringify(remount));
    assert.match(remount.stdout, /before/);
    assert.equal(await Deno.readTextFile(`${share}/after.txt`), "after\n");
    const after = JSON.parse((await ctl(control, ["status", "--json"])).stdout);
    assert.notEqual(after.backendPid, pid, "a new virtiofsd serves");
  } finally {
    await wrapper.stop();
  }
});
