/**
 * vhost-user-net through the proxy, no guest: dpdk-testpmd's virtio-user port (front-end) →
 * proxy → dpdk-testpmd's vhost port (back-end). Packets flow both ways and the proxy logs the
 * whole negotiation and the end of the session. Needs `scripts/setup_peers.sh`; fails (never
 * skips) without.
 *
 * Run: `deno test -A tests/e2e/relay_testpmd_test.ts`
 */

import assert from "node:assert/strict";
import { startTestpmd, TestDir } from "../harness/mod.ts";
import {
  assertFdsBackToBaseline,
  frontEndRequests,
  isSessionEnd,
  startProxyProcess,
} from "./_proxy.ts";

/** The requests that bring a virtqueue up, in the order every front-end sends them. */
const NEGOTIATION = [
  "GET_FEATURES",
  "SET_FEATURES",
  "SET_MEM_TABLE",
  "SET_VRING_NUM",
  "SET_VRING_BASE",
  "SET_VRING_ADDR",
  "SET_VRING_KICK",
];

Deno.test("proxy: testpmd virtio-user and vhost ports exchange packets through the proxy", async () => {
  await using dir = await TestDir.create("relay-net");
  await using backend = await startTestpmd({
    role: "backend",
    socketPath: dir.join("net.sock"),
    logDir: dir.path,
  });
  await using proxy = await startProxyProcess({
    dir: dir.path,
    listenPath: dir.join("front.sock"),
    backendPath: backend.socketPath,
  });
  const baselineFds = proxy.openFds();
  await using frontend = await startTestpmd({
    role: "frontend",
    socketPath: proxy.listenPath,
    logDir: dir.path,
  });

  const backendPort = await backend.waitForRx(1, { timeoutMs: 30_000 });
  const frontendPort = await frontend.waitForRx(1, { timeoutMs: 30_000 });
  console.log(
    `testpmd through the proxy: back-end rx=${backendPort.rxPackets} tx=${backendPort.txPackets}, ` +
      `front-end rx=${frontendPort.rxPackets} tx=${frontendPort.txPackets}`,
  );
  assert.ok(backendPort.rxPackets > 0 && frontendPort.rxPackets > 0);
  assert.ok(backendPort.txPackets > 0 && frontendPort.txPackets > 0);

  const requests = frontEndRequests(await proxy.messages(1)).map((m) => m.name);
  assertInOrder(requests, NEGOTIATION);
  const replies = (await proxy.messages(1)).filter((m) => m.kind === "reply");
  assert.ok(
    replies.some((m) => m.name === "GET_FEATURES" && m.from === "back-end"),
    "the back-end's GET_FEATURES reply was relayed",
  );
  console.log(`front-end requests: ${requests.join(" ")}`);

  // testpmd closes its virtio-user port on SIGTERM; the proxy ends the session, and the vhost
  // back-end (a server) stays up for the next front-end.
  await frontend.stop();
  const end = await proxy.waitForRecord(isSessionEnd(1), { what: "session 1 to end" });
  console.log(`session end: ${end.reason}`);
  assert.equal(end.closedBy, "front-end", end.reason);
  assert.equal(end.summary.errors, 0);
  assert.ok(proxy.running, "the proxy outlives its sessions");
  assert.equal(backend.child.status, undefined, "the vhost back-end keeps running");
  await assertFdsBackToBaseline(proxy, baselineFds);
});

/** Asserts that `expected` occurs in `names` as a subsequence (in this order, gaps allowed). */
function assertInOrder(names: string[], expected: string[]): void {
  let at = 0;
  for (const name of expected) {
    const found = names.indexOf(name, at);
    assert.ok(
      found >= 0,
      `${name} missing after ${expected.slice(0, expected.indexOf(name)).join(", ")} in: ${
        names.join(" ")
      }`,
    );
    at = found + 1;
  }
}
