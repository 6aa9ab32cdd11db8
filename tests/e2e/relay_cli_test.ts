/**
 * The proxy's process contract, without peers: what a supervisor (a script, libvirt) relies on
 * before the first QEMU connects and when it stops the proxy.
 *
 * Run: `deno test -A tests/e2e/relay_cli_test.ts`
 */

import assert from "node:assert/strict";
import { socketExists, TestDir } from "../harness/mod.ts";
import { isProxyEvent, startProxyProcess } from "./_proxy.ts";

Deno.test("proxy process: logs 'listening' before any front-end connects", async () => {
  await using dir = await TestDir.create("cli-listen");
  await using proxy = await startProxyProcess({
    dir: dir.path,
    listenPath: dir.join("front.sock"),
    backendPath: dir.join("absent.sock"),
  });
  // A supervisor waits for this record to know it may start QEMU; nothing else will happen
  // until QEMU connects, so the record must not wait for that. Known to fail (found by this
  // test): engine_worker.ts queues the record emitted by engine.listen() and posts the batch
  // only after the first reactor.turn(-1) returns, i.e. at the first connection or at stop.
  const listening = await proxy.waitForRecord(isProxyEvent("listening"), {
    what: "the listening record while no front-end is connected",
    timeoutMs: 5000,
  });
  assert.equal(listening.listen, proxy.listenPath);
  assert.equal(listening.pid, proxy.pid);
  assert.match(await proxy.humanLog(), /proxy listening on /);
});

Deno.test("proxy process: socket mode 0600; SIGTERM stops it, exit 0, socket removed", async () => {
  await using dir = await TestDir.create("cli-stop");
  await using proxy = await startProxyProcess({
    dir: dir.path,
    listenPath: dir.join("front.sock"),
    backendPath: dir.join("absent.sock"),
  });
  const mode = (await Deno.lstat(proxy.listenPath)).mode! & 0o777;
  assert.equal(mode.toString(8), "600");

  const status = await proxy.stop();
  assert.equal(status.code, 0, `exit status ${JSON.stringify(status)}`);
  assert.equal(status.signal, null, "it exited by itself, not by the harness's SIGKILL");
  assert.ok(!await socketExists(proxy.listenPath), "the socket file is removed");
  const events = (await proxy.records()).flatMap((r) => r.type === "proxy" ? [r.event] : []);
  assert.deepEqual(events, ["listening", "stopping", "stopped"]);
});
