/**
 * The proxy's process contract, without peers: what a supervisor (a script, libvirt) relies on
 * before the first QEMU connects and when it stops the proxy.
 *
 * Run: `deno test -A tests/e2e/relay_cli_test.ts`
 */

import assert from "node:assert/strict";
import { socketExists, TestDir } from "../harness/mod.ts";
import { isProxyEvent, PROXY_BIN, startProxyProcess } from "./_proxy.ts";

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
  // The back-end is not there: said at start (the proxy keeps retrying per connection).
  const warned = (await proxy.humanLog()).split("\n")
    .filter((l) => l.includes(`the back-end socket "${dir.join("absent.sock")}" is not there`));
  assert.equal(warned.length, 1, await proxy.humanLog());
  assert.match(
    warned[0],
    /^vhost-user-proxy: run: warning: .*No such file or directory.*--connect-timeout/,
  );
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

Deno.test("log follow: records appended to a live log are shown, filtered; SIGINT ends it", async () => {
  await using dir = await TestDir.create("cli-follow");
  const log = dir.join("live.jsonl");
  const record = (session: number, name: string, second: number) =>
    JSON.stringify({
      type: "message",
      ts: `2026-12-03T10:00:0${second}.000Z`,
      session,
      channel: "main",
      from: "front-end",
      direction: "front-end → back-end",
      kind: "request",
      code: 1,
      name,
      flags: "0x1",
      flagNames: [],
      size: 0,
      layout: "empty",
      payload: {},
      summary: "",
      fds: [],
      ...(second === 3 ? { warnings: ["reserved flag bits"] } : {}),
    }) + "\n";
  Deno.writeTextFileSync(log, record(1, "GET_FEATURES", 0) + record(2, "GET_PROTOCOL_FEATURES", 1));
  const child = new Deno.Command(PROXY_BIN, {
    args: ["log", "follow", log, "--session", "2", "--name", "get_protocol_features"],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const until = async (text: string) => {
    const deadline = Date.now() + 20_000;
    while (!seen.includes(text) && Date.now() < deadline) {
      const next = await Promise.race([
        reader.read(),
        new Promise<{ value: undefined }>((r) => setTimeout(() => r({ value: undefined }), 500)),
      ]);
      if (next.value) seen += next.value;
    }
  };
  await until("10:00:01.000Z"); // what the file held when it started
  // Appended while it follows: another session's request, another request, the one that passes.
  Deno.writeTextFileSync(
    log,
    record(1, "GET_PROTOCOL_FEATURES", 2) + record(2, "SET_OWNER", 2) +
      record(2, "GET_PROTOCOL_FEATURES", 3),
    { append: true },
  );
  await until("10:00:03.000Z");
  child.kill("SIGINT");
  const status = await child.status;
  reader.releaseLock();
  await child.stdout.cancel().catch(() => {});
  const stderr = await new Response(child.stderr).text();
  assert.deepEqual(seen.split("\n").filter((l) => l !== ""), [
    "10:00:01.000Z s2 front→back GET_PROTOCOL_FEATURES",
    "10:00:03.000Z s2 front→back GET_PROTOCOL_FEATURES !reserved flag bits",
  ], stderr);
  assert.equal(status.code, 1, `exit 1: a problem was shown (${stderr})`);
  assert.equal(stderr, "");
});
