/**
 * `bash scripts/demo.sh --single`: one guest on virtio-fs through one proxy. virtiofsd exports
 * a fresh directory, the proxy sits in front of it, QEMU boots the busybox guest with its
 * virtio-fs share connected to the proxy; the guest lists, writes and reads files on the share;
 * then everything shuts down cleanly and the proxy's decoded conversation is printed with a
 * summary.
 *
 * @module
 */

import { formatRecord } from "../../log/format.ts";
import type { LogRecord, MessageRecord, SessionEndRecord } from "../../log/record.ts";
import {
  requirePeers,
  settlesWithin,
  startVirtiofsd,
  startVm,
  tail,
  TestDir,
} from "../harness/mod.ts";
import { isSessionEnd, type ProxyProcess, startProxyProcess } from "../e2e/_proxy.ts";
import { type DemoContext, DemoError, heading, indent, OUT_DIR, printVersions } from "./_output.ts";

const TAG = "demo";
const HOST_FILE = "hello-from-host.txt";
const HOST_TEXT = "Hello from the host, read by the guest through virtio-fs.\n";
const GUEST_TEXT = "Hello from the guest, written through virtio-fs.";

/** The guest's part: each command is shown with what the guest printed. */
const GUEST_STEPS = [
  "ls -l /mnt",
  `cat /mnt/${HOST_FILE}`,
  `echo '${GUEST_TEXT}' >/mnt/hello-from-guest.txt && cat /mnt/hello-from-guest.txt`,
  "mkdir /mnt/notes && seq 1 5 >/mnt/notes/numbers.txt && wc -l /mnt/notes/numbers.txt",
  "dd if=/dev/urandom of=/mnt/random.bin bs=64k count=16 2>/dev/null && sha256sum /mnt/random.bin",
  "ls -lR /mnt",
];

/** Runs the single-guest demo; throws on any failed step. */
export async function singleGuestDemo(ctx: DemoContext): Promise<void> {
  const peers = await requirePeers("qemu", "virtiofsd", "kernel", "initrd");
  printVersions();
  // Sockets live in a short /tmp directory (108-byte limit); logs stay in out/demo.
  const tmp = ctx.stack.use(await TestDir.create("demo"));
  const share = await tmp.mkdir("share");
  await Deno.writeTextFile(`${share}/${HOST_FILE}`, HOST_TEXT);

  const vfsd = ctx.stack.use(
    await startVirtiofsd({
      socketPath: tmp.join("virtiofsd.sock"),
      sharedDir: share,
      logDir: OUT_DIR,
    }),
  );
  step(1, `virtiofsd ${peers.virtiofsd}\n      exports ${share} on ${vfsd.socketPath}`);

  const proxy = ctx.stack.use(
    await startProxyProcess({
      dir: OUT_DIR,
      listenPath: tmp.join("proxy.sock"),
      backendPath: vfsd.socketPath,
      logPath: `${OUT_DIR}/proxy.jsonl`,
    }),
  );
  ctx.onFailure(async () => `proxy log:\n${tail(await proxy.humanLog(), 8)}`);
  step(2, `proxy (pid ${proxy.pid}) listens on ${proxy.listenPath} → ${proxy.backendPath}`);

  step(3, "QEMU boots the guest; its vhost-user-fs device connects to the proxy …");
  // Registered before the boot wait, so that Ctrl-C during the boot stops QEMU too.
  const vm = ctx.stack.use(
    await startVm({
      name: "guest",
      dir: tmp.path,
      fs: [{ socketPath: proxy.listenPath, tag: TAG }],
      waitForGuest: false,
    }),
  );
  ctx.onFailure(async () =>
    `QEMU stderr:\n${tail(await vm.stderrLog(), 8)}\nguest console:\n${
      tail(await vm.consoleLog(), 8)
    }`
  );
  await vm.waitGuestReady({ timeoutMs: 90_000 });
  console.log(`      guest up, share "${TAG}" mounted at /mnt, in ${vm.bootMs} ms`);

  step(4, "file I/O in the guest (what the guest saw):");
  for (const command of GUEST_STEPS) {
    const output = await vm.agent.check(command);
    console.log(`  guest# ${command}`);
    console.log(indent(output.trimEnd(), "    "));
  }
  await checkOnHost(share);

  step(5, "clean shutdown");
  await vm.stop();
  const end = await proxy.waitForRecord(isSessionEnd(), { what: "the session to end" });
  console.log(`      QEMU quit; the proxy ended session ${end.session}: ${end.reason}`);
  if (!await settlesWithin(vfsd.exited, 10_000)) throw new DemoError("virtiofsd did not exit");
  console.log(`      virtiofsd exited with code ${(await vfsd.exited).code} (its front-end left)`);
  const status = await proxy.stop();
  if (status.code !== 0) {
    throw new DemoError(`the proxy exited with ${JSON.stringify(status)}`);
  }
  console.log("      proxy stopped on SIGTERM, exit code 0");

  const records = await proxy.records();
  printConversation(records);
  printSummary(records, end, proxy);
}

function step(n: number, text: string): void {
  console.log(`[${n}/5] ${text}`);
}

/** The host sees what the guest wrote. */
async function checkOnHost(share: string): Promise<void> {
  const fromGuest = await Deno.readTextFile(`${share}/hello-from-guest.txt`);
  if (fromGuest !== `${GUEST_TEXT}\n`) {
    throw new DemoError(`the host reads ${JSON.stringify(fromGuest)} from the guest's file`);
  }
  const numbers = await Deno.readTextFile(`${share}/notes/numbers.txt`);
  if (numbers !== "1\n2\n3\n4\n5\n") throw new DemoError(`notes/numbers.txt holds ${numbers}`);
  console.log(`  host$ cat ${share}/hello-from-guest.txt\n    ${fromGuest.trimEnd()}`);
}

function printConversation(records: LogRecord[]): void {
  heading(`the proxy's decoded conversation (${OUT_DIR}/proxy.jsonl)`);
  for (const record of records) console.log(formatRecord(record));
}

function printSummary(records: LogRecord[], end: SessionEndRecord, proxy: ProxyProcess): void {
  heading("summary");
  const messages = records.filter((r): r is MessageRecord => r.type === "message");
  const fdKinds = new Map<string, number>();
  for (const fd of messages.flatMap((m) => m.fds)) {
    fdKinds.set(fd.kind, (fdKinds.get(fd.kind) ?? 0) + 1);
  }
  const fdText = [...fdKinds].map(([kind, n]) => `${n} ${kind}`).join(", ");
  const s = end.summary;
  console.log(
    `session ${end.session}: ${s.messages} messages (${s.bytes} bytes), ` +
      `${s.fdsRelayed} fds relayed (${fdText}), ${s.errors} errors, ${s.warnings} warnings, ` +
      `${(s.durationMs / 1000).toFixed(1)} s`,
  );
  console.log(`ended: ${end.reason} (closed by the ${end.closedBy ?? "unknown"})`);
  const interposed = messages.find((m) => m.action === "interposed the back-end channel");
  if (interposed) console.log(`back-end channel: interposed at ${interposed.name}`);
  console.log("messages by name:");
  const byName = Object.entries(s.byName).sort(([a], [b]) => a.localeCompare(b));
  const width = Math.max(...byName.map(([name]) => name.length));
  for (const [name, count] of byName) console.log(`  ${name.padEnd(width)}  ${count}`);
  console.log(`logs:\n  ${proxy.logPath}  (JSON Lines)\n  ${proxy.stderrPath}  (human lines)`);
  console.log(`  ${OUT_DIR}/virtiofsd.stderr.log`);
}
