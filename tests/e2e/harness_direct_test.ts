/**
 * The harness against the real peers with nothing in between: the baseline the "through the
 * proxy" variants are compared with. Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/harness_direct_test.ts`
 */

import assert from "node:assert/strict";
import {
  holderRoundTrip,
  migrate,
  readVhostUserTrace,
  START_HOLDER,
  startCVirtiofsd,
  startTestpmd,
  startVirtiofsd,
  startVm,
  TestDir,
} from "../harness/mod.ts";

const TAG = "myfs";

Deno.test("direct: guest on rust virtiofsd writes, lists and reads the share", async () => {
  await using dir = await TestDir.create("direct-fs");
  const share = await dir.mkdir("share");
  await Deno.writeTextFile(`${share}/from-host.txt`, "written by the host\n");
  await using vfsd = await startVirtiofsd({
    socketPath: dir.join("vfs.sock"),
    sharedDir: share,
    logDir: dir.path,
  });
  await using vm = await startVm({
    dir: dir.path,
    fs: [{ socketPath: vfsd.socketPath, tag: TAG }],
  });
  console.log(`boot to agent ready: ${vm.bootMs} ms`);

  await vm.agent.check("echo 'written by the guest' >/mnt/from-guest.txt");
  assert.equal(await Deno.readTextFile(`${share}/from-guest.txt`), "written by the guest\n");

  const listing = (await vm.agent.check("ls /mnt")).trim().split("\n").sort();
  assert.deepEqual(listing, ["from-guest.txt", "from-host.txt"]);

  assert.equal(await vm.agent.check("cat /mnt/from-host.txt"), "written by the host\n");

  // The agent reports exit codes and stderr faithfully.
  const failing = await vm.agent.run("echo out; echo err >&2; exit 7");
  assert.deepEqual(failing, { stdout: "out\n", stderr: "err\n", code: 7 });
});

Deno.test("direct: live migration with rust virtiofsd keeps an open file usable", async () => {
  await using dir = await TestDir.create("direct-mig");
  const share = await dir.mkdir("share");
  await using vfsdSrc = await startVirtiofsd({
    name: "virtiofsd-src",
    socketPath: dir.join("src-vfs.sock"),
    sharedDir: share,
    logDir: dir.path,
  });
  await using vfsdDst = await startVirtiofsd({
    name: "virtiofsd-dst",
    socketPath: dir.join("dst-vfs.sock"),
    sharedDir: share,
    logDir: dir.path,
  });
  await using src = await startVm({
    name: "src",
    dir: dir.path,
    fs: [{ socketPath: vfsdSrc.socketPath, tag: TAG }],
    traceVhostUser: true,
  });
  await src.agent.check(START_HOLDER);
  assert.equal(await src.agent.check(holderRoundTrip("before")), "before\n");

  await using dst = await startVm({
    name: "dst",
    dir: dir.path,
    fs: [{ socketPath: vfsdDst.socketPath, tag: TAG }],
    incomingDefer: true,
    traceVhostUser: true,
  });
  const result = await migrate(src, dst);
  console.log(
    `migration: status=${result.status} total=${result.totalTimeMs} ms ` +
      `downtime=${result.downtimeMs} ms setup=${result.setupTimeMs} ms wall=${result.wallMs} ms`,
  );
  assert.equal(result.status, "completed", `${result.errorDesc}\n${await dst.stderrLog()}`);
  assert.equal(result.destinationState, "running");
  assert.equal(result.sourceState, "postmigrate");

  // Both QEMUs moved the back-end state through the vhost-user device-state requests.
  for (const vm of [src, dst]) {
    const names = (await readVhostUserTrace(vm.paths.trace!)).map((request) => request.name);
    assert.ok(names.includes("SET_DEVICE_STATE_FD"), `${vm.name} sent: ${names.join(" ")}`);
    assert.ok(names.includes("CHECK_DEVICE_STATE"), `${vm.name} sent: ${names.join(" ")}`);
  }

  await dst.agent.waitReady({ timeoutMs: 10_000 });
  // The handles opened on the source keep working on the destination, for writing and reading.
  assert.equal(await dst.agent.check(holderRoundTrip("after")), "after\n");
  assert.equal(await Deno.readTextFile(`${share}/held.txt`), "before\nafter\n");
  await dst.agent.check("echo new >/mnt/new-on-dst.txt");
  assert.equal(await Deno.readTextFile(`${share}/new-on-dst.txt`), "new\n");
  assert.match(await vfsdDst.stderrLog(), /Client connected/);
});

Deno.test("direct: C virtiofsd mounts, and QEMU 10 refuses to migrate it", async () => {
  await using dir = await TestDir.create("direct-cfs");
  const share = await dir.mkdir("share");
  await using vfsdSrc = await startCVirtiofsd({
    name: "virtiofsd-c-src",
    socketPath: dir.join("src-vfs.sock"),
    sharedDir: share,
    logDir: dir.path,
  });
  await using vfsdDst = await startCVirtiofsd({
    name: "virtiofsd-c-dst",
    socketPath: dir.join("dst-vfs.sock"),
    sharedDir: share,
    logDir: dir.path,
  });
  await using src = await startVm({
    name: "src",
    dir: dir.path,
    fs: [{ socketPath: vfsdSrc.socketPath, tag: TAG }],
  });
  console.log(`boot to agent ready (C virtiofsd): ${src.bootMs} ms`);
  await src.agent.check("echo c >/mnt/c.txt");
  assert.equal(await Deno.readTextFile(`${share}/c.txt`), "c\n");

  await using dst = await startVm({
    name: "dst",
    dir: dir.path,
    fs: [{ socketPath: vfsdDst.socketPath, tag: TAG }],
    incomingDefer: true,
  });
  const result = await migrate(src, dst);
  console.log(
    `migration with C virtiofsd: status=${result.status} error-desc=${
      JSON.stringify(result.errorDesc)
    } source=${result.sourceState} destination=${result.destinationState}`,
  );
  assert.equal(result.status, "failed");
  assert.match(await src.stderrLog(), /does not support migration/);
  assert.equal(result.sourceState, "running");
  // The source guest carries on, share included.
  await src.agent.check("echo still >/mnt/after-failure.txt");
  assert.equal(await Deno.readTextFile(`${share}/after-failure.txt`), "still\n");
});

Deno.test("direct: testpmd front-end and back-end exchange packets", async () => {
  await using dir = await TestDir.create("direct-net");
  const socketPath = dir.join("net.sock");
  await using backend = await startTestpmd({ role: "backend", socketPath, logDir: dir.path });
  await using frontend = await startTestpmd({ role: "frontend", socketPath, logDir: dir.path });
  const backendPort = await backend.waitForRx(1);
  const frontendPort = await frontend.waitForRx(1);
  console.log(
    `testpmd: back-end rx=${backendPort.rxPackets} tx=${backendPort.txPackets}, ` +
      `front-end rx=${frontendPort.rxPackets} tx=${frontendPort.txPackets}`,
  );
  assert.ok(backendPort.rxPackets > 0 && frontendPort.rxPackets > 0);
});
