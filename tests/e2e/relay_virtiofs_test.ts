/**
 * QEMU → proxy → rust virtiofsd with a real guest: file I/O works through the proxy, the proxy
 * relays exactly what QEMU wrote (checked against QEMU's own trace), hands every fd on and
 * closes its copies, interposes the back-end channel, and costs nothing on the data plane.
 * Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/relay_virtiofs_test.ts`
 */

import assert from "node:assert/strict";
import {
  readVhostUserTrace,
  startVirtiofsd,
  startVm,
  TestDir,
  type TracedRequest,
} from "../harness/mod.ts";
import type { MessageRecord } from "../../proxy/log_record.ts";
import {
  assertFdsBackToBaseline,
  frontEndRequests,
  isSessionEnd,
  startProxyProcess,
} from "./_proxy.ts";

const TAG = "myfs";
/** vhost-user protocol feature bit of the back-end channel (VHOST_USER_PROTOCOL_F_BACKEND_REQ). */
const PROTOCOL_F_BACKEND_REQ = 5n;

Deno.test("proxy: guest file I/O through the proxy; every request relayed in order, fds relayed and closed", async () => {
  await using dir = await TestDir.create("relay-fs");
  const share = await dir.mkdir("share");
  await Deno.writeTextFile(`${share}/from-host.txt`, "written by the host\n");
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
    traceVhostUser: true,
  });
  console.log(`boot through the proxy to agent ready: ${vm.bootMs} ms`);
  // A live session holds QEMU's socket, the back-end's and the back-end channel's pair, so a
  // count that did not move here would make the baseline comparison below meaningless.
  const fdsDuringSession = proxy.openFdCount();
  assert.ok(
    fdsDuringSession > baselineFds.size,
    `the proxy holds ${fdsDuringSession} fds during the session, ${baselineFds.size} before`,
  );

  await exerciseShare(vm.agent, share);

  await vm.stop();
  const end = await proxy.waitForRecord(isSessionEnd(1), { what: "session 1 to end" });
  assert.equal(end.closedBy, "front-end", end.reason);
  assert.deepEqual(end.inFlight, []);
  assert.equal(end.summary.errors, 0, `errors in ${proxy.logPath}`);
  // The proxy closed the back-end's connection too: virtiofsd serves one front-end and exits.
  assert.equal((await vfsd.exited).code, 0, await vfsd.stderrLog());
  assert.match(await vfsd.stderrLog(), /Client disconnected/);
  assert.ok(proxy.running, "the proxy outlives its sessions");

  const messages = await proxy.messages(1);
  const problems = (await proxy.records()).filter((r) => r.type === "error");
  assert.deepEqual(problems, []);

  // What QEMU wrote is what the proxy received and relayed, message for message.
  const traced = await readVhostUserTrace(vm.paths.trace!);
  assert.ok(traced.length > 20, `QEMU traced only ${traced.length} requests`);
  assert.deepEqual(
    frontEndRequests(messages).map(requestKey),
    traced.map(tracedKey),
    "front-end requests in the proxy log differ from QEMU's vhost_user_write trace",
  );

  assertFdsRelayed(messages);
  assertBackendChannelInterposed(messages);
  const fdsInRecords = messages.reduce((sum, m) => sum + m.fds.length, 0);
  assert.equal(end.summary.fdsRelayed, fdsInRecords, "session summary vs message records");
  assert.equal(end.summary.messages, messages.length, "session summary vs message records");

  await assertFdsBackToBaseline(proxy, baselineFds);
});

/** Writes, lists, reads and deletes on the share from both sides and checks the other side. */
async function exerciseShare(
  agent: { check(script: string): Promise<string> },
  share: string,
): Promise<void> {
  assert.equal(await agent.check("cat /mnt/from-host.txt"), "written by the host\n");

  await agent.check("echo 'written by the guest' >/mnt/from-guest.txt");
  assert.equal(await Deno.readTextFile(`${share}/from-guest.txt`), "written by the guest\n");

  await agent.check("mkdir /mnt/dir && for i in $(seq 1 20); do echo $i >/mnt/dir/f$i; done");
  const hostListing = [];
  for await (const entry of Deno.readDir(`${share}/dir`)) hostListing.push(entry.name);
  assert.equal(hostListing.length, 20);
  assert.equal(await Deno.readTextFile(`${share}/dir/f17`), "17\n");

  const guestListing = (await agent.check("ls /mnt")).trim().split("\n").sort();
  assert.deepEqual(guestListing, ["dir", "from-guest.txt", "from-host.txt"]);

  // A file larger than one FUSE request, checked end to end by content hash.
  const guestHash = (await agent.check(
    "dd if=/dev/urandom of=/mnt/big.bin bs=64k count=64 2>/dev/null && " +
      "sync && sha256sum /mnt/big.bin",
  )).split(" ")[0];
  assert.equal(await sha256File(`${share}/big.bin`), guestHash);

  await agent.check("rm -r /mnt/dir && mv /mnt/from-guest.txt /mnt/renamed.txt");
  const after = [];
  for await (const entry of Deno.readDir(share)) after.push(entry.name);
  assert.deepEqual(after.sort(), ["big.bin", "from-host.txt", "renamed.txt"]);
}

async function sha256File(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function requestKey(m: MessageRecord): string {
  return `${m.name}(${m.code}) flags=0x${parseInt(m.flags, 16).toString(16)}`;
}

function tracedKey(t: TracedRequest): string {
  return `${t.name}(${t.code}) flags=0x${t.flags.toString(16)}`;
}

/** Guest memory went over as memfds, and every kick/call eventfd was handed on. */
function assertFdsRelayed(messages: MessageRecord[]): void {
  const requests = frontEndRequests(messages);
  const memory = requests.filter((m) => m.name === "SET_MEM_TABLE" || m.name === "ADD_MEM_REG");
  assert.ok(memory.length > 0, "no SET_MEM_TABLE / ADD_MEM_REG was relayed");
  for (const m of memory) {
    assert.ok(m.fds.length > 0, `${m.name} carried no fd`);
    assert.ok(m.fds.every((fd) => fd.kind === "memfd"), `${m.name} fds: ${JSON.stringify(m.fds)}`);
  }
  for (const name of ["SET_VRING_KICK", "SET_VRING_CALL"]) {
    const rings = requests.filter((m) => m.name === name);
    assert.ok(rings.length > 0, `no ${name} was relayed`);
    for (const m of rings) {
      assert.deepEqual(m.fds, [{ kind: "eventfd" }], `${name} ${m.summary}`);
    }
  }
}

/**
 * virtiofsd offers BACKEND_REQ, QEMU accepts it and sends SET_BACKEND_REQ_FD, and the proxy
 * hands virtiofsd its own socketpair end instead of QEMU's.
 */
function assertBackendChannelInterposed(messages: MessageRecord[]): void {
  const offered = messages.find((m) =>
    m.name === "GET_PROTOCOL_FEATURES" && m.kind === "reply" && m.from === "back-end"
  );
  const accepted = messages.find((m) =>
    m.name === "SET_PROTOCOL_FEATURES" && m.kind === "request" && m.from === "front-end"
  );
  assert.ok(offered && accepted, "protocol features were not negotiated");
  for (const m of [offered, accepted]) {
    const mask = BigInt((m.payload.features as { mask: string }).mask);
    assert.ok((mask >> PROTOCOL_F_BACKEND_REQ) & 1n, `${m.name} ${m.summary} lacks BACKEND_REQ`);
  }
  const setFd = messages.filter((m) => m.name === "SET_BACKEND_REQ_FD" && m.kind === "request");
  assert.equal(setFd.length, 1, "QEMU sends SET_BACKEND_REQ_FD once");
  assert.deepEqual(setFd[0].fds, [{ kind: "socket" }]);
  assert.equal(setFd[0].action, "interposed the back-end channel");
  const reply = messages.find((m) => m.name === "SET_BACKEND_REQ_FD" && m.kind === "reply");
  assert.equal(reply?.payload.value, 0, "virtiofsd accepted the proxy's back-end channel");
}
