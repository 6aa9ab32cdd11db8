/**
 * Device-state transfer through the proxy with scripted peers: relay (pipe interposed, the
 * back-end's own fd, CHECK held), faults, emulation, feature hiding, RFC dialect numbering.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { OwnedFd } from "../../ffi/fd.ts";
import { fdKind } from "../../ffi/fdinfo.ts";
import { createPipe, readFd, writeFd } from "../../ffi/pipe.ts";
import { POLLIN, POLLOUT, PollSet } from "../../ffi/poll.ts";
import { decodeEmulatedState } from "../../device_state/emulated_state.ts";
import { fingerprintOf, fingerprintsReady } from "../../device_state/fingerprint.ts";
import type { LogRecord, TransferEndRecord } from "../../log/record.ts";
import { messages, type Rig, rig, type RigOptions } from "../support/proxy_rig.ts";
import { readU64, type ScriptedPeer, u64 } from "../support/scripted_peer.ts";

const REQ = 0x1, REPLY = 0x5;
const SET_STATE = 42, CHECK = 43;
const SAVE = 0, LOAD = 1;

function params(direction: number): Uint8Array {
  const p = new Uint8Array(new ArrayBuffer(8));
  new DataView(p.buffer).setUint32(0, direction, true);
  return p;
}

function pattern(n: number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(n));
  for (let i = 0; i < n; i++) out[i] = (i * 31 + (i >> 8)) & 0xff;
  return out;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
await fingerprintsReady;
/** The default fingerprint, as a transfer-end record carries it. */
const xxh = (b: Uint8Array) => fingerprintOf("xxh3-128", b);

/** Writes `data` into `w` (then closes it) while reading `r` to EOF, without deadlocking. */
function pump(
  w: OwnedFd | undefined,
  data: Uint8Array,
  r: OwnedFd,
  timeoutMs = 10_000,
): Uint8Array {
  w?.setNonBlocking(true);
  r.setNonBlocking(true);
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(new ArrayBuffer(1 << 16));
  let off = 0;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (w && off < data.length) {
      const n = writeFd(w, data, off);
      if (n > 0) off += n;
      if (off === data.length) w.close();
    }
    const n = readFd(r, buf);
    if (n === 0) break;
    if (n > 0) chunks.push(buf.slice(0, n));
    if (performance.now() > deadline) throw new Error("pump timed out");
    if (n < 0) {
      const p = new PollSet();
      p.add(r.fd, POLLIN);
      if (w && w.isOpen) p.add(w.fd, POLLOUT);
      p.wait(50);
    }
  }
  r.close();
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function ends(records: LogRecord[]): TransferEndRecord[] {
  return records.filter((r): r is TransferEndRecord =>
    r.type === "device-state" && r.event === "transfer-end"
  );
}

/** QEMU's side of SAVE: a pipe, the write end sent; returns the read end. */
function sendSave(front: ScriptedPeer): OwnedFd {
  const [r, w] = createPipe();
  front.send({ request: SET_STATE, flags: REQ, payload: params(SAVE), fds: [w] });
  return r;
}

function check(front: ScriptedPeer, back: ScriptedPeer, backResult: bigint): bigint {
  front.send({ request: CHECK, flags: REQ });
  const got = back.expect();
  assert.equal(got.request, CHECK);
  back.send({ request: CHECK, flags: REPLY, payload: u64(backResult) });
  const rep = front.expect();
  assert.equal(rep.request, CHECK);
  return readU64(rep.payload);
}

/** QEMU sends `request`, the back-end answers it with `value`: returns what QEMU is told. */
function ask(r: Rig, request: number, value: bigint): bigint {
  r.front.send({ request, flags: REQ });
  r.back.expect();
  r.back.send({ request, flags: REPLY, payload: u64(value) });
  return readU64(r.front.expect().payload);
}

async function withRig(
  options: RigOptions,
  body: (r: Rig) => Promise<void> | void,
) {
  const r = await rig(options);
  try {
    await body(r);
  } finally {
    await r.stop();
  }
}

Deno.test("SET_DEVICE_STATE_FD(SAVE) relays the pipe: the back-end gets the proxy's pipe, QEMU sees EOF, hashes match", async () => {
  const dump = Deno.makeTempDirSync();
  await withRig({ deviceState: { dumpDir: dump } }, async (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    assert.equal(req.request, SET_STATE);
    assert.equal(req.fds.length, 1);
    assert.equal(fdKind(req.fds[0].fd), "pipe");
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    const rep = r.front.expect();
    assert.equal(readU64(rep.payload), 0x100n);
    assert.equal(rep.fds.length, 0);
    const data = pattern(300_000);
    const got = pump(req.fds[0], data, qemuRead);
    assert.equal(got.length, data.length);
    assert.equal(sha(got), sha(data));
    assert.equal(check(r.front, r.back, 0n), 0n);
    // The transfer-end record (blob decoded, hash) waits until the switch-over is over: it is
    // written after the CHECK exchange, never in front of it.
    await r.until((rs) => ends(rs).length > 0);
    const order = r.records.map((x) => x.type === "device-state" ? x.event : "");
    assert.ok(order.indexOf("check") < order.indexOf("transfer-end"), order.join(","));
    const [end] = ends(r.records);
    assert.equal(end.direction, "SAVE");
    assert.equal(end.ok, true);
    assert.equal(end.bytes, data.length);
    // The default fingerprint is xxh3-128, named; `sha256` is only written for SHA-256.
    assert.deepEqual(end.fingerprint, xxh(data));
    assert.equal(end.sha256, undefined);
    assert.equal(sha(Deno.readFileSync(end.dump!)), sha(data));
  });
  Deno.removeSync(dump, { recursive: true });
});

Deno.test("SET_DEVICE_STATE_FD(LOAD) with the back-end's own fd: QEMU is told no fd and the bytes reach the back-end's channel", async () => {
  await withRig({}, async (r) => {
    const [qr, qw] = createPipe();
    r.front.send({ request: SET_STATE, flags: REQ, payload: params(LOAD), fds: [qr] });
    const req = r.back.expect();
    req.fds[0].close(); // the back-end discards the proxy's pipe and offers its own
    const [br, bw] = createPipe();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0), fds: [bw] });
    const rep = r.front.expect();
    assert.equal(readU64(rep.payload), 0x100n, "QEMU hears: no fd");
    assert.equal(rep.fds.length, 0);
    const data = pattern(200_000);
    const got = pump(qw, data, br);
    assert.equal(sha(got), sha(data));
    assert.equal(check(r.front, r.back, 0n), 0n);
    await r.until((rs) => ends(rs).length > 0);
    const start = r.records.find((x) => x.type === "device-state" && x.event === "transfer-start");
    assert.ok(start && start.type === "device-state" && start.event === "transfer-start");
    assert.equal(start.via, "back-end-fd");
  });
});

Deno.test("CHECK_DEVICE_STATE is held until the state copy has finished", async () => {
  await withRig({}, async (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    const backWrite = req.fds[0];
    writeFd(backWrite, pattern(1000));
    r.front.send({ request: CHECK, flags: REQ });
    assert.throws(() => r.back.expect(300), /No message/, "CHECK must not reach the back-end yet");
    backWrite.close();
    const got = r.back.expect();
    assert.equal(got.request, CHECK);
    r.back.send({ request: CHECK, flags: REPLY, payload: u64(0) });
    assert.equal(readU64(r.front.expect().payload), 0n);
    assert.equal(pump(undefined, new Uint8Array(0), qemuRead).length, 1000);
    await r.until((rs) => messages(rs).some((m) => m.action?.startsWith("released")));
  });
});

Deno.test("fault state-truncate cuts the stream and CHECK fails even when the back-end says 0", async () => {
  await withRig({ deviceState: { faults: ["state-truncate:4096"] } }, async (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    const data = pattern(100_000);
    // The back-end's writes fail with EPIPE once the proxy cut the stream: that is the point.
    let got: Uint8Array;
    try {
      got = pump(req.fds[0], data, qemuRead);
    } catch {
      got = new Uint8Array(4096);
    }
    assert.equal(got.length, 4096);
    assert.equal(check(r.front, r.back, 0n), 1n);
    await r.until((rs) => rs.some((x) => x.type === "device-state" && x.event === "check"));
    const c = r.records.find((x) => x.type === "device-state" && x.event === "check");
    assert.ok(c && c.type === "device-state" && c.event === "check");
    assert.equal(c.backendResult, 0);
    assert.match(c.reason ?? "", /cut/);
  });
});

Deno.test("fault state-refuse answers error 1 and the back-end never sees the request", async () => {
  await withRig({ deviceState: { faults: ["state-refuse"] } }, (r) => {
    const qemuRead = sendSave(r.front);
    const rep = r.front.expect();
    assert.equal(readU64(rep.payload), 0x101n);
    assert.throws(() => r.back.expect(200), /No message/);
    qemuRead.close();
  });
});

Deno.test("fault check-fail turns the back-end's 0 into 1", async () => {
  await withRig({ deviceState: { faults: ["check-fail"] } }, (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    pump(req.fds[0], pattern(10), qemuRead);
    assert.equal(check(r.front, r.back, 0n), 1n);
  });
});

Deno.test("fault state-corrupt flips bytes: the hashes of what went in and out differ", async () => {
  await withRig({ deviceState: { faults: ["state-corrupt"] } }, async (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    const data = pattern(10_000);
    const got = pump(req.fds[0], data, qemuRead);
    assert.equal(got.length, data.length);
    assert.notEqual(sha(got), sha(data));
    assert.equal(got[1], data[1] ^ 0xff);
    await r.until((rs) => ends(rs).length > 0);
    assert.deepEqual(ends(r.records)[0].fingerprint, xxh(got));
    assert.notDeepEqual(ends(r.records)[0].fingerprint, xxh(data));
  });
});

for (const algorithm of ["sha256", "blake3"] as const) {
  Deno.test(`--state-hash ${algorithm}: the record names it${algorithm === "sha256" ? " and keeps its sha256 field" : ""}`, async () => {
    await withRig({ deviceState: { hashAlgorithm: algorithm } }, async (r) => {
      const qemuRead = sendSave(r.front);
      const req = r.back.expect();
      r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
      r.front.expect();
      const data = pattern(200_000);
      const got = pump(req.fds[0], data, qemuRead);
      assert.equal(sha(got), sha(data));
      assert.equal(check(r.front, r.back, 0n), 0n);
      await r.until((rs) => ends(rs).length > 0);
      const [end] = ends(r.records);
      assert.deepEqual(end.fingerprint, fingerprintOf(algorithm, data));
      assert.equal(end.sha256, algorithm === "sha256" ? sha(data) : undefined);
    });
  });
}

Deno.test("emulate: F_DEVICE_STATE offered, stripped towards the back-end, SAVE then LOAD verified", async () => {
  let blob: Uint8Array = new Uint8Array(0);
  await withRig({ deviceState: { mode: "emulate" } }, async (r) => {
    ask(r, 1, 0x1_4400_0000n);
    const offered = ask(r, 15, 0x2n | 0x8n);
    assert.equal(offered & (1n << 19n), 1n << 19n, "QEMU is offered F_DEVICE_STATE");
    r.front.send({ request: 16, flags: REQ, payload: u64(0x2n | 0x8n | (1n << 19n)) });
    assert.equal(readU64(r.back.expect().payload), 0xan, "the back-end never sees bit 19");
    r.front.send({ request: 2, flags: REQ, payload: u64(0x1_4400_0000n) });
    r.back.expect();
    const qemuRead = sendSave(r.front);
    assert.equal(readU64(r.front.expect().payload), 0x100n);
    blob = pump(undefined, new Uint8Array(0), qemuRead);
    const decoded = decodeEmulatedState(blob);
    assert.ok(decoded.ok, decoded.ok ? "" : decoded.error);
    assert.equal(decoded.state.meta.virtioFeatures, "0x144000000");
    r.front.send({ request: CHECK, flags: REQ });
    assert.equal(readU64(r.front.expect().payload), 0n);
    assert.throws(() => r.back.expect(200), /No message/, "CHECK never reaches the back-end");
    await r.until((rs) => ends(rs).length > 0);
    assert.deepEqual(
      ends(r.records)[0].fingerprint,
      xxh(blob),
      "the emulated SAVE is fingerprinted",
    );
  });
  // The destination: a back-end offering the same features accepts; a corrupt blob fails CHECK.
  for (
    const [label, input, expected] of [
      ["intact", blob, 0n],
      ["corrupt", blob.map((b, i) => (i === 40 ? b ^ 1 : b)), 1n],
    ] as const
  ) {
    await withRig({ deviceState: { mode: "emulate" } }, (r) => {
      ask(r, 1, 0x1_4400_0000n);
      ask(r, 15, 0x2n | 0x8n);
      const [qr, qw] = createPipe();
      r.front.send({ request: SET_STATE, flags: REQ, payload: params(LOAD), fds: [qr] });
      assert.equal(readU64(r.front.expect().payload), 0x100n);
      const w = qw;
      w.setNonBlocking(false);
      writeFd(w, input);
      w.close();
      r.front.send({ request: CHECK, flags: REQ });
      assert.equal(readU64(r.front.expect(3000).payload), expected, label);
    });
  }
});

Deno.test("--device-state off hides F_DEVICE_STATE from the front-end", async () => {
  await withRig({ deviceState: { mode: "off" } }, (r) => {
    assert.equal(ask(r, 15, 0x8a42bn), 0x8a42bn & ~(1n << 19n));
  });
});

Deno.test("--device-state off takes no part in a transfer QEMU asks for anyway: its own fd reaches the back-end", async () => {
  await withRig({ deviceState: { mode: "off" } }, (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    assert.equal(req.request, SET_STATE);
    assert.equal(req.fds.length, 1);
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    assert.equal(readU64(r.front.expect().payload), 0x100n);
    // No proxy pipe in between: the back-end holds the other end of QEMU's own pipe.
    const pipeOf = (fd: OwnedFd) => Deno.readLinkSync(`/proc/self/fd/${fd.fd}`);
    assert.equal(pipeOf(req.fds[0]), pipeOf(qemuRead));
    const data = pattern(1000);
    assert.deepEqual(pump(req.fds[0], data, qemuRead), data);
    assert.equal(check(r.front, r.back, 0n), 0n);
    assert.equal(ends(r.records).length, 0);
  });
});

Deno.test("rfc2023 back-end: SET_DEVICE_STATE_FD travels as 41, F_MIGRATORY_STATE bit 17 becomes bit 19", async () => {
  await withRig({ backDialect: "rfc2023" }, (r) => {
    assert.equal(ask(r, 15, (1n << 17n) | 0x8n), (1n << 19n) | 0x8n);
    r.front.send({ request: 16, flags: REQ, payload: u64((1n << 19n) | 0x8n) });
    assert.equal(readU64(r.back.expect().payload), (1n << 17n) | 0x8n);
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    assert.equal(req.request, 41);
    r.back.send({ request: 41, flags: REPLY, payload: u64(0x100) });
    const rep = r.front.expect();
    assert.equal(rep.request, 42);
    pump(req.fds[0], pattern(100), qemuRead);
    r.front.send({ request: CHECK, flags: REQ });
    assert.equal(r.back.expect().request, 42);
    r.back.send({ request: 42, flags: REPLY, payload: u64(0) });
    assert.equal(r.front.expect().request, 43);
  });
});

Deno.test("--state-buffer refuses a corrupt virtiofsd LOAD before the back-end sees a byte; a valid one passes", async () => {
  const { encodeVirtiofsdState } = await import("../../device_state/virtiofsd_state.ts");
  const good = encodeVirtiofsdState({
    version: 2,
    inodes: [{ id: 1n, refcount: 1n, location: { kind: "root" } }],
    nextInode: 2n,
    handles: [],
    nextHandle: 0n,
    negotiatedOpts: {
      writeback: false,
      announceSubmounts: false,
      posixAcl: false,
      supGroupExtension: false,
    },
    mountPaths: new Map(),
  });
  const bad = good.slice();
  bad[1] ^= 0xff;
  for (
    const [label, blob, delivered, checkResult] of [
      ["valid", good, good.length, 0n],
      ["corrupt", bad, 0, 1n],
    ] as const
  ) {
    await withRig({ deviceState: { buffer: true } }, async (r) => {
      const [qr, qw] = createPipe();
      r.front.send({ request: SET_STATE, flags: REQ, payload: params(LOAD), fds: [qr] });
      const req = r.back.expect();
      r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
      r.front.expect();
      const got = pump(qw, blob, req.fds[0]);
      assert.equal(got.length, delivered, label);
      assert.equal(check(r.front, r.back, 0n), checkResult, label);
      await r.until((rs) => ends(rs).length > 0);
      const end = ends(r.records)[0];
      assert.equal(end.ok, checkResult === 0n, label);
      if (label === "corrupt") assert.match(end.error ?? "", /refused before delivery/);
      else assert.equal((end.state as { format?: string }).format, "virtiofsd");
    });
  }
});

Deno.test("--state-hash off: a pure splice relay delivers every byte and logs no hash", async () => {
  await withRig({ deviceState: { hash: false } }, async (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    const data = pattern(3 << 20);
    const got = pump(req.fds[0], data, qemuRead, 20_000);
    assert.equal(sha(got), sha(data));
    assert.equal(check(r.front, r.back, 0n), 0n);
    await r.until((rs) => ends(rs).length > 0);
    const end = ends(r.records)[0];
    assert.equal(end.ok, true);
    assert.equal(end.bytes, data.length);
    assert.equal(end.sha256, undefined);
    assert.equal(end.fingerprint, undefined);
  });
});

// ---- failures inside the proxy never leave QEMU waiting (issue 9 §2) ---------------------------

/** A regular file where a --state-dump directory is expected. */
function fileNotDir(): string {
  const f = Deno.makeTempFileSync({ prefix: "vup-not-a-dir-" });
  Deno.writeTextFileSync(f, "not a directory\n");
  return f;
}

function errors(records: LogRecord[]): string[] {
  return records.filter((r) => r.type === "error").map((r) => (r as { message: string }).message);
}

Deno.test("emulate with --state-dump a regular file: SAVE fails, CHECK is answered 1 at once, the error names the step", async () => {
  const dump = fileNotDir();
  try {
    await withRig({ deviceState: { mode: "emulate", dumpDir: dump } }, async (r) => {
      ask(r, 1, 0x1_4400_0000n);
      ask(r, 15, 0x2n | 0x8n);
      const qemuRead = sendSave(r.front);
      assert.equal(readU64(r.front.expect().payload), 0x100n, "SET_DEVICE_STATE_FD accepted");
      pump(undefined, new Uint8Array(0), qemuRead);
      r.front.send({ request: CHECK, flags: REQ });
      assert.equal(readU64(r.front.expect(3000).payload), 1n, "CHECK answered with an error");
      await r.until((rs) => ends(rs).length > 0);
      const end = ends(r.records)[0];
      assert.equal(end.ok, false);
      assert.match(end.error ?? "", /--state-dump directory .* cannot create|dump failed/);
      assert.ok(
        errors(r.records).some((m) => /writing the dump failed/.test(m) && m.includes(dump)),
        `an error record names the dump step: ${JSON.stringify(errors(r.records))}`,
      );
      assert.ok(!errors(r.records).some((m) => /\n\s+at /.test(m)), "no stack in the log");
    });
  } finally {
    Deno.removeSync(dump);
  }
});

Deno.test("relay with --state-dump a regular file: QEMU is told error 1 at SET_DEVICE_STATE_FD, never left waiting", async () => {
  const dump = fileNotDir();
  try {
    await withRig({ deviceState: { dumpDir: dump } }, async (r) => {
      const qemuRead = sendSave(r.front);
      const req = r.back.expect();
      r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
      const rep = r.front.expect(3000);
      assert.equal(rep.request, SET_STATE);
      assert.equal(readU64(rep.payload) & 0xffn, 1n, "QEMU hears an error");
      assert.equal(rep.fds.length, 0);
      qemuRead.close();
      req.fds.forEach((f) => f.close());
      // CHECK goes to the back-end; whatever it says, QEMU hears the failure.
      assert.equal(check(r.front, r.back, 0n), 1n, "CHECK fails");
      await r.until((rs) => errors(rs).length > 0);
      assert.match(
        errors(r.records)[0],
        /SET_DEVICE_STATE_FD reply failed inside the proxy: .*state-dump directory/,
      );
    });
  } finally {
    Deno.removeSync(dump);
  }
});

Deno.test("a held CHECK_DEVICE_STATE is flagged after --stuck-after, naming what it waits for", async () => {
  await withRig({ stuckAfterMs: 200 }, async (r) => {
    const qemuRead = sendSave(r.front);
    const req = r.back.expect();
    r.back.send({ request: SET_STATE, flags: REPLY, payload: u64(0x100) });
    r.front.expect();
    const w = req.fds[0];
    writeFd(w, pattern(1000));
    r.front.send({ request: CHECK, flags: REQ });
    await r.until((rs) =>
      rs.some((x) => x.type === "warning" && /CHECK_DEVICE_STATE has been held/.test(x.message))
    );
    const warning = r.records.find((x) => x.type === "warning")!;
    assert.match(
      (warning as { message: string }).message,
      /held by the proxy for \d+ ms, waiting for the SAVE copy to end \(1000 bytes so far\)/,
    );
    w.close();
    pump(undefined, new Uint8Array(0), qemuRead);
    assert.equal(r.back.expect().request, CHECK, "released once the copy ends");
    r.back.send({ request: CHECK, flags: REPLY, payload: u64(0) });
    assert.equal(readU64(r.front.expect().payload), 0n);
  });
});

Deno.test("rfc2023 back-end: a protocol feature with no rfc2023 number is dropped on the way, and the record names it", async () => {
  await withRig({ backDialect: "rfc2023" }, async (r) => {
    // Upstream bit 17 is XEN_MMAP; in the 2023 RFC bit 17 is MIGRATORY_STATE and XEN_MMAP has none.
    r.front.send({ request: 16, flags: REQ, payload: u64((1n << 17n) | 0x8n) });
    assert.equal(readU64(r.back.expect().payload), 0x8n, "XEN_MMAP is not passed on as bit 17");
    await r.until((rs) =>
      rs.some((x) => x.type === "message" && x.name === "SET_PROTOCOL_FEATURES")
    );
    const rec = r.records.find((x) => x.type === "message" && x.name === "SET_PROTOCOL_FEATURES");
    assert.match(
      JSON.stringify((rec as { warnings?: string[] }).warnings ?? []),
      /without a rfc2023 number dropped: XEN_MMAP/,
    );
  });
});
