/**
 * `bash scripts/demo.sh`: a live migration through the proxy, as someone debugging one would
 * watch it. Three QEMU 10 share one directory, each with its own virtiofsd 1.13 behind its own
 * `vhost-user-proxy run --log … --state-dump …`: the source boots the guest, which keeps files
 * open and appends to one of them every 50 ms; the guest migrates live to the destination, where
 * the fds it opened before keep reading and writing; then a migration onwards to a third QEMU,
 * whose proxy corrupts the state it loads (`--fault state-corrupt`), fails, the guest stays on
 * the destination, and the proxies' logs name what failed. Every step is checked; the log tools
 * are run as a user would run them, on the copies of the logs in out/demo/.
 *
 * @module
 */

import type { LogRecord, TransferEndRecord } from "../../log/record.ts";
import { migrate, type MigrationResult, requirePeers, tail, waitFor } from "../harness/mod.ts";
import {
  checkRecords,
  describeMigration,
  holderRoundTrip,
  lineCount,
  MigrationRig,
  type ProxyProcess,
  sequenceGaps,
  type Side,
  type SideSpec,
  START_HOLDER,
  START_SEQUENCE_WRITER,
  STOP_SEQUENCE_WRITER,
  waitCheck,
  waitTransferEnd,
} from "../e2e/_migration_rig.ts";
import {
  type DemoContext,
  expect,
  heading,
  indent,
  OUT_DIR,
  printVersions,
  proxyCli,
  shortPath,
  step,
} from "./_output.ts";

const STEPS = 8;
/** At most this many lines of `log show`: the whole start-up conversation is about 40. */
const NEGOTIATION_LINES = 48;

/**
 * Guest script: every fd a process holds on the share, as `pid N (comm) fd N -> path`. Children
 * that inherit such an fd from their parent for a moment (the writer's `sleep` every 50 ms, a
 * fork on its way to exec) are left out, so that the list is the same whenever it is taken.
 */
const LIST_SHARE_FDS = `
share_fds() {
  for f in "$1"/fd/*; do
    target=$(readlink "$f" 2>/dev/null) || continue
    case "$target" in /mnt/*) echo "\${f##*/} $target" ;; esac
  done
}
for p in /proc/[0-9]*; do
  stat=$(cat "$p/stat" 2>/dev/null) || continue
  set -- $stat
  [ -n "$(share_fds "/proc/$4")" ] && continue
  share_fds "$p" | while read -r fd target; do
    echo "pid \${p#/proc/} ($(cat "$p/comm")) fd $fd -> $target"
  done
done
`;

/** Runs the migration demo; throws on any failed step. */
export async function migrationDemo(ctx: DemoContext): Promise<void> {
  const startedAt = Date.now();
  const at = () => `+${((Date.now() - startedAt) / 1000).toFixed(1)} s`;
  await requirePeers("qemu", "virtiofsd", "kernel", "initrd");
  printVersions();

  const rig = ctx.stack.use(await MigrationRig.create("demo-mig"));
  const sides: Side[] = [];
  // Runs before the rig removes its directory (the stack unwinds in reverse): on success and
  // on failure alike the logs end up in out/demo/.
  ctx.stack.defer(async () => {
    for (const side of sides) await side.stop().catch(() => {});
    await copyLogs(rig.dir.path);
  });

  step(1, STEPS, `${at()} three QEMU, each with its own virtiofsd behind its own proxy`);
  console.log(`      in ${rig.dir.path}/ (sockets and logs; the shared directory is share/)`);
  const relay = (faults: string[] = []) => [faults.flatMap((fault) => ["--fault", fault])];
  const specs: SideSpec[] = [
    { name: "src", backend: "rust", proxies: relay(), stateDump: true },
    { name: "dst", backend: "rust", proxies: relay(), stateDump: true, incoming: true },
    {
      name: "dst2",
      backend: "rust",
      proxies: relay(["state-corrupt"]),
      stateDump: true,
      incoming: true,
    },
  ];
  const settled = await Promise.allSettled(specs.map((spec) => rig.startSide(spec)));
  for (const s of settled) if (s.status === "fulfilled") sides.push(s.value);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) throw failed.reason;
  const [src, dst, dst2] = sides;
  for (const side of sides) ctx.onFailure(() => side.diagnostics());
  const roles = {
    src: "source: boots the guest",
    dst: "destination: -incoming defer",
    dst2:
      "the failure rehearsal's destination: -incoming defer, its proxy has --fault state-corrupt",
  };
  for (const side of sides) {
    const proxy = side.frontProxy;
    console.log(`  ${side.name.padEnd(4)} ${roles[side.name as keyof typeof roles]}`);
    console.log(
      `       QEMU pid ${side.vm.child.pid} → proxy pid ${proxy.child.pid} → ` +
        `virtiofsd pid ${side.virtiofsd.child.pid}`,
    );
    console.log(`       ${proxyCommandLine(proxy)}`);
  }
  console.log(`      the source's guest booted through its proxy in ${src.vm.bootMs} ms`);

  step(2, STEPS, `${at()} the negotiation, decoded by the source's proxy (the guest's start-up)`);
  const srcLog = await snapshot(src.frontProxy.logPath);
  await proxyCli(["log", "show", srcLog, "--session", "1"], { maxLines: NEGOTIATION_LINES });

  step(3, STEPS, `${at()} the guest opens files on the share and keeps them open`);
  await src.vm.agent.check(START_HOLDER);
  expect(
    await src.vm.agent.check(holderRoundTrip("before")) === "before\n",
    "the guest's held fds did not read back what they wrote before the migration",
  );
  await src.vm.agent.check(START_SEQUENCE_WRITER);
  const seqPath = `${rig.share}/seq.txt`;
  await waitFor(async () => (await lineCount(seqPath)) >= 10 || undefined, {
    what: "the guest writer's first 10 lines",
    timeoutMs: 20_000,
  });
  const fdsBefore = await src.vm.agent.check(LIST_SHARE_FDS);
  expect(/held\.txt/.test(fdsBefore) && /seq\.txt/.test(fdsBefore), `fds: ${fdsBefore}`);
  console.log("  guest# (list every fd on /mnt)");
  console.log(indent(fdsBefore.trimEnd()));
  console.log("      fd 7/8 of one shell append to and read /mnt/held.txt; another shell appends");
  console.log("      a number to /mnt/seq.txt every 50 ms through its fd 7");

  step(4, STEPS, `${at()} live migration src → dst`);
  const result = await migrate(src.vm, dst.vm);
  const linesAtSwitchOver = await lineCount(seqPath);
  console.log(`      QEMU: ${describe(result)}`);
  expect(
    result.status === "completed" && result.destinationState === "running",
    `the migration did not complete: ${describeMigration(result)}; see ` +
      `bin/vhost-user-proxy log explain ${shortPath(OUT_DIR)}/src-p0.jsonl ` +
      `${shortPath(OUT_DIR)}/dst-p0.jsonl`,
  );
  const save = await waitTransferEnd(src.frontProxy, "SAVE");
  const load = await waitTransferEnd(dst.frontProxy, "LOAD");
  const saveCheck = await waitCheck(src.frontProxy);
  const loadCheck = await waitCheck(dst.frontProxy);
  printTransfer("SAVE", "source", src.frontProxy, save, saveCheck.result);
  printTransfer("LOAD", "destination", dst.frontProxy, load, loadCheck.result);
  expect(save.ok && load.ok, `a transfer failed: ${JSON.stringify([save, load])}`);
  expect(saveCheck.result === 0 && loadCheck.result === 0, "CHECK_DEVICE_STATE failed");
  expect(save.bytes > 0 && load.bytes === save.bytes, "SAVE and LOAD sizes differ");
  expect(
    save.fingerprint !== undefined &&
      JSON.stringify(save.fingerprint) === JSON.stringify(load.fingerprint),
    `fingerprints differ: SAVE ${JSON.stringify(save.fingerprint)}, LOAD ${
      JSON.stringify(load.fingerprint)
    }`,
  );
  console.log("      equal fingerprints: the destination loaded exactly what the source saved");
  const explained = await proxyCli([
    "log",
    "explain",
    await snapshot(src.frontProxy.logPath),
    await snapshot(dst.frontProxy.logPath),
  ]);
  expect(/Verdict: OK/.test(explained.stdout), "log explain did not call the migration OK");

  step(5, STEPS, `${at()} the state virtiofsd moved, decoded from the source proxy's dump`);
  expect(save.dump, `the SAVE record names no dump: ${JSON.stringify(save)}`);
  const dump = await snapshot(save.dump);
  const shown = await proxyCli(["state", "show", dump]);
  expect(
    /held\.txt/.test(shown.stdout) && /seq\.txt/.test(shown.stdout),
    "`state show` does not list the files the guest holds open",
  );

  step(6, STEPS, `${at()} on the destination, the guest's pre-migration fds still work`);
  await dst.vm.agent.waitReady({ timeoutMs: 20_000 });
  const fdsAfter = await dst.vm.agent.check(LIST_SHARE_FDS);
  console.log("  guest# (list every fd on /mnt)");
  console.log(indent(fdsAfter.trimEnd()));
  expect(fdsAfter === fdsBefore, `the guest's fds changed:\n${fdsBefore}\n→\n${fdsAfter}`);
  console.log("      the same processes hold the same fds as before the migration");
  const after = await dst.vm.agent.check(holderRoundTrip("after"));
  console.log(`  guest# ${holderRoundTrip("after")}\n${indent(after.trimEnd())}`);
  expect(after === "after\n", `the held fds read back ${JSON.stringify(after)}`);
  const held = await Deno.readTextFile(`${rig.share}/held.txt`);
  expect(held === "before\nafter\n", `held.txt holds ${JSON.stringify(held)}`);
  console.log(`  host$ cat ${rig.share}/held.txt\n${indent(held.trimEnd())}`);
  await waitFor(async () => (await lineCount(seqPath)) >= linesAtSwitchOver + 10 || undefined, {
    what: `10 more lines from the writer on the destination (had ${linesAtSwitchOver})`,
    timeoutMs: 30_000,
  });
  const stopped = (await dst.vm.agent.check(STOP_SEQUENCE_WRITER)).trim();
  expect(/^\d+$/.test(stopped), `the guest's writer reported a failed write: ${stopped}`);
  const gaps = sequenceGaps(await Deno.readTextFile(seqPath));
  expect(gaps.length === 0, `seq.txt is not continuous: ${gaps.slice(0, 3).join("; ")}`);
  expect(await lineCount(seqPath) === Number(stopped), "numbers written did not reach the file");
  console.log(
    `      seq.txt: ${stopped} numbers, 1..${stopped} without a gap; ${linesAtSwitchOver} were in ` +
      `the file when the migration completed,\n      the rest were written on the destination ` +
      `through the same fd`,
  );

  step(7, STEPS, `${at()} a failed migration, rehearsed: dst → dst2, whose proxy corrupts LOAD`);
  const failedResult = await migrate(dst.vm, dst2.vm);
  console.log(`      QEMU: ${describe(failedResult)}`);
  expect(
    failedResult.status === "failed" && failedResult.sourceState === "running",
    `expected a failed migration and the guest still running on dst: ${
      describeMigration(failedResult)
    }`,
  );
  const qemuSays = tail(await dst2.vm.stderrLog(), 3).trim();
  if (qemuSays) console.log(`      dst2 QEMU's stderr:\n${indent(qemuSays, "        ")}`);
  const still = await dst.vm.agent.check(holderRoundTrip("still-here"));
  expect(still === "still-here\n", `after the failure the held fds read ${JSON.stringify(still)}`);
  console.log(`      the guest runs on dst as before: held fds read back ${JSON.stringify(still)}`);
  await waitTransferEnd(dst2.frontProxy, "LOAD");
  await waitCheck(dst2.frontProxy);
  const dst2Log = await snapshot(dst2.frontProxy.logPath);
  // Exit 1: problems were found (the log tools' contract).
  const problems = await proxyCli(["log", "show", dst2Log, "--problems"], { codes: [1] });
  expect(
    /CHECK_DEVICE_STATE/.test(problems.stdout + problems.stderr),
    "`log show --problems` does not show the failed CHECK_DEVICE_STATE",
  );
  const dstLog = await snapshot(dst.frontProxy.logPath);
  console.log("      (dst's proxy session carried two transfers: the LOAD in from src, then");
  console.log("      this SAVE out to dst2; `log explain` judges the last one)");
  await proxyCli(["log", "explain", dstLog, dst2Log], { codes: [1] });
  const verdict = JSON.parse(
    (await proxyCli(["log", "explain", dstLog, dst2Log, "--json"], { codes: [1], silent: true }))
      .stdout,
  );
  expect(
    verdict.failed === true && verdict.step === "CHECK_DEVICE_STATE" &&
      verdict.side === "destination" && verdict.culprit === "proxy",
    `log explain --json: ${JSON.stringify(verdict)}`,
  );

  step(8, STEPS, `${at()} shutdown; the logs`);
  for (const side of sides) await side.stop();
  for (const side of sides) {
    const status = side.frontProxy.child.status;
    expect(status?.code === 0, `proxy ${side.frontProxy.name} exited with ${status?.code}`);
  }
  await copyLogs(rig.dir.path);
  await printLogs(sides);
}

/** What QEMU's `query-migrate` said, only the fields it gave. */
function describe(result: MigrationResult): string {
  const ms = (label: string, value: number | undefined) =>
    value === undefined ? [] : [`${label} ${value} ms`];
  return [
    `status ${result.status}`,
    ...ms("total", result.totalTimeMs),
    ...ms("downtime", result.downtimeMs),
    `source ${result.sourceState}`,
    `destination ${result.destinationState}`,
    ...(result.errorDesc ? [`error-desc ${JSON.stringify(result.errorDesc)}`] : []),
  ].join(", ");
}

/** How the proxy was started, with the scratch paths shortened to their names. */
function proxyCommandLine(proxy: ProxyProcess): string {
  const args = proxy.argv.slice(1).map((arg) => arg.replace(/^\/tmp\/vup-[^/]+\//, ""));
  return `vhost-user-proxy ${args.join(" ")}`;
}

function printTransfer(
  direction: string,
  role: string,
  proxy: ProxyProcess,
  end: TransferEndRecord,
  check: number,
): void {
  console.log(
    `  ${direction} on the ${role.padEnd(11)} (${proxy.name}): ${end.bytes} bytes in ` +
      `${end.durationMs} ms, ${
        end.fingerprint ? `${end.fingerprint.algorithm} ${end.fingerprint.value}` : "no fingerprint"
      }, CHECK_DEVICE_STATE → ${check}`,
  );
}

/** Copies a file of the rig into out/demo/ (same relative name) and returns the copy's path. */
async function snapshot(path: string): Promise<string> {
  const name = path.replace(/^\/tmp\/vup-[^/]+\//, "");
  const copy = `${OUT_DIR}/${name}`;
  await Deno.mkdir(copy.replace(/\/[^/]*$/, ""), { recursive: true });
  await Deno.copyFile(path, copy);
  return copy;
}

/**
 * Copies every log and dump of the rig's directory into out/demo/: not the share, sockets, pid
 * files or empty logs.
 */
async function copyLogs(dir: string): Promise<void> {
  const walk = async (from: string): Promise<void> => {
    for await (const entry of Deno.readDir(from)) {
      const path = `${from}/${entry.name}`;
      if (entry.isDirectory && entry.name !== "share") await walk(path);
      else if (entry.isFile && !entry.name.endsWith(".pid") && (await Deno.stat(path)).size > 0) {
        await snapshot(path);
      }
    }
  };
  await Deno.mkdir(OUT_DIR, { recursive: true });
  await walk(dir);
}

async function printLogs(sides: Side[]): Promise<void> {
  heading(`logs, in ${shortPath(OUT_DIR)}/`);
  for (const side of sides) {
    const proxy = side.frontProxy;
    const records = (await proxy.records()) as LogRecord[];
    const transfers = records.filter((r): r is TransferEndRecord =>
      r.type === "device-state" && r.event === "transfer-end"
    ).map((end) =>
      `${end.direction} ${end.bytes} B ${end.ok ? "copied" : "failed"}${
        end.faults?.length ? ` (fault ${end.faults.join(", ")})` : ""
      }`
    );
    const checks = checkRecords(records).map((check) => String(check.result));
    console.log(
      `  ${`${proxy.name}.jsonl`.padEnd(14)} ${String(records.length).padStart(4)} records; ` +
        `transfers: ${transfers.join(", ") || "none"}; CHECK results: ${checks.join(", ")}`,
    );
  }
  const dumps: string[] = [];
  for (const side of sides) {
    const dir = `${side.frontProxy.name}.dump`;
    const entries = await Array.fromAsync(Deno.readDir(`${OUT_DIR}/${dir}`)).catch(() => []);
    for (const entry of entries) dumps.push(`${dir}/${entry.name}`);
  }
  console.log(`  state dumps: ${dumps.sort().join(", ")}`);
  console.log("  each QEMU's and virtiofsd's stderr, the source guest's console: *.stderr.log,");
  console.log("  src.console.log. To read them again:");
  const out = shortPath(OUT_DIR);
  console.log(`    bin/vhost-user-proxy log summary ${out}/src-p0.jsonl`);
  console.log(`    bin/vhost-user-proxy log explain ${out}/src-p0.jsonl ${out}/dst-p0.jsonl`);
}
