/**
 * `restart-backend` with scripted peers in-process (issue 13): the exact messages the new
 * back-end receives (the negotiation replayed, the memory table with QEMU's memfd, LOAD of the
 * bytes the old one saved, its rings started from the saved bases and kicked), and, for a
 * refusal at each step, the rollback the old back-end receives (its rings started again from
 * the bases it reported), after which QEMU's session goes on with the old back-end.
 *
 * The proxy's engine runs in its Worker; the test thread plays QEMU, the old and the new
 * back-end, serving both back-ends while the restart runs.
 *
 * Run: `deno test -A tests/unit/restart_test.ts`
 *
 * @module
 */

import assert from "node:assert/strict";
import { closeAll, type OwnedFd } from "../../ffi/fd.ts";
import { createMemfd, readFd, writeFd } from "../../ffi/pipe.ts";
import { createEventFd } from "../../ffi/poll.ts";
import { socketPair } from "../../ffi/socket.ts";
import type { LogRecord, RestartStepRecord } from "../../log/record.ts";
import { type Rig, rig } from "../support/proxy_rig.ts";
import { hex, receive } from "../support/differential.ts";
import { ScriptedListener, type ScriptedPeer } from "../support/scripted_peer.ts";
import {
  logArea,
  memTable,
  PF,
  readU64,
  u64,
  vringAddr,
  vringFile,
  vringState,
} from "../hostile/_wire.ts";

const REQ = 0x1, NEED_REPLY = 0x9, REPLY = 0x5;

const CODES = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  SET_VRING_ENABLE: 18,
  SET_BACKEND_REQ_FD: 21,
  SET_STATUS: 39,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;
type Name = keyof typeof CODES;
const NAMES = new Map<number, Name>(Object.entries(CODES).map(([k, v]) => [v, k as Name]));

const VIRTIO = (1n << 32n) | (1n << 30n); // VERSION_1, PROTOCOL_FEATURES
const LOG_ALL = 1n << 26n;
/** The back-ends offer dirty-page logging too; QEMU acks it only while migrating. */
const OFFERED = VIRTIO | LOG_ALL;
const PROTOCOL = PF.REPLY_ACK | PF.BACKEND_REQ | PF.DEVICE_STATE | PF.LOG_SHMFD | PF.STATUS;
const RINGS = [0, 1];
const RING_NUM = 128;
/** What the old back-end reports from GET_VRING_BASE: the guest got this far. */
const SAVED_BASES = [17, 42];
const BLOB = new TextEncoder().encode("the old back-end's state: open files, handles…");
const GUEST_RAM = 1 << 20;

/** The fds QEMU handed over, labelled by their identity (eventfd-id, memfd inode). */
class Labels {
  readonly #byId = new Map<string, string>();
  readonly held: OwnedFd[] = [];

  /** Remembers `fd` as `label`; returns the fd to send (QEMU keeps a dup). */
  add(fd: OwnedFd, label: string): OwnedFd {
    this.#byId.set(identity(fd.fd), label);
    this.held.push(fd.dup());
    return fd;
  }

  of(fd: OwnedFd): string {
    return this.#byId.get(identity(fd.fd)) ?? kind(fd.fd);
  }

  /** The eventfd counter of the held fd labelled `label`. */
  count(label: string): bigint {
    const fd = this.held.find((f) => this.#byId.get(identity(f.fd)) === label);
    assert.ok(fd, label);
    const info = Deno.readTextFileSync(`/proc/self/fdinfo/${fd.fd}`);
    return BigInt(`0x${/eventfd-count:\s*([0-9a-f]+)/.exec(info)![1]}`);
  }
}

function kind(fd: number): string {
  const link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  if (link.startsWith("socket:")) return "socket";
  if (link.startsWith("pipe:")) {
    const flags = parseInt(
      /flags:\s*([0-7]+)/.exec(
        Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`),
      )![1],
      8,
    );
    return (flags & 3) === 1 ? "pipe-w" : "pipe-r";
  }
  return link;
}

function identity(fd: number): string {
  const info = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  const id = /eventfd-id:\s*(\d+)/.exec(info)?.[1];
  if (id !== undefined) return `eventfd ${id}`;
  return `inode ${Deno.statSync(`/proc/self/fd/${fd}`).ino}`;
}

/** One message as a back-end saw it: name, NEED_REPLY, payload bytes, fds by label. */
function line(name: Name, payload: Uint8Array, fds: string[] = [], needReply = true): string {
  return `${name}${needReply ? "!" : ""} ${hex(payload)}${fds.length ? ` [${fds.join(" ")}]` : ""}`;
}

const empty: Uint8Array = new Uint8Array(0);
const ring = (q: number, num = 0) => vringState(q, num);
const stateParams = (direction: number) => {
  const p = new Uint8Array(new ArrayBuffer(8));
  new DataView(p.buffer).setUint32(0, direction, true);
  return p;
};
const mem = () => memTable([{ gpa: 0n, size: BigInt(GUEST_RAM), uaddr: 0x7f00_0000_0000n }]);
const addr = (q: number, flags = 0) =>
  vringAddr({ index: q, flags, desc: 0x1000n * BigInt(q + 1), used: 0x10000n, avail: 0x20000n });

/** Which request a scripted back-end refuses, and how. */
interface Refusal {
  name: Name;
  /** Refuse the n-th such request (1 = the first; default 1). */
  nth?: number;
}

/** A scripted back-end: answers like virtiofsd, records what it got. */
class Backend {
  readonly seen: string[] = [];
  readonly peer: ScriptedPeer;
  readonly labels: Labels;
  #refusal?: Refusal;
  /** GET_VRING_BASE answers, by ring. */
  bases = SAVED_BASES;
  loaded?: Uint8Array;
  closed = false;
  readonly #counts = new Map<Name, number>();
  #loadFd?: OwnedFd;
  readonly #kept: OwnedFd[] = [];

  constructor(peer: ScriptedPeer, labels: Labels, refusal?: Refusal) {
    this.peer = peer;
    this.labels = labels;
    this.#refusal = refusal;
  }

  /** Refuse `refusal` from now on (its n-th is counted from here). */
  set refusal(refusal: Refusal | undefined) {
    this.#refusal = refusal;
    this.#counts.clear();
  }

  /** Handles one message if one is there; false if none. */
  serve(): boolean {
    if (this.closed) return false;
    const got = receive(this.peer, 0);
    if (typeof got === "string") {
      if (got === "closed") this.closed = true;
      else assert.match(got, /^nothing within/, got);
      return false;
    }
    const name = NAMES.get(got.request);
    assert.ok(name, `unexpected request ${got.request}`);
    const n = (this.#counts.get(name) ?? 0) + 1;
    this.#counts.set(name, n);
    const refuse = this.#refusal?.name === name && (this.#refusal.nth ?? 1) === n;
    const needReply = (got.flags & 0x8) !== 0;
    this.seen.push(line(name, got.payload, got.fds.map((f) => this.labels.of(f)), needReply));
    const reply = (payload: Uint8Array) =>
      this.peer.send({ request: got.request, flags: REPLY, payload });
    switch (name) {
      case "GET_FEATURES":
        reply(u64(OFFERED));
        break;
      case "SET_LOG_BASE": // always answered with F_LOG_SHMFD
        reply(u64(0));
        break;
      case "GET_PROTOCOL_FEATURES":
        reply(u64(PROTOCOL));
        break;
      case "GET_VRING_BASE": {
        const q = new DataView(got.payload.buffer).getUint32(0, true);
        reply(refuse ? ring(q + 1, 0) : ring(q, this.bases[q]));
        break;
      }
      case "SET_DEVICE_STATE_FD": {
        const direction = new DataView(got.payload.buffer).getUint32(0, true);
        const [fd] = got.fds.splice(0);
        if (refuse) {
          fd.close();
          reply(u64(1));
        } else if (direction === 0) {
          assert.equal(writeFd(fd, BLOB), BLOB.length);
          fd.close();
          reply(u64(0x100));
        } else {
          this.#loadFd = fd;
          reply(u64(0x100));
        }
        break;
      }
      case "CHECK_DEVICE_STATE":
        if (this.#loadFd) this.loaded = readAll(this.#loadFd);
        reply(u64(refuse ? 1 : 0));
        break;
      default:
        if (needReply) reply(u64(refuse ? 1 : 0));
    }
    this.#kept.push(...got.fds);
    return true;
  }

  close(): void {
    closeAll(this.#kept);
    this.#loadFd?.close();
    this.peer.close();
  }
}

function readAll(fd: OwnedFd): Uint8Array {
  const out: number[] = [];
  const buf = new Uint8Array(new ArrayBuffer(4096));
  for (;;) {
    const n = readFd(fd, buf);
    if (n <= 0) break;
    out.push(...buf.subarray(0, n));
  }
  fd.close();
  return new Uint8Array(out);
}

/** QEMU sends `name` through the proxy, `back` serves it; returns the reply's payload. */
function qemuSends(
  r: Rig,
  back: Backend,
  name: Name,
  flags: number,
  payload: Uint8Array = empty,
  fds: OwnedFd[] = [],
): Uint8Array {
  {
    r.front.send({ request: CODES[name], flags, payload, fds });
    while (!back.serve()) { /* the proxy relays it */ }
    if (name.startsWith("GET_") || name === "SET_LOG_BASE" || flags === NEED_REPLY) {
      const reply = r.front.expect();
      assert.equal(reply.request, CODES[name]);
      closeAll(reply.fds);
      return reply.payload;
    }
    return empty;
  }
}

/** QEMU's start-up through the proxy, answered by `back`; returns what QEMU keeps. */
function startUp(r: Rig, back: Backend, labels: Labels): { channel: OwnedFd } {
  const ask = (name: Name, flags: number, payload: Uint8Array = empty, fds: OwnedFd[] = []) =>
    qemuSends(r, back, name, flags, payload, fds);
  assert.equal(readU64(ask("GET_FEATURES", REQ)), OFFERED);
  assert.equal(readU64(ask("GET_PROTOCOL_FEATURES", REQ)), PROTOCOL);
  ask("SET_PROTOCOL_FEATURES", REQ, u64(PROTOCOL));
  ask("SET_OWNER", NEED_REPLY);
  const [qemuEnd, theirs] = socketPair();
  ask("SET_BACKEND_REQ_FD", NEED_REPLY, empty, [theirs]);
  ask("SET_FEATURES", NEED_REPLY, u64(VIRTIO));
  ask("SET_MEM_TABLE", NEED_REPLY, mem(), [labels.add(createMemfd("guest-ram", GUEST_RAM), "ram")]);
  for (const q of RINGS) {
    ask("SET_VRING_NUM", NEED_REPLY, ring(q, RING_NUM));
    ask("SET_VRING_ADDR", NEED_REPLY, addr(q));
    ask("SET_VRING_BASE", NEED_REPLY, ring(q, 0));
    ask("SET_VRING_KICK", NEED_REPLY, vringFile(q, false), [
      labels.add(createEventFd(), `kick${q}`),
    ]);
    ask("SET_VRING_CALL", NEED_REPLY, vringFile(q, false), [
      labels.add(createEventFd(), `call${q}`),
    ]);
    ask("SET_VRING_ERR", NEED_REPLY, vringFile(q, false), [labels.add(createEventFd(), `err${q}`)]);
  }
  for (const q of RINGS) ask("SET_VRING_ENABLE", NEED_REPLY, ring(q, 1));
  return { channel: qemuEnd };
}

/** Runs a control request while serving the back-ends (the new one once it connects). */
async function restartServing(
  r: Rig,
  old: Backend,
  next: {
    listener: ScriptedListener;
    labels: Labels;
    refusal?: Refusal;
    bases?: number[];
    peer?: Backend;
  },
  backend = next.listener.path,
): Promise<Record<string, unknown>> {
  let result: Record<string, unknown> | undefined;
  const pending = r.proxy.control({ cmd: "restart-backend", backend }).then((v) => result = v);
  const deadline = performance.now() + 10_000;
  while (result === undefined) {
    if (next.peer === undefined) {
      try {
        next.peer = new Backend(next.listener.accept(0), next.labels, next.refusal);
        if (next.bases) next.peer.bases = next.bases;
      } catch {
        // not yet connected
      }
    }
    const busy = old.serve() || (next.peer?.serve() ?? false);
    if (!busy) await new Promise((res) => setTimeout(res, 1));
    assert.ok(performance.now() < deadline, "the restart did not end within 10 s");
  }
  await pending;
  while (old.serve() || next.peer?.serve());
  return result;
}

/** The set-up messages the new back-end must get, before the pause. */
function expectedPrepare(): string[] {
  return [
    line("GET_FEATURES", empty, [], false),
    line("GET_PROTOCOL_FEATURES", empty, [], false),
    line("SET_PROTOCOL_FEATURES", u64(PROTOCOL), [], false),
    line("SET_OWNER", empty),
    line("SET_BACKEND_REQ_FD", empty, ["socket"]),
    line("SET_FEATURES", u64(VIRTIO)),
    line("SET_MEM_TABLE", mem(), ["ram"]),
  ];
}

/** What stopping the old back-end's rings sends it (QEMU's vhost_dev_stop). */
function expectedStop(): string[] {
  return [
    ...RINGS.map((q) => line("SET_VRING_ENABLE", ring(q, 0))),
    ...RINGS.map((q) => line("GET_VRING_BASE", ring(q, 0), [], false)),
  ];
}

/** Rings started from the saved bases, as vhost_dev_start does, then enabled. */
function expectedStart(bases = SAVED_BASES): string[] {
  return [
    ...RINGS.flatMap((q) => [
      line("SET_VRING_NUM", ring(q, RING_NUM)),
      line("SET_VRING_BASE", ring(q, bases[q])),
      line("SET_VRING_ADDR", addr(q)),
      line("SET_VRING_KICK", vringFile(q, false), [`kick${q}`]),
      line("SET_VRING_CALL", vringFile(q, false), [`call${q}`]),
      line("SET_VRING_ERR", vringFile(q, false), [`err${q}`]),
    ]),
    ...RINGS.map((q) => line("SET_VRING_ENABLE", ring(q, 1))),
  ];
}

/** The old back-end's set-up as QEMU sent it (what it saw before the restart). */
function setupLength(old: Backend): number {
  return old.seen.length;
}

function steps(records: LogRecord[]): string[] {
  return records.filter((x): x is RestartStepRecord => x.type === "restart" && x.event === "step")
    .map((s) => `${s.step}${s.ok ? "" : " FAILED"}`);
}

/** QEMU asks GET_FEATURES after the restart: `back` must be the one answering. */
function qemuGoesOnWith(r: Rig, back: Backend): void {
  r.front.send({ request: CODES.GET_FEATURES, flags: REQ });
  const deadline = performance.now() + 3000;
  while (!back.serve()) assert.ok(performance.now() < deadline, "the request did not arrive");
  assert.match(back.seen.at(-1)!, /^GET_FEATURES /);
  const reply = r.front.expect();
  assert.equal(reply.request, CODES.GET_FEATURES);
  assert.equal(readU64(reply.payload), OFFERED);
}

async function withRestartRig(
  body: (r: Rig, old: Backend, labels: Labels, listener: ScriptedListener) => Promise<void>,
): Promise<void> {
  const r = await rig({ restartable: true });
  const labels = new Labels();
  const old = new Backend(r.back, labels);
  const listener = new ScriptedListener(`${r.dir}/new.sock`);
  let channel: OwnedFd | undefined;
  try {
    channel = startUp(r, old, labels).channel;
    await body(r, old, labels, listener);
  } finally {
    channel?.close();
    closeAll(labels.held);
    listener.close();
    await r.stop();
  }
}

Deno.test("restart-backend: the new back-end gets the negotiation replayed, QEMU's memfd, LOAD of the saved bytes and its rings from the saved bases, kicked; the old one is let go", async () => {
  await withRestartRig(async (r, old, labels, listener) => {
    const before = setupLength(old);
    const next = { listener, labels, peer: undefined as Backend | undefined };
    const result = await restartServing(r, old, next);
    assert.equal(result.ok, true, JSON.stringify(result));
    assert.equal(result.withState, true);
    assert.equal(result.stateBytes, BLOB.length);
    assert.ok(typeof result.pauseMs === "number" && result.pauseMs >= 0);
    const fresh = next.peer!;
    assert.deepEqual(fresh.seen, [
      ...expectedPrepare(),
      line("SET_DEVICE_STATE_FD", stateParams(1), ["pipe-r"], false),
      line("CHECK_DEVICE_STATE", empty, [], false),
      ...expectedStart(),
    ]);
    assert.deepEqual(fresh.loaded, BLOB, "the new back-end loaded what the old one saved");
    assert.deepEqual(old.seen.slice(before), [
      ...expectedStop(),
      line("SET_DEVICE_STATE_FD", stateParams(0), ["pipe-w"], false),
      line("CHECK_DEVICE_STATE", empty, [], false),
    ]);
    // Each ring was kicked once, so what the guest queued during the pause is seen.
    for (const q of RINGS) assert.equal(labels.count(`kick${q}`), 1n, `kick${q}`);
    assert.ok(old.peer.closedWithin(2000), "the old back-end's connection is closed");
    qemuGoesOnWith(r, fresh);
    assert.deepEqual(steps(r.records), [
      "connect",
      "negotiate",
      "memory table",
      "stop old rings",
      "save",
      "load",
      "start new rings",
      "swap",
    ]);
    fresh.close();
  });
});

/** A refusal, the step it fails, and whether the old back-end's rings had been stopped. */
interface FailureCase {
  who: "old" | "new";
  refusal: Refusal;
  step: string;
  /** The old back-end's messages from the restart on, rollback included. */
  old: () => string[];
  /** The last messages the new back-end got (its rings stopped before it is let go). */
  newTail?: () => string[];
  /** What the new back-end answers GET_VRING_BASE with (default: the saved bases). */
  newBases?: number[];
  rolledBack?: RegExp;
}

const STOPPED_AND_SAVED = () => [
  ...expectedStop(),
  line("SET_DEVICE_STATE_FD", stateParams(0), ["pipe-w"], false),
  line("CHECK_DEVICE_STATE", empty, [], false),
];

const CASES: FailureCase[] = [
  { who: "new", refusal: { name: "SET_OWNER" }, step: "negotiate", old: () => [] },
  { who: "new", refusal: { name: "SET_FEATURES" }, step: "negotiate", old: () => [] },
  { who: "new", refusal: { name: "SET_MEM_TABLE" }, step: "memory table", old: () => [] },
  {
    who: "old",
    refusal: { name: "SET_VRING_ENABLE", nth: 2 },
    step: "stop old rings",
    // Ring 0 was disabled before ring 1's disable was refused: it must be enabled again.
    old: () => [
      line("SET_VRING_ENABLE", ring(0, 0)),
      line("SET_VRING_ENABLE", ring(1, 0)),
      ...RINGS.map((q) => line("SET_VRING_ENABLE", ring(q, 1))),
    ],
  },
  {
    who: "old",
    refusal: { name: "SET_DEVICE_STATE_FD" },
    step: "save",
    old: () => [
      ...expectedStop(),
      line("SET_DEVICE_STATE_FD", stateParams(0), ["pipe-w"], false),
      ...expectedStart(),
    ],
  },
  {
    who: "old",
    refusal: { name: "CHECK_DEVICE_STATE" },
    step: "save",
    old: () => [...STOPPED_AND_SAVED(), ...expectedStart()],
  },
  {
    who: "new",
    refusal: { name: "SET_DEVICE_STATE_FD" },
    step: "load",
    old: () => [...STOPPED_AND_SAVED(), ...expectedStart()],
  },
  {
    who: "new",
    refusal: { name: "CHECK_DEVICE_STATE" },
    step: "load",
    old: () => [...STOPPED_AND_SAVED(), ...expectedStart()],
  },
  {
    who: "new",
    refusal: { name: "SET_VRING_KICK", nth: 2 },
    step: "start new rings",
    old: () => [...STOPPED_AND_SAVED(), ...expectedStart()],
    // Both kick fds were sent to the new back-end (the second refused): both rings are
    // stopped there before the old one serves them again.
    newTail: () => [
      line("SET_VRING_KICK", vringFile(1, false), ["kick1"]),
      line("GET_VRING_BASE", ring(0, 0), [], false),
      line("GET_VRING_BASE", ring(1, 0), [], false),
    ],
  },
  {
    who: "new",
    refusal: { name: "SET_VRING_ENABLE", nth: 2 },
    step: "start new rings",
    old: () => [...STOPPED_AND_SAVED(), ...expectedStart()],
    // Both rings started on the new back-end and ring 0 enabled: it must not process them
    // while the old one serves them again.
    newTail: () => [
      line("SET_VRING_ENABLE", ring(0, 1)),
      line("SET_VRING_ENABLE", ring(1, 1)),
      line("SET_VRING_ENABLE", ring(0, 0), [], false),
      line("SET_VRING_ENABLE", ring(1, 0), [], false),
      line("GET_VRING_BASE", ring(0, 0), [], false),
      line("GET_VRING_BASE", ring(1, 0), [], false),
    ],
  },
  {
    who: "new",
    refusal: { name: "SET_VRING_ENABLE", nth: 2 },
    // Meanwhile the new back-end took 3 requests from ring 0: the old one must not serve
    // them again, it resumes where the new one stopped.
    newBases: [20, 42],
    newTail: () => [
      line("SET_VRING_ENABLE", ring(0, 0), [], false),
      line("SET_VRING_ENABLE", ring(1, 0), [], false),
      line("GET_VRING_BASE", ring(0, 0), [], false),
      line("GET_VRING_BASE", ring(1, 0), [], false),
    ],
    step: "start new rings",
    old: () => [...STOPPED_AND_SAVED(), ...expectedStart([20, 42])],
    rolledBack: /the new back-end had served requests \(ring 0 from 17 to 20\)/,
  },
];

for (const c of CASES) {
  const what = `${c.who} back-end refuses ${c.refusal.name}${
    c.refusal.nth ? ` #${c.refusal.nth}` : ""
  }${c.newBases ? ` after taking requests (bases ${c.newBases.join(", ")})` : ""}`;
  Deno.test(`restart-backend rolls back when the ${what}: fails at "${c.step}", the old back-end serves on`, async () => {
    await withRestartRig(async (r, old, labels, listener) => {
      const before = setupLength(old);
      if (c.who === "old") old.refusal = c.refusal;
      const next = {
        listener,
        labels,
        refusal: c.who === "new" ? c.refusal : undefined,
        bases: c.newBases,
        peer: undefined as Backend | undefined,
      };
      const result = await restartServing(r, old, next);
      old.refusal = undefined;
      assert.equal(result.ok, false, JSON.stringify(result));
      assert.equal(result.failedStep, c.step, JSON.stringify(result));
      assert.deepEqual(old.seen.slice(before), c.old(), JSON.stringify(result));
      if (c.old().length === 0) {
        assert.match(String(result.rolledBack), /its rings were never stopped/);
      } else {
        assert.match(String(result.rolledBack), /^the old back-end serves on/);
      }
      if (c.rolledBack) assert.match(String(result.rolledBack), c.rolledBack);
      else assert.doesNotMatch(String(result.rolledBack), /new back-end/);
      // The rings the old back-end restarted were kicked once; the others not at all.
      for (const q of RINGS) {
        const restarted = c.old().some((l) =>
          l === line("SET_VRING_KICK", vringFile(q, false), [`kick${q}`])
        );
        assert.equal(labels.count(`kick${q}`), restarted ? 1n : 0n, `kick${q}`);
      }
      assert.ok(next.peer, "the new back-end was connected");
      if (c.newTail) {
        const tail = c.newTail();
        assert.deepEqual(next.peer.seen.slice(-tail.length), tail, next.peer.seen.join("\n"));
      } else {
        assert.ok(!next.peer.seen.some((l) => l.startsWith("SET_VRING_KICK")));
      }
      assert.ok(next.peer.peer.closedWithin(2000), "the new back-end is let go");
      assert.ok(steps(r.records).includes(`${c.step} FAILED`), steps(r.records).join(", "));
      qemuGoesOnWith(r, old);
      next.peer.close();
    });
  });
}

Deno.test("restart-backend to a socket nobody listens on fails at connect and touches nothing", async () => {
  await withRestartRig(async (r, old, labels, listener) => {
    const before = setupLength(old);
    const next = { listener, labels, peer: undefined as Backend | undefined };
    const result = await restartServing(r, old, next, `${r.dir}/nobody.sock`);
    assert.equal(result.ok, false);
    assert.equal(result.failedStep, "connect");
    assert.match(String(result.error), /cannot connect to ".*nobody\.sock"/);
    assert.match(String(result.rolledBack), /its rings were never stopped/);
    assert.equal(result.pauseMs, 0);
    assert.deepEqual(old.seen.slice(before), []);
    qemuGoesOnWith(r, old);
  });
});

Deno.test("restart-backend is refused while QEMU logs dirty pages (a migration) and possible again once it stopped logging (the migration failed)", async () => {
  await withRestartRig(async (r, old, labels, listener) => {
    // QEMU's vhost_migration_log(true): the log area, then LOG_ALL and logged ring addresses.
    const log = createMemfd("dirty-log", 4096);
    qemuSends(r, old, "SET_LOG_BASE", REQ, logArea(4096n), [log]);
    qemuSends(r, old, "SET_FEATURES", NEED_REPLY, u64(VIRTIO | LOG_ALL));
    for (const q of RINGS) qemuSends(r, old, "SET_VRING_ADDR", NEED_REPLY, addr(q, 1));
    const before = old.seen.length;
    const next = { listener, labels, peer: undefined as Backend | undefined };
    const refused = await restartServing(r, old, next);
    assert.equal(refused.ok, false);
    assert.equal(refused.failedStep, "check");
    assert.match(String(refused.error), /dirty-page logging/);
    assert.equal(refused.rolledBack, "nothing was changed");
    assert.equal(next.peer, undefined, "nobody was connected");
    assert.deepEqual(old.seen.slice(before), []);

    // vhost_migration_log(false), the migration having failed: LOG_ALL off, rings unlogged.
    qemuSends(r, old, "SET_FEATURES", NEED_REPLY, u64(VIRTIO));
    for (const q of RINGS) qemuSends(r, old, "SET_VRING_ADDR", NEED_REPLY, addr(q));
    const result = await restartServing(r, old, next);
    assert.equal(result.ok, true, JSON.stringify(result));
    // The new back-end gets the set-up as it is now: no LOG_ALL, no log flag on the rings.
    assert.deepEqual(next.peer!.seen, [
      ...expectedPrepare(),
      line("SET_DEVICE_STATE_FD", stateParams(1), ["pipe-r"], false),
      line("CHECK_DEVICE_STATE", empty, [], false),
      ...expectedStart(),
    ]);
    next.peer!.close();
  });
});

Deno.test("restart-backend with F_STATUS: the new back-end gets QEMU's SET_STATUS last; refused, its started rings are stopped and the old one's started again", async () => {
  await withRestartRig(async (r, old, labels, listener) => {
    const DRIVER_OK = u64(0xf); // ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK
    qemuSends(r, old, "SET_STATUS", REQ, DRIVER_OK);
    const before = old.seen.length;
    const next = {
      listener,
      labels,
      refusal: { name: "SET_STATUS" } as Refusal,
      peer: undefined as Backend | undefined,
    };
    const result = await restartServing(r, old, next);
    assert.equal(result.ok, false, JSON.stringify(result));
    assert.equal(result.failedStep, "status");
    assert.match(String(result.rolledBack), /^the old back-end serves on: its rings were started/);
    // The new back-end had its rings started, enabled and kicked: they are stopped there.
    assert.deepEqual(next.peer!.seen, [
      ...expectedPrepare(),
      line("SET_DEVICE_STATE_FD", stateParams(1), ["pipe-r"], false),
      line("CHECK_DEVICE_STATE", empty, [], false),
      ...expectedStart(),
      line("SET_STATUS", DRIVER_OK),
      ...RINGS.map((q) => line("SET_VRING_ENABLE", ring(q, 0), [], false)),
      ...RINGS.map((q) => line("GET_VRING_BASE", ring(q, 0), [], false)),
    ]);
    assert.deepEqual(old.seen.slice(before), [...STOPPED_AND_SAVED(), ...expectedStart()]);
    // Kicked once on the new back-end, once more on the old one.
    for (const q of RINGS) assert.equal(labels.count(`kick${q}`), 2n, `kick${q}`);
    assert.ok(next.peer!.peer.closedWithin(2000), "the new back-end is let go");
    qemuGoesOnWith(r, old);
    next.peer!.close();

    // The same restart, accepted: SET_STATUS comes after the rings, before the swap.
    const again = { listener, labels, peer: undefined as Backend | undefined };
    const ok = await restartServing(r, old, again);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.deepEqual(again.peer!.seen.slice(-2), [
      line("SET_VRING_ENABLE", ring(1, 1)),
      line("SET_STATUS", DRIVER_OK),
    ]);
    assert.deepEqual(steps(r.records).slice(-3), ["start new rings", "status", "swap"]);
    qemuGoesOnWith(r, again.peer!);
    again.peer!.close();
  });
});
