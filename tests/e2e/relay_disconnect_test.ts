/**
 * A peer dies mid-session (issue 4): the proxy must pass the disconnect on to the other side at
 * once, stay up, release everything the session held, and serve the next QEMU. Real peers: QEMU
 * with the busybox guest and the rust virtiofsd, each killed with SIGKILL (no goodbye message).
 * Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/relay_disconnect_test.ts`
 */

import assert from "node:assert/strict";
import {
  settlesWithin,
  socketExists,
  startVirtiofsd,
  startVm,
  tail,
  TestDir,
  type Vm,
  waitFor,
} from "../harness/mod.ts";
import { assertFdsBackToBaseline, isSessionEnd, startProxyProcess } from "./_proxy.ts";

const TAG = "myfs";
/**
 * How soon after the kill the proxy must have ended the session. The kernel reports the EOF at
 * once and the proxy polls, so this is generous for a loaded 2-core machine.
 */
const PROMPT_MS = 3000;

/** Guest script: a background writer that keeps FUSE requests flowing until the share dies. */
const START_BUSY_WRITER =
  "(while true; do date >>/mnt/busy.txt; sleep 0.1; done) </dev/null >/dev/null 2>&1 &";

Deno.test("disconnect: virtiofsd killed mid-session; proxy hangs up on QEMU, stays up, serves a new QEMU", async () => {
  await using dir = await TestDir.create("kill-backend");
  const share = await dir.mkdir("share");
  const backendPath = dir.join("vfs.sock");
  await using firstBackend = await startVirtiofsd({
    name: "virtiofsd-1",
    socketPath: backendPath,
    sharedDir: share,
    logDir: dir.path,
  });
  await using proxy = await startProxyProcess({
    dir: dir.path,
    listenPath: dir.join("front.sock"),
    backendPath,
  });
  const baselineFds = proxy.openFds();

  await using firstVm = await startVm({
    name: "vm1",
    dir: dir.path,
    fs: [{ socketPath: proxy.listenPath, tag: TAG }],
  });
  await firstVm.agent.check("echo 'from the first guest' >/mnt/first.txt");
  await firstVm.agent.check(START_BUSY_WRITER);
  await waitFor(async () => (await fileSize(`${share}/busy.txt`)) > 0 || undefined, {
    what: "the guest's busy writer to reach the share",
    timeoutMs: 10_000,
  });

  const killedAt = Date.now();
  await firstBackend.child.stop({ signal: "SIGKILL" });
  const end = await proxy.waitForRecord(isSessionEnd(1), {
    what: "session 1 to end after virtiofsd was killed",
    timeoutMs: 15_000,
  });
  const endAfterMs = Date.parse(end.ts) - killedAt;
  console.log(`session 1 ended ${endAfterMs} ms after SIGKILL: ${end.reason}`);
  assert.equal(end.closedBy, "back-end", end.reason);
  assert.ok(endAfterMs <= PROMPT_MS, `the session ended ${endAfterMs} ms after the kill`);

  // QEMU saw its vhost-user socket close: its chardev says "disconnected".
  const chardev = await waitForChardevDisconnected(firstVm, "fs0-chr");
  console.log(`QEMU's chardev after the kill: ${chardev}`);
  console.log(`QEMU stderr after the kill:\n${tail(await firstVm.stderrLog(), 5) || "(empty)"}`);

  assert.ok(proxy.running, "the proxy survived the back-end's death");
  assert.ok(await socketExists(proxy.listenPath), "the proxy still listens");
  await firstVm.stop();

  // Same proxy, same --backend path, new back-end and new QEMU.
  await using secondBackend = await startVirtiofsd({
    name: "virtiofsd-2",
    socketPath: backendPath,
    sharedDir: share,
    logDir: dir.path,
  });
  await using secondVm = await startVm({
    name: "vm2",
    dir: dir.path,
    fs: [{ socketPath: proxy.listenPath, tag: TAG }],
  });
  assert.equal(await secondVm.agent.check("cat /mnt/first.txt"), "from the first guest\n");
  await secondVm.agent.check("echo 'from the second guest' >/mnt/second.txt");
  assert.equal(await Deno.readTextFile(`${share}/second.txt`), "from the second guest\n");

  await secondVm.stop();
  const secondEnd = await proxy.waitForRecord(isSessionEnd(2), { what: "session 2 to end" });
  assert.equal(secondEnd.closedBy, "front-end", secondEnd.reason);
  assert.equal(secondEnd.summary.errors, 0, secondEnd.reason);
  assert.equal((await secondBackend.exited).code, 0);
  await assertFdsBackToBaseline(proxy, baselineFds);
});

Deno.test("disconnect: QEMU killed mid-session; virtiofsd sees EOF and exits, proxy stays up", async () => {
  await using dir = await TestDir.create("kill-qemu");
  const share = await dir.mkdir("share");
  await using vfsd = await startVirtiofsd({
    socketPath: dir.join("vfs.sock"),
    sharedDir: share,
    logDir: dir.path,
  });
  await using proxy = await startProxyProcess({
    dir: dir.path,
    listenPath: dir.join("front.sock"),
    backendPath: vfsd.socketPath,
  });
  const baselineFds = proxy.openFds();
  await using vm = await startVm({
    dir: dir.path,
    fs: [{ socketPath: proxy.listenPath, tag: TAG }],
  });
  await vm.agent.check(START_BUSY_WRITER);
  await waitFor(async () => (await fileSize(`${share}/busy.txt`)) > 0 || undefined, {
    what: "the guest's busy writer to reach the share",
    timeoutMs: 10_000,
  });

  const killedAt = Date.now();
  await vm.child.stop({ signal: "SIGKILL" });
  const end = await proxy.waitForRecord(isSessionEnd(1), {
    what: "session 1 to end after QEMU was killed",
    timeoutMs: 15_000,
  });
  const endAfterMs = Date.parse(end.ts) - killedAt;
  console.log(`session 1 ended ${endAfterMs} ms after SIGKILL: ${end.reason}`);
  assert.equal(end.closedBy, "front-end", end.reason);
  assert.ok(endAfterMs <= PROMPT_MS, `the session ended ${endAfterMs} ms after the kill`);

  // virtiofsd serves one front-end: the proxy's hang-up is its cue to exit cleanly.
  const exitedInTime = await settlesWithin(vfsd.exited, 10_000);
  assert.ok(exitedInTime, `virtiofsd still runs: ${tail(await vfsd.stderrLog(), 5)}`);
  assert.equal((await vfsd.exited).code, 0);
  assert.match(await vfsd.stderrLog(), /Client disconnected/);

  assert.ok(proxy.running, "the proxy survived QEMU's death");
  assert.ok(await socketExists(proxy.listenPath), "the proxy still listens");
  await assertFdsBackToBaseline(proxy, baselineFds);
});

async function fileSize(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return 0;
  }
}

/**
 * Waits until QEMU reports chardev `label` as disconnected (a socket chardev's `filename`
 * becomes `disconnected:unix:...`) and returns that filename.
 */
async function waitForChardevDisconnected(vm: Vm, label: string): Promise<string> {
  let last = "";
  return await waitFor(async () => {
    const chardevs = await vm.qmp.execute<{ label: string; filename: string }[]>("query-chardev");
    last = chardevs.find((c) => c.label === label)?.filename ?? "(no such chardev)";
    return last.startsWith("disconnected") ? last : undefined;
  }, {
    what: `QEMU's chardev ${label} to be disconnected`,
    timeoutMs: 10_000,
    detail: () => `it says ${last}`,
  });
}
