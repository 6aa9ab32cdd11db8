/**
 * Device-state faults injected by the proxy (`--fault`): every broken transfer must make the
 * migration fail cleanly (source resumes, guest and share still usable; return-path is on, as
 * the harness's migrate() sets it), and `state-delay` must succeed with a downtime grown by the
 * delay. Rust virtiofsd on both sides, proxies in relay mode.
 *
 * A proxy's faults are fixed when it starts and QEMU connects to its proxy once, so each
 * source-side fault needs its own source VM: they boot in parallel. Destination-side faults
 * reuse one clean source (a failed migration leaves it running) with a fresh destination each.
 * Needs `scripts/setup_peers.sh`; fails (never skips) without.
 *
 * Run: `deno test -A tests/e2e/migration_faults_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import type { LogRecord } from "../../log/record.ts";
import { explainMigration, type Explanation, formatExplanation } from "../../log/explain.ts";
import { waitFor } from "../harness/wait.ts";
import {
  assertFailedCleanly,
  assertGuestUsable,
  checkRecords,
  describeMigration,
  MigrationRig,
  type ProxyProcess,
  runProxyCli,
  type Side,
  type SideSpec,
  START_HOLDER,
  transferEnds,
  transferStarts,
  waitTransferEnd,
} from "./_migration_rig.ts";

/**
 * Bytes kept by the truncation fault. virtiofsd's blob is 14 bytes for a guest that only
 * mounted the share and ~60 once it holds files open (every source here does), so 8 always
 * cuts it.
 */
const TRUNCATE_AT = 8;
const DELAY_MS = 1500;

/** A fault and what its proxy's log must show afterwards. */
interface FaultCase {
  fault: string;
  on: "source" | "destination";
  /** Checks the faulty proxy's records. */
  logShows: (records: LogRecord[]) => void;
  /** What `log explain` must conclude from the two proxies' logs alone. */
  explains: Pick<Explanation, "step" | "side" | "culprit"> & { culpritSide?: "source" };
}

const CASES: FaultCase[] = [
  {
    fault: "state-corrupt",
    on: "source",
    explains: {
      step: "CHECK_DEVICE_STATE",
      side: "destination",
      culprit: "proxy",
      culpritSide: "source",
    },
    logShows: (records) => {
      const [save] = transferEnds(records, "SAVE");
      assert.ok(save?.faults?.includes("state-corrupt"), JSON.stringify(save));
    },
  },
  {
    fault: `state-truncate:${TRUNCATE_AT}`,
    on: "source",
    explains: { step: "SAVE", side: "source", culprit: "proxy" },
    logShows: (records) => {
      const [save] = transferEnds(records, "SAVE");
      assert.equal(save?.bytes, TRUNCATE_AT, JSON.stringify(save));
      assert.ok(save.bytesIn > TRUNCATE_AT, JSON.stringify(save));
    },
  },
  {
    fault: "check-fail",
    on: "source",
    explains: { step: "CHECK_DEVICE_STATE", side: "source", culprit: "proxy" },
    logShows: (records) => {
      const [check] = checkRecords(records);
      assert.equal(check?.backendResult, 0, JSON.stringify(check));
      assert.notEqual(check.result, 0, JSON.stringify(check));
    },
  },
  {
    fault: "state-refuse",
    on: "source",
    explains: { step: "SET_DEVICE_STATE_FD", side: "source", culprit: "proxy" },
    logShows: (records) => {
      assert.deepEqual(transferEnds(records, "SAVE").filter((end) => end.ok), []);
      const notes = records.filter((r) => r.type === "device-state" && r.event === "note");
      assert.ok(JSON.stringify(notes).includes("state-refuse"), JSON.stringify(notes));
    },
  },
  {
    fault: "state-corrupt",
    on: "destination",
    explains: { step: "CHECK_DEVICE_STATE", side: "destination", culprit: "proxy" },
    logShows: (records) => {
      const [load] = transferEnds(records, "LOAD");
      assert.ok(load?.faults?.includes("state-corrupt"), JSON.stringify(load));
      const [check] = checkRecords(records);
      assert.notEqual(check?.result, 0, JSON.stringify(check));
    },
  },
  {
    fault: "check-fail",
    on: "destination",
    explains: { step: "CHECK_DEVICE_STATE", side: "destination", culprit: "proxy" },
    logShows: (records) => {
      const [check] = checkRecords(records);
      assert.equal(check?.backendResult, 0, JSON.stringify(check));
      assert.notEqual(check.result, 0, JSON.stringify(check));
    },
  },
];

function sourceSpec(name: string, faults: string[]): SideSpec {
  return {
    name,
    backend: "rust",
    proxies: [faults.flatMap((fault) => ["--fault", fault])],
  };
}

function destinationSpec(name: string, faults: string[] = []): SideSpec {
  return { ...sourceSpec(name, faults), incoming: true };
}

/** Starts all sides at once; waits for every start before reporting the first failure. */
async function startSides(rig: MigrationRig, specs: SideSpec[]): Promise<Side[]> {
  const settled = await Promise.allSettled(specs.map((spec) => rig.startSide(spec)));
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failure) throw failure.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<Side>).value);
}

/**
 * Retries `c.logShows` for a few seconds: a transfer-end record is written after the
 * switch-over (about 100 ms after its copy ended), so it may not be in the log the moment QEMU
 * reports the migration's end.
 */
async function eventuallyShows(c: FaultCase, proxy: ProxyProcess): Promise<void> {
  let last: unknown;
  await waitFor(async () => {
    try {
      c.logShows(await proxy.records());
      return true;
    } catch (error) {
      last = error;
      return undefined;
    }
  }, {
    what: `the log of fault ${c.fault} to show its records`,
    timeoutMs: 5_000,
    detail: () => (last instanceof Error ? last.message : String(last)),
  });
}

/**
 * `log explain` on both proxies' logs names the case's failing step, side and culprit (retried
 * like `eventuallyShows`: the transfer-end records that carry the fingerprints come late).
 */
async function eventuallyExplains(c: FaultCase, src: Side, dst: Side): Promise<void> {
  let text = "";
  await waitFor(async () => {
    const e = explainMigration(await src.frontProxy.records(), await dst.frontProxy.records());
    text = formatExplanation(e);
    const got = { step: e.step, side: e.side, culprit: e.culprit };
    const want = { step: c.explains.step, side: c.explains.side, culprit: c.explains.culprit };
    return e.failed && JSON.stringify(got) === JSON.stringify(want) &&
        (c.explains.culpritSide === undefined || e.culpritSide === c.explains.culpritSide)
      ? true
      : undefined;
  }, {
    what: `log explain to name ${JSON.stringify(c.explains)} for ${c.on} fault ${c.fault}`,
    timeoutMs: 5_000,
    detail: () => text,
  });
  console.log(`${c.on} fault ${c.fault}, explained:\n${text}`);
}

/**
 * The log tools on a real proxy's log: a log with a failed step has problems (`log show
 * --problems` prints them, `log summary` counts them, both exit 1); a clean one has none (exit
 * 0). Printed, as the explanations are.
 */
async function logToolsSay(what: string, proxy: ProxyProcess, failed: boolean): Promise<void> {
  const show = await runProxyCli(["log", "show", proxy.logPath, "--problems"]);
  const summary = await runProxyCli(["log", "summary", proxy.logPath]);
  const detail = `${what}:\n${show.stdout}${show.stderr}\n${summary.stdout}${summary.stderr}`;
  assert.equal(show.code, failed ? 1 : 0, `log show --problems, ${detail}`);
  assert.equal(summary.code, failed ? 1 : 0, `log summary, ${detail}`);
  if (failed) {
    assert.match(summary.stdout, /, [1-9]\d* problem\(s\)/, detail);
    assert.notEqual(show.stdout.trim(), "", detail);
  } else assert.match(summary.stdout, /\nno problems\n?$/, detail);
  console.log(`${what}, log show --problems:\n${show.stdout || "(none)\n"}`);
}

/** File-name friendly label of a case. */
function label(c: FaultCase): string {
  return `${c.on === "source" ? "s" : "d"}-${c.fault.replace(/[^a-z0-9]+/g, "-")}`;
}

Deno.test("faults: every broken transfer fails cleanly; a delayed one succeeds later", async () => {
  await using rig = await MigrationRig.create("mig-faults");
  const sourceCases = CASES.filter((c) => c.on === "source");
  const destinationCases = CASES.filter((c) => c.on === "destination");

  const bootStarted = Date.now();
  const [clean, delayed, ...faulty] = await startSides(rig, [
    sourceSpec("clean", []),
    sourceSpec("delayed", [`state-delay:${DELAY_MS}`]),
    ...sourceCases.map((c) => sourceSpec(label(c), [c.fault])),
  ]);
  console.log(`${2 + faulty.length} sources booted in parallel in ${Date.now() - bootStarted} ms`);
  // Open files give virtiofsd a state with handles to move (and to break).
  for (const side of [clean, delayed, ...faulty]) await side.vm.agent.check(START_HOLDER);

  const failCase = async (c: FaultCase, src: Side, dstFaults: string[]) => {
    const dst = await rig.startSide(destinationSpec(`to-${label(c)}`, dstFaults));
    const result = await rig.migrate(src, dst);
    await assertFailedCleanly(result, src, dst);
    const faultyProxy = c.on === "source" ? src.frontProxy : dst.frontProxy;
    try {
      await eventuallyShows(c, faultyProxy);
      await eventuallyExplains(c, src, dst);
      await logToolsSay(`${c.on} fault ${c.fault}`, faultyProxy, true);
    } catch (error) {
      throw new Error(
        `${c.on} fault ${c.fault}: ${(error as Error).message}\n${await src
          .diagnostics()}\n${await dst
          .diagnostics()}`,
      );
    }
    await assertGuestUsable(src, rig.share, label(c));
  };

  for (const [index, c] of sourceCases.entries()) await failCase(c, faulty[index], []);
  for (const c of destinationCases) await failCase(c, clean, [c.fault]);

  // The clean source survived two failed attempts and now migrates: the baseline downtime.
  const cleanDestination = await rig.startSide(destinationSpec("to-clean"));
  const baseline = await rig.migrate(clean, cleanDestination);
  assert.equal(baseline.status, "completed", describeMigration(baseline));
  await waitTransferEnd(cleanDestination.frontProxy, "LOAD");
  let explained = "";
  await waitFor(async () => {
    const e = explainMigration(
      await clean.frontProxy.records(),
      await cleanDestination.frontProxy.records(),
    );
    explained = formatExplanation(e);
    return !e.failed && e.fingerprints.equal === true ? true : undefined;
  }, {
    what: "log explain to call the clean migration a success with equal fingerprints",
    timeoutMs: 5_000,
    detail: () => explained,
  });
  await logToolsSay("clean migration, destination", cleanDestination.frontProxy, false);
  const cleanSummary = await runProxyCli(["log", "summary", cleanDestination.frontProxy.logPath]);
  console.log(`clean migration, destination, log summary:\n${cleanSummary.stdout}`);
  const slow = await rig.migrate(delayed, await rig.startSide(destinationSpec("to-delayed")));
  assert.equal(
    slow.status,
    "completed",
    `${describeMigration(slow)}\n${await delayed.diagnostics()}`,
  );
  assert.equal(slow.destinationState, "running");
  console.log(
    `downtime without delay ${baseline.downtimeMs} ms, with state-delay:${DELAY_MS} ` +
      `${slow.downtimeMs} ms`,
  );
  // The SAVE happens with the VM stopped, so the whole delay lands in the downtime. (Compared
  // with the delay itself, not baseline + delay: under TCG a baseline alone can jump by
  // hundreds of ms between runs.)
  assert.ok(
    slow.downtimeMs! >= DELAY_MS * 0.95 && slow.downtimeMs! > baseline.downtimeMs!,
    `downtime ${slow.downtimeMs} ms should exceed the ${DELAY_MS} ms delay and the ` +
      `${baseline.downtimeMs} ms baseline`,
  );
  await waitTransferEnd(delayed.frontProxy, "SAVE");
  const records = await delayed.frontProxy.records();
  const [start] = transferStarts(records, "SAVE");
  const [save] = transferEnds(records, "SAVE");
  assert.equal(save?.ok, true, JSON.stringify(save));
  assert.ok(save.faults?.includes(`state-delay:${DELAY_MS}`), JSON.stringify(save));
  // durationMs times the byte stream only (it starts after the delay); the held-back time shows
  // between the start and end records.
  const heldMs = Date.parse(save.ts) - Date.parse(start.ts);
  assert.ok(heldMs >= DELAY_MS * 0.9, `transfer-start -> transfer-end took ${heldMs} ms`);
});
