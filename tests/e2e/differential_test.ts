/**
 * Transparency, proved by difference (issue 9 §1): the same scripted conversation is played
 * directly between the peers and through the proxy (`bin/vhost-user-proxy run`, one subprocess
 * for the whole test), each time against an identical fresh back-end, and what every socket
 * received is compared byte for byte — headers, payloads, the fds (kind, tag, access, flags,
 * the very file the sender attached) and the device-state bytes.
 *
 * - Scripted back-ends (a responder answering per the catalogue from the bytes it received):
 *   the hostile table's `relay` rows, a seeded batch of fuzz conversations the oracle accepts,
 *   the newest spec text's conversation (request 45, a 2056-byte GET_SHMEM_CONFIG reply with
 *   regions at ids 0 and 5, bits 20/21/22/23, SET_DEVICE_STATE_FD phase 1), one instance of
 *   every request of the catalogue on both channels (replies with fds included), postcopy,
 *   device state in phase 0 (SAVE and LOAD through the proxy's pipe). Both what the back-end
 *   and what the front-end received are compared; fd identity is exempt only where the proxy
 *   substitutes its own file by design (the back-end channel's socket, the phase-0 state pipe).
 * - Real back-ends (virtiofsd 1.13, the C virtiofsd, DPDK's vhost port in testpmd) answering a
 *   QEMU-like start-up: the replies the front-end got are compared. No field is exempt: none
 *   of the replies of this conversation is nondeterministic by nature (features, queue counts,
 *   acks, vring bases of rings that processed nothing, a device state of an unmounted share).
 *
 * A missing peer fails the test (never skips). FUZZ_SEED and DIFF_FUZZ_CONVERSATIONS override
 * the fuzz batch; DIFF_DUMP=<dir> writes every pair of recordings there as JSON.
 *
 * Run: `deno test -A tests/e2e/differential_test.ts`
 */

import assert from "node:assert/strict";
import type { LogRecord, ProblemRecord } from "../../log/record.ts";
import {
  requirePeers,
  startCVirtiofsd,
  startTestpmd,
  startVirtiofsd,
  TestDir,
} from "../harness/mod.ts";
import { ScriptedListener, ScriptedPeer } from "../support/scripted_peer.ts";
import {
  compareRecordings,
  type Conversation,
  type Link,
  oracleFaults,
  play,
  type Recording,
} from "../support/differential.ts";
import {
  catalogueConversation,
  deviceStateConversation,
  fuzzConversation,
  hostileRelayConversations,
  layoutsConversation,
  newestSpecConversation,
  postcopyConversation,
} from "../support/differential_corpus.ts";
import { type InitOptions, qemuLikeInit } from "../support/qemu_like_init.ts";
import { type ProxyProcess, startProxyProcess } from "./_proxy.ts";

const NO_SANITIZERS = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };
const FUZZ_SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261203);
const FUZZ_CONVERSATIONS = Number(Deno.env.get("DIFF_FUZZ_CONVERSATIONS") ?? 120);
/** A directory to write every pair of recordings to, as JSON (for post-mortems). */
const DUMP = Deno.env.get("DIFF_DUMP");

function dump(d: Recording, p: Recording): void {
  if (DUMP === undefined) return;
  Deno.mkdirSync(DUMP, { recursive: true });
  const file = d.name.replace(/[^A-Za-z0-9.-]+/g, "_").slice(0, 120);
  Deno.writeTextFileSync(
    `${DUMP}/${file}.json`,
    JSON.stringify({ direct: d, proxied: p }, null, 1),
  );
}

/**
 * Plays each conversation both ways; fails with every difference found. With `oracle`, each
 * direct recording must also pass the fuzz oracle (the well-formed corpus).
 */
function differential(
  conversations: Conversation[],
  direct: Link,
  proxied: Link,
  oracle = true,
): void {
  const differences: string[] = [];
  const interposed: string[] = [];
  let messages = 0, fds = 0;
  const kinds = new Set<string>();
  for (const c of conversations) {
    const d = play(c, direct);
    for (const e of d.entries) {
      if ("name" in e) {
        kinds.add(`${e.at === "back" || e.at === "front" ? "" : "channel "}${e.name}`);
      }
    }
    if (oracle) {
      const faults = oracleFaults(c, d);
      assert.deepEqual(faults, [], `${c.name} is well-formed (the oracle accepts it direct)`);
    } else {
      const events = d.entries.filter((e) => "event" in e);
      assert.deepEqual(events, [], `${c.name} ran to its end direct`);
    }
    const p = play(c, proxied);
    dump(d, p);
    const cmp = compareRecordings(d, p);
    differences.push(...cmp.differences);
    interposed.push(...cmp.interposed);
    messages += d.messages;
    fds += d.fds;
  }
  console.log(
    `${conversations.length} conversations, ${messages} messages and ${fds} fds received per ` +
      `path (${kinds.size} kinds of message), ${differences.length} differing; fd substitutions ` +
      `by design: ${interposed.length}`,
  );
  for (const line of new Set(interposed.map((x) => x.replace(/^.* step \d+: /, "")))) {
    console.log(`  interposed: ${line}`);
  }
  assert.deepEqual(differences, [], "the proxy is transparent");
}

/** The real back-end, fresh for each path, answering the QEMU-like start-up. */
async function realDifferential(
  label: string,
  start: () => Promise<{ stop(): Promise<unknown> }>,
  backendPath: string,
  proxy: ProxyProcess,
  options: InitOptions,
): Promise<void> {
  const run = async (path: string): Promise<Recording> => {
    const backend = await start();
    try {
      const front = ScriptedPeer.connect(path);
      try {
        const r = qemuLikeInit(front, options);
        return { ...r, name: `${label}, ${r.name}` };
      } finally {
        front.close();
      }
    } finally {
      await backend.stop();
    }
  };
  const d = await run(backendPath);
  const p = await run(proxy.listenPath);
  dump(d, p);
  const names = d.entries.map((e) => "name" in e ? e.name : "stream" in e ? "state" : e.event);
  console.log(`${d.messages} replies direct: ${names.join(", ")}`);
  const events = d.entries.filter((e) => "event" in e);
  assert.deepEqual(events, [], "the conversation ran to its end direct");
  const cmp = compareRecordings(d, p);
  assert.deepEqual(cmp.differences, [], "the front-end got the same replies through the proxy");
}

Deno.test({
  name: "differential: scripted and real back-ends get the same conversation direct and via the " +
    "proxy",
  ...NO_SANITIZERS,
  fn: async (t) => {
    await using dir = await TestDir.create("diff");
    const backendPath = dir.join("back.sock");
    const listener = new ScriptedListener(backendPath);
    await using proxy = await startProxyProcess({
      dir: dir.path,
      listenPath: dir.join("front.sock"),
      backendPath,
      extraArgs: ["--quiet", "--stuck-after", "0"],
    });
    const direct: Link = {
      open: () => {
        const front = ScriptedPeer.connect(backendPath);
        return { front, back: listener.accept() };
      },
    };
    const proxied = {
      opened: 0,
      open() {
        const front = ScriptedPeer.connect(proxy.listenPath);
        this.opened++;
        return { front, back: listener.accept() };
      },
    };

    await t.step({
      name: "the hostile table's relay rows",
      ...NO_SANITIZERS,
      fn: () => {
        const { conversations, excluded } = hostileRelayConversations();
        for (const x of excluded) console.log(`  left out: ${x}`);
        assert.ok(conversations.length >= 20, `${conversations.length} rows`);
        differential(conversations, direct, proxied);
      },
    });
    await t.step({
      name: `${FUZZ_CONVERSATIONS} fuzz conversations (seed ${FUZZ_SEED}), unmutated`,
      ...NO_SANITIZERS,
      fn: () => {
        const batch = Array.from(
          { length: FUZZ_CONVERSATIONS },
          (_, i) => fuzzConversation(FUZZ_SEED, i),
        );
        differential(batch, direct, proxied);
      },
    });
    await t.step({
      name: "the newest spec text: 45, GET_SHMEM_CONFIG ids 0 and 5, bit 23, phase 1",
      ...NO_SANITIZERS,
      fn: () => differential([newestSpecConversation()], direct, proxied),
    });
    await t.step({
      name: "every request of the catalogue, postcopy, negotiated layouts",
      ...NO_SANITIZERS,
      fn: () => {
        differential([catalogueConversation()], direct, proxied);
        // The oracle does not model postcopy (a SET_MEM_TABLE answered, an 8-byte one sent)
        // nor the layouts that F_XEN_MMAP changes.
        differential([postcopyConversation(), layoutsConversation()], direct, proxied, false);
      },
    });
    await t.step({
      name: "device state in phase 0: SAVE and LOAD through the proxy's pipe",
      ...NO_SANITIZERS,
      fn: () => differential([deviceStateConversation()], direct, proxied),
    });
    listener.close();

    // ---- real back-ends: a fresh one per path, on the path the proxy connects to ----------
    const share = await dir.mkdir("share");
    await Deno.writeTextFile(`${share}/file.txt`, "differential\n");
    await t.step({
      name: "virtiofsd 1.13",
      ...NO_SANITIZERS,
      fn: async () => {
        await requirePeers("virtiofsd");
        await realDifferential(
          "virtiofsd 1.13",
          () => startVirtiofsd({ socketPath: backendPath, sharedDir: share, logDir: dir.path }),
          backendPath,
          proxy,
          { device: "fs", queues: 2 },
        );
      },
    });
    await t.step({
      name: "the C virtiofsd",
      ...NO_SANITIZERS,
      fn: async () => {
        await requirePeers("virtiofsd-c");
        await realDifferential(
          "C virtiofsd",
          () => startCVirtiofsd({ socketPath: backendPath, sharedDir: share, logDir: dir.path }),
          backendPath,
          proxy,
          { device: "fs", queues: 2 },
        );
      },
    });
    await t.step({
      name: "DPDK's vhost back-end (testpmd net_vhost)",
      ...NO_SANITIZERS,
      fn: async () => {
        await requirePeers("testpmd");
        await realDifferential(
          "DPDK testpmd",
          () => startTestpmd({ role: "backend", socketPath: backendPath, logDir: dir.path }),
          backendPath,
          proxy,
          { device: "net", queues: 2 },
        );
      },
    });

    await t.step({
      name: "every proxied conversation was a proxy session, and none logged an error",
      ...NO_SANITIZERS,
      fn: async () => {
        const records: LogRecord[] = await proxy.records();
        const sessions = records.filter((r) => r.type === "session-start").length;
        assert.equal(sessions, proxied.opened + 3, "one session per proxied play");
        const errors = records.filter((r): r is ProblemRecord => r.type === "error");
        assert.deepEqual(errors, []);
        const warned = records.filter((r) => r.type === "message" && r.warnings?.length);
        const kinds = new Set(
          warned.flatMap((r) => r.type === "message" ? r.warnings ?? [] : [])
            .map((w) => w.replace(/0x[0-9a-f]+|\d+/g, "N")),
        );
        console.log(`${sessions} sessions; warnings on relayed messages: ${kinds.size} kinds`);
        for (const w of kinds) console.log(`  ${w}`);
      },
    });
  },
});
