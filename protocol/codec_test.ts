import assert from "node:assert/strict";
import {
  allowedFds,
  checkReply,
  createMessage,
  decodeMessage,
  type DecodeResult,
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  type Message,
  messageToJson,
  type Negotiated,
  readHeader,
  replyExpected,
  replyFdsAllowed,
  summarizeMessage,
  writeHeader,
} from "./codec.ts";
import { ProtocolError, type ProtocolViolation } from "./violations.ts";
import type { Channel, Side } from "./catalogue.ts";
import {
  bytesOf,
  ctxOf,
  FIXTURES,
  hdr,
  u32,
  u64,
  VIRTIOFSD_PROTOCOL,
  VIRTIOFSD_VIRTIO,
  zeros,
} from "./_test_utils.ts";

type Ctx = Parameters<typeof ctxOf>[1];

/** Decodes header + payload hex as sent by `sender`. */
function decodeHex(hex: string, fds: number, sender: Side, options: Ctx = {}): DecodeResult {
  const bytes = bytesOf(hex);
  return decodeMessage(readHeader(bytes), bytes.subarray(HEADER_SIZE), fds, ctxOf(sender, options));
}

function ok(hex: string, fds: number, sender: Side, options: Ctx = {}): Message {
  const r = decodeHex(hex, fds, sender, options);
  if (!r.ok) assert.fail(`expected a message, got: ${r.error.message}`);
  return r.message;
}

function bad(hex: string, fds: number, sender: Side, options: Ctx = {}): ProtocolViolation {
  const r = decodeHex(hex, fds, sender, options);
  if (r.ok) {
    assert.fail(`expected a violation, got ${r.message.name} ${summarizeMessage(r.message)}`);
  }
  return r.error;
}

// ---------------------------------------------------------------------------------------------
// Fixtures: every layout, request and reply, decode and re-encode byte for byte.

for (const f of FIXTURES) {
  Deno.test(`fixture: ${f.title}`, () => {
    const opts = { channel: f.channel, dialect: f.dialect, negotiated: f.negotiated };
    const m = ok(f.hex, f.fds, f.sender, opts);
    assert.equal(m.name, f.name);
    assert.equal(m.payload.layout, f.layout);
    assert.equal(m.fdCount, f.fds);
    const payload = m.payload as unknown as Record<string, unknown>;
    for (const [field, expected] of Object.entries(f.payload)) {
      assert.deepEqual(payload[field], expected, `field ${field}`);
    }
    assert.deepEqual(encodeMessage(m), bytesOf(f.hex));
    // The JSON view must survive JSON.stringify (no bigint, no typed arrays).
    assert.doesNotThrow(() => JSON.stringify(messageToJson(m)));
  });
}

// ---------------------------------------------------------------------------------------------
// Header

Deno.test("readHeader and writeHeader round-trip and read little-endian", () => {
  const bytes = bytesOf("2a000000 01000000 08000000");
  assert.deepEqual(readHeader(bytes), { request: 42, flags: 1, size: 8 });
  const out = new Uint8Array(16);
  writeHeader({ request: 42, flags: 1, size: 8 }, out, 4);
  assert.deepEqual(out.subarray(4), bytes);
  assert.deepEqual(readHeader(out, 4), { request: 42, flags: 1, size: 8 });
});

Deno.test("readHeader reads any 12 bytes and refuses fewer", () => {
  assert.deepEqual(readHeader(new Uint8Array(12).fill(0xff)), {
    request: 0xffffffff,
    flags: 0xffffffff,
    size: 0xffffffff,
  });
  assert.throws(() => readHeader(new Uint8Array(11)), RangeError);
  assert.throws(() => readHeader(new Uint8Array(12), 1), RangeError);
});

Deno.test("writeHeader refuses values that are not u32", () => {
  assert.throws(
    () => writeHeader({ request: -1, flags: 1, size: 0 }, new Uint8Array(12)),
    RangeError,
  );
  assert.throws(
    () => writeHeader({ request: 1, flags: 1, size: 2 ** 32 }, new Uint8Array(12)),
    RangeError,
  );
  assert.throws(
    () => writeHeader({ request: 1, flags: 1, size: 0 }, new Uint8Array(11)),
    RangeError,
  );
});

// ---------------------------------------------------------------------------------------------
// Malformed messages give precise violations

Deno.test("short SET_VRING_ADDR: payload is 12 bytes, expected 40", () => {
  const v = bad(hdr(9, 1, 12) + zeros(12), 0, "front-end");
  assert.deepEqual(v, {
    request: "SET_VRING_ADDR",
    code: 9,
    channel: "main",
    sender: "front-end",
    messageKind: "request",
    kind: "size",
    field: "size",
    detail: "payload is 12 bytes, expected 40",
    message: "Cannot decode SET_VRING_ADDR from front-end: payload is 12 bytes, expected 40",
  });
});

Deno.test("long GET_FEATURES request: payload is 8 bytes, expected 0", () => {
  const v = bad(hdr(1, 1, 8) + u64(0), 0, "front-end");
  assert.equal(v.kind, "size");
  assert.equal(
    v.message,
    "Cannot decode GET_FEATURES from front-end: payload is 8 bytes, expected 0",
  );
});

Deno.test("short GET_FEATURES reply names the reply", () => {
  const v = bad(hdr(1, 5, 4) + u32(0), 0, "back-end");
  assert.equal(v.messageKind, "reply");
  assert.equal(
    v.message,
    "Cannot decode GET_FEATURES reply from back-end: payload is 4 bytes, expected 8",
  );
});

Deno.test("version bits other than 1 are a flags violation", () => {
  for (const flags of [0x0, 0x2, 0x3]) {
    const v = bad(hdr(3, flags, 0), 0, "front-end");
    assert.equal(v.kind, "flags");
    assert.equal(v.field, "flags");
    assert.equal(v.detail, `version is "${flags & 3}", expected 1`);
  }
});

Deno.test("reserved flag bits 4..31 are reserved for later: a warning, still relayable", () => {
  const m = ok(hdr(3, 0x11, 0), 0, "front-end");
  assert.equal(m.name, "SET_OWNER");
  assert.deepEqual(m.warnings, [`reserved flag bits "0x10" are set: relayed`]);
  const high = ok(hdr(3, 0x80000001, 0), 0, "front-end");
  assert.deepEqual(high.warnings, [`reserved flag bits "0x80000000" are set: relayed`]);
  assert.deepEqual(encodeMessage(high), bytesOf(hdr(3, 0x80000001, 0)));
});

Deno.test("REPLY bit must match the direction", () => {
  const fromFront = bad(hdr(1, 5, 0), 0, "front-end");
  assert.equal(fromFront.kind, "flags");
  assert.match(
    fromFront.detail,
    /have the REPLY bit set, but the front-end sends only requests on the main channel/,
  );
  const fromBack = bad(hdr(1, 1, 8) + u64(0), 0, "back-end");
  assert.match(
    fromBack.detail,
    /lack the REPLY bit, but the back-end sends only replies on the main channel/,
  );
  // On the back-end channel the roles swap.
  const backendReply = bad(hdr(2, 1, 8) + u64(0), 0, "front-end", { channel: "backend" });
  assert.equal(backendReply.request, "BACKEND_CONFIG_CHANGE_MSG");
  assert.match(backendReply.detail, /lack the REPLY bit/);
});

Deno.test("NEED_REPLY on a reply is a flags violation (QEMU requires exactly 0x5)", () => {
  const v = bad(hdr(1, 0xd, 8) + u64(0), 0, "back-end");
  assert.equal(v.detail, `flags "0xd" set NEED_REPLY on a reply`);
});

Deno.test("size above MAX_PAYLOAD_SIZE is a size violation", () => {
  const v = decodeMessage(
    { request: 24, flags: 1, size: MAX_PAYLOAD_SIZE + 1 },
    new Uint8Array(MAX_PAYLOAD_SIZE + 1),
    0,
    ctxOf("front-end"),
  );
  assert.ok(!v.ok);
  assert.equal(v.error.kind, "size");
  assert.equal(v.error.detail, `size is "2057", expected at most 2056`);
});

Deno.test("MAX_PAYLOAD_SIZE is the largest payload in the spec: the 2056-byte shmem config", () => {
  assert.equal(MAX_PAYLOAD_SIZE, 2056);
  const m = ok(hdr(47, 1, 2056) + zeros(2056), 0, "front-end");
  assert.equal(m.name, "UNKNOWN(47)");
});

Deno.test("header size disagreeing with the payload is a header violation", () => {
  const v = decodeMessage(
    { request: 8, flags: 1, size: 8 },
    new Uint8Array(4),
    0,
    ctxOf("front-end"),
  );
  assert.ok(!v.ok);
  assert.equal(v.error.kind, "header");
  assert.equal(v.error.detail, `header size is "8" but 4 payload bytes were given`);
});

Deno.test("fds where none are allowed", () => {
  const v = bad(hdr(8, 1, 8) + u32(0) + u32(256), 1, "front-end");
  assert.equal(v.kind, "fds");
  assert.equal(v.message, "Cannot decode SET_VRING_NUM from front-end: 1 fd attached, expected 0");
  const reply = bad(hdr(1, 5, 8) + u64(0), 2, "back-end");
  assert.equal(
    reply.message,
    "Cannot decode GET_FEATURES reply from back-end: 2 fds attached, expected 0",
  );
});

Deno.test("missing fd where one is required", () => {
  const v = bad(hdr(21, 1, 0), 0, "front-end");
  assert.equal(v.detail, "0 fds attached, expected 1");
  const advise = bad(hdr(28, 5, 0), 0, "back-end");
  assert.equal(advise.detail, "0 fds attached, expected 1");
});

Deno.test("more than 8 fds is always a violation", () => {
  const v = bad(hdr(5, 1, 40) + u32(1) + u32(0) + zeros(32), 9, "front-end");
  assert.equal(v.kind, "fds");
  assert.equal(v.detail, `"9" fds attached, expected at most 8`);
  assert.equal(bad(hdr(99, 1, 0), 9, "front-end").kind, "fds");
  assert.equal(bad(hdr(3, 1, 0), -1, "front-end").kind, "fds");
});

/** A memory region rust-vmm accepts: 4 KiB at 0, mapped at 0x7f0000000000. */
const REGION = u64(0) + u64(0x1000) + u64(0x7f0000000000n) + u64(0);

Deno.test("SET_MEM_TABLE needs one fd per region", () => {
  const table = hdr(5, 1, 72) + u32(2) + u32(0) + REGION + REGION;
  assert.equal(bad(table, 1, "front-end").detail, "1 fd attached for 2 regions");
  assert.equal(bad(table, 3, "front-end").detail, "3 fds attached for 2 regions");
  assert.equal(ok(table, 2, "front-end").payload.layout, "memory_table");
});

Deno.test("SET_MEM_TABLE nregions must match the payload and be at most 8", () => {
  const mismatch = bad(hdr(5, 1, 72) + u32(3) + u32(0) + zeros(64), 2, "front-end");
  assert.equal(mismatch.kind, "value");
  assert.equal(mismatch.field, "nregions");
  assert.equal(
    mismatch.message,
    `Cannot decode SET_MEM_TABLE from front-end: nregions is "3" but the payload holds 2 regions`,
  );
  const nine = bad(hdr(5, 1, 264) + u32(9) + u32(0) + zeros(256), 8, "front-end");
  assert.equal(nine.detail, `nregions is "9", expected at most 8`);
  const tooBig = bad(hdr(5, 1, 296) + u32(9) + u32(0) + zeros(288), 8, "front-end");
  assert.equal(tooBig.kind, "size");
  assert.equal(
    tooBig.detail,
    "payload is 296 bytes, expected 8 + 32·n bytes for n regions (40 to 264)",
  );
  const ragged = bad(hdr(5, 1, 50) + u32(1) + u32(0) + zeros(42), 1, "front-end");
  assert.equal(ragged.detail, "payload is 50 bytes, expected 8 + 32·n");
});

Deno.test("NOFD bit must agree with the fds", () => {
  const withFdAndNofd = bad(hdr(13, 1, 8) + u64(0x100), 1, "front-end");
  assert.equal(withFdAndNofd.kind, "fds");
  assert.equal(withFdAndNofd.detail, "1 fd attached but the NOFD bit is set");
  const noFdNoNofd = bad(hdr(12, 1, 8) + u64(0), 0, "front-end");
  assert.equal(noFdNoNofd.detail, "0 fds attached but the NOFD bit is clear");
  const notifier = bad(hdr(3, 1, 24) + u64(0x100) + zeros(16), 1, "back-end", {
    channel: "backend",
  });
  assert.equal(notifier.request, "BACKEND_VRING_HOST_NOTIFIER_MSG");
  assert.equal(notifier.detail, "1 fd attached but the NOFD bit is set");
});

Deno.test("SET_DEVICE_STATE_FD reply fd follows bit 8", () => {
  assert.equal(
    bad(hdr(42, 5, 8) + u64(0x100), 1, "back-end").detail,
    "1 fd attached but the NOFD bit is set",
  );
  assert.equal(
    bad(hdr(42, 5, 8) + u64(0), 0, "back-end").detail,
    "0 fds attached but the NOFD bit is clear",
  );
  const both = bad(hdr(42, 5, 8) + u64(0x1), 1, "back-end");
  assert.equal(both.kind, "value");
  assert.equal(both.field, "error");
  assert.match(both.detail, /must not both indicate an error and return a file descriptor/);
});

Deno.test("SET_DEVICE_STATE_FD needs exactly its pipe fd", () => {
  const params = hdr(42, 1, 8) + u32(0) + u32(0);
  assert.equal(bad(params, 0, "front-end").detail, "0 fds attached, expected 1");
  assert.equal(bad(params, 2, "front-end").detail, "2 fds attached, expected 1");
});

Deno.test("GET_INFLIGHT_FD reply fd follows mmap_size", () => {
  const queues = "0100" + "8000" + zeros(4); // num_queues 1, queue_size 128, padding
  const withSize = hdr(31, 5, 24) + u64(0x2000) + u64(0) + queues;
  assert.equal(bad(withSize, 0, "back-end").detail, `0 fds attached but mmap_size is "0x2000"`);
  const empty = hdr(31, 5, 24) + zeros(16) + queues;
  assert.equal(bad(empty, 1, "back-end").detail, `1 fd attached but mmap_size is "0x0"`);
  // QEMU requires 24 bytes; the spec table's "N/A" is wrong.
  assert.equal(
    bad(hdr(31, 5, 20) + zeros(20), 0, "back-end").detail,
    "payload is 20 bytes, expected 24",
  );
});

Deno.test("device-state transfer direction and phase values", () => {
  const dir = bad(hdr(42, 1, 8) + u32(2) + u32(0), 1, "front-end");
  assert.equal(dir.kind, "value");
  assert.equal(dir.field, "direction");
  assert.equal(dir.detail, `direction is "2", expected 0 (SAVE) or 1 (LOAD)`);
  // Only phase 0 is defined "currently"; "additional phases might be added" (§1.10).
  const phase = ok(hdr(42, 1, 8) + u32(0) + u32(1), 1, "front-end");
  assert.equal(phase.name, "SET_DEVICE_STATE_FD");
  assert.equal(
    phase.warnings[0],
    `phase is "1", reserved for later (defined: 0 (STOPPED)): relayed`,
  );
});

Deno.test("config size above 256 or not matching the data", () => {
  const big = bad(hdr(25, 1, 12) + u32(0) + u32(300) + u32(0), 0, "front-end");
  assert.equal(big.field, "size");
  assert.equal(big.detail, `config size is "300", expected at most 256`);
  const mismatch = bad(hdr(25, 1, 16) + u32(0) + u32(8) + u32(0) + zeros(4), 0, "front-end");
  assert.equal(mismatch.detail, `config size is "8" but 4 data bytes follow`);
  const long = bad(hdr(24, 1, 269) + u32(0) + u32(257) + u32(0) + zeros(257), 0, "front-end");
  assert.equal(long.kind, "size");
});

Deno.test("IOTLB type and permission must be defined values", () => {
  const type = bad(hdr(22, 9, 32) + zeros(24) + "03" + "07" + zeros(6), 0, "front-end");
  assert.equal(type.field, "type");
  assert.equal(
    type.detail,
    `type is "7", expected 1 (MISS) or 2 (UPDATE) or 3 (INVALIDATE) or 4 (ACCESS_FAIL)`,
  );
  const perm = bad(hdr(22, 9, 32) + zeros(24) + "04" + "02" + zeros(6), 0, "front-end");
  assert.equal(perm.field, "perm");
});

Deno.test("SET_VRING_ENABLE and SET_VRING_ENDIAN num must be 0 or 1", () => {
  const enable = bad(hdr(18, 1, 8) + u32(0) + u32(2), 0, "front-end");
  assert.equal(
    enable.message,
    `Cannot decode SET_VRING_ENABLE from front-end: num is "2", expected 0 or 1`,
  );
  assert.equal(bad(hdr(23, 1, 8) + u32(0) + u32(5), 0, "front-end").field, "num");
});

Deno.test("unknown codes decode as raw bytes with a warning and stay relayable", () => {
  const m = ok(hdr(99, 9, 4) + "deadbeef", 1, "front-end");
  assert.equal(m.name, "UNKNOWN(99)");
  assert.equal(m.spec, undefined);
  assert.equal(m.kind, "request");
  assert.deepEqual(m.payload, { layout: "raw", bytes: bytesOf("deadbeef") });
  assert.deepEqual(m.warnings, [
    "unknown request code 99 on the main channel: relayed as raw bytes",
  ]);
  assert.deepEqual(encodeMessage(m), bytesOf(hdr(99, 9, 4) + "deadbeef"));
  const backend = ok(hdr(11, 1, 0), 0, "back-end", { channel: "backend" });
  assert.equal(backend.name, "UNKNOWN(11)");
  // Unknown codes still validate their headers.
  assert.equal(bad(hdr(99, 0x2, 0), 0, "front-end").request, "UNKNOWN(99)");
});

Deno.test("GET_SHARED_OBJECT is unknown in rfc2023 numbering where 41 is SET_DEVICE_STATE_FD", () => {
  const m = ok(hdr(43, 1, 0), 0, "front-end", { dialect: "rfc2023" });
  assert.equal(m.name, "UNKNOWN(43)");
  const v = bad(hdr(41, 1, 16) + zeros(16), 0, "front-end", { dialect: "rfc2023" });
  assert.equal(v.request, "SET_DEVICE_STATE_FD");
  assert.equal(v.detail, "payload is 16 bytes, expected 8");
});

// ---------------------------------------------------------------------------------------------
// Warnings: harmless oddities are relayed

Deno.test("reserved bits are warnings, kept for exact re-encoding; memory-table padding is refused", () => {
  const kick = ok(hdr(12, 1, 8) + u64(0x201n), 1, "front-end");
  assert.equal(kick.payload.layout, "vring_file");
  assert.deepEqual(kick.warnings, [`reserved field reserved is "0x1", expected 0`]);
  assert.deepEqual(encodeMessage(kick), bytesOf(hdr(12, 1, 8) + u64(0x201n)));
  // rust-vmm refuses a memory table whose padding is not 0.
  const table = bad(hdr(5, 1, 40) + u32(1) + u32(7) + REGION, 1, "front-end");
  assert.equal(table.detail, `padding is "0x7", expected 0`);
  const inflight = ok(hdr(31, 1, 24) + zeros(16) + "0100" + "8000" + u32(1), 0, "front-end", {
    negotiated: { protocol: 1n << 12n },
  });
  assert.deepEqual(inflight.warnings, [`reserved field padding is "0x1", expected 0`]);
});

Deno.test("REM_MEM_REG with an fd is legal but warned: the back-end must close it", () => {
  const m = ok(hdr(38, 1, 40) + u64(0) + REGION, 1, "front-end", {
    negotiated: { protocol: 1n << 15n },
  });
  assert.deepEqual(m.warnings, [
    "1 fds attached, expected at most 0: the receiver must close them",
  ]);
  assert.equal(bad(hdr(38, 1, 40) + u64(0) + REGION, 2, "front-end").kind, "fds");
});

Deno.test("GET_VRING_BASE request with a non-zero num is warned", () => {
  const m = ok(hdr(11, 1, 8) + u32(0) + u32(3), 0, "front-end");
  assert.deepEqual(m.warnings, [
    `num is "3" but is reserved in GET_VRING_BASE requests, expected 0`,
  ]);
});

Deno.test("requests without their feature negotiated are warned, not refused", () => {
  const m = ok(hdr(43, 1, 0), 0, "front-end");
  assert.deepEqual(m.warnings, [
    "CHECK_DEVICE_STATE sent without protocol feature DEVICE_STATE (bit 19) negotiated",
  ]);
  const rfc = ok(hdr(42, 1, 0), 0, "front-end", { dialect: "rfc2023" });
  assert.deepEqual(rfc.warnings, [
    "CHECK_DEVICE_STATE sent without protocol feature DEVICE_STATE (bit 17) negotiated",
  ]);
  const negotiated = ok(hdr(43, 1, 0), 0, "front-end", {
    negotiated: { protocol: VIRTIOFSD_PROTOCOL },
  });
  assert.deepEqual(negotiated.warnings, []);
  // Virtio gates wait for SET_FEATURES: GET_PROTOCOL_FEATURES precedes it.
  assert.deepEqual(ok(hdr(15, 1, 0), 0, "front-end").warnings, []);
  const iotlb = ok(hdr(22, 9, 32) + zeros(24) + "0302" + zeros(6), 0, "front-end", {
    negotiated: { virtio: VIRTIOFSD_VIRTIO },
  });
  assert.deepEqual(iotlb.warnings, [
    "IOTLB_MSG sent without virtio feature VIRTIO_F_ACCESS_PLATFORM negotiated",
  ]);
});

Deno.test("an 8-byte memory table outside postcopy is refused; region replies are warned", () => {
  const ack = bad(hdr(5, 1, 8) + u64(0), 0, "front-end");
  assert.match(ack.detail, /POSTCOPY_LISTEN was not seen/);
  const reply = ok(hdr(5, 5, 40) + u32(1) + u32(0) + REGION, 0, "back-end");
  assert.equal(reply.payload.layout, "memory_table");
  assert.equal(reply.warnings.length, 1);
  const nonzero = ok(hdr(0, 1, 8) + u64(1), 0, "front-end", { negotiated: { postcopy: true } });
  assert.deepEqual(nonzero.warnings, [`postcopy acknowledgement is "1", expected 0`]);
  assert.equal(
    bad(hdr(5, 1, 8) + u64(0), 1, "front-end", { negotiated: { postcopy: true } }).detail,
    "1 fd attached, expected 0",
  );
});

Deno.test("SET_LOG_BASE and GET_SHARED_OBJECT replies of odd size are relayed raw with a warning", () => {
  const log = ok(hdr(6, 5, 0), 0, "back-end");
  assert.equal(log.payload.layout, "raw");
  assert.deepEqual(log.warnings, ["reply is 0 bytes, expected 8: relayed raw"]);
  const shared = ok(hdr(41, 5, 4) + "00000000", 1, "back-end");
  assert.equal(shared.payload.layout, "raw");
  assert.equal(bad(hdr(41, 5, 8) + u64(0), 2, "back-end").kind, "fds");
});

// ---------------------------------------------------------------------------------------------
// Reply rules

const NONE: Negotiated = { virtio: 0n, protocol: 0n, postcopy: false };
const ACK: Negotiated = { virtio: 0n, protocol: 1n << 3n, postcopy: false };

function request(
  hex: string,
  fds = 0,
  channel: Channel = "main",
  negotiated: Partial<Negotiated> = {},
) {
  return ok(hex, fds, channel === "main" ? "front-end" : "back-end", { channel, negotiated });
}

Deno.test("replyExpected: always rows reply regardless of NEED_REPLY", () => {
  for (
    const hex of [
      hdr(1, 1, 0),
      hdr(15, 1, 0),
      hdr(11, 1, 8) + zeros(8),
      hdr(43, 1, 0),
      hdr(40, 1, 0),
    ]
  ) {
    assert.equal(replyExpected(request(hex), NONE), true, hex);
  }
  assert.equal(replyExpected(request(hdr(42, 1, 8) + zeros(8), 1), NONE), true);
  assert.equal(
    replyExpected(request(hdr(31, 1, 24) + zeros(16) + "0100" + "8000" + zeros(4)), NONE),
    true,
  );
  assert.equal(replyExpected(request(hdr(28, 1, 0)), NONE), true);
});

Deno.test("replyExpected: ack rows reply only with NEED_REPLY and REPLY_ACK", () => {
  const plain = request(hdr(2, 1, 8) + u64(0));
  const nr = request(hdr(2, 9, 8) + u64(0));
  assert.equal(replyExpected(plain, ACK), false);
  assert.equal(replyExpected(nr, NONE), false);
  assert.equal(replyExpected(nr, ACK), true);
  // REPLY_ACK numbering is the same in both dialects.
  assert.equal(replyExpected(request(hdr(3, 9, 0)), ACK), true);
});

Deno.test("replyExpected: never rows still get a REPLY_ACK ack when NEED_REPLY is set", () => {
  assert.equal(replyExpected(request(hdr(34, 1, 0)), ACK), false);
  assert.equal(replyExpected(request(hdr(34, 9, 0)), ACK), true);
  assert.equal(replyExpected(request(hdr(34, 9, 0)), NONE), false);
});

Deno.test("replyExpected: SET_LOG_BASE always replies with F_LOG_SHMFD", () => {
  const log = request(hdr(6, 1, 16) + u64(0x1000) + zeros(8), 1);
  assert.equal(replyExpected(log, { ...NONE, protocol: 1n << 1n }), true);
  assert.equal(replyExpected(log, ACK), false);
  assert.equal(replyExpected(request(hdr(6, 9, 16) + u64(0x1000) + zeros(8), 1), ACK), true);
});

Deno.test("replyExpected: postcopy SET_MEM_TABLE and ADD_MEM_REG reply, their acks do not", () => {
  const post: Negotiated = { ...NONE, postcopy: true };
  assert.equal(replyExpected(request(hdr(5, 1, 40) + u32(1) + u32(0) + REGION, 1), post), true);
  assert.equal(replyExpected(request(hdr(5, 1, 40) + u32(1) + u32(0) + REGION, 1), NONE), false);
  assert.equal(replyExpected(request(hdr(37, 1, 40) + u64(0) + REGION, 1), post), true);
  assert.equal(replyExpected(request(hdr(38, 1, 40) + u64(0) + REGION), post), false);
  for (const code of [0, 5, 37, 38]) {
    const ack = request(hdr(code, 1, 8) + u64(0), 0, "main", { postcopy: true });
    assert.equal(ack.payload.layout, "postcopy_ack");
    assert.equal(replyExpected(ack, { ...post, protocol: 1n << 3n }), false, `code ${code}`);
  }
});

Deno.test("replyExpected: the back-end channel answers NEED_REPLY without REPLY_ACK (as QEMU)", () => {
  const nr = request(hdr(2, 9, 0), 0, "backend");
  assert.equal(replyExpected(nr, NONE), true);
  assert.equal(replyExpected(request(hdr(2, 1, 0), 0, "backend"), NONE), false);
  assert.equal(replyExpected(request(hdr(8, 1, 16) + "01" + zeros(15), 0, "backend"), NONE), true);
});

Deno.test("replyExpected: replies and unknown requests", () => {
  assert.equal(replyExpected(ok(hdr(1, 5, 8) + u64(0), 0, "back-end"), ACK), false);
  assert.equal(replyExpected(request(hdr(99, 9, 0)), ACK), true);
  assert.equal(replyExpected(request(hdr(99, 1, 0)), ACK), false);
});

Deno.test("allowedFds and replyFdsAllowed follow the rows and payloads", () => {
  assert.deepEqual(allowedFds(request(hdr(5, 1, 72) + u32(2) + u32(0) + REGION + REGION, 2)), {
    min: 2,
    max: 2,
  });
  assert.deepEqual(allowedFds(request(hdr(13, 1, 8) + u64(0x100))), { min: 0, max: 0 });
  const getInflight = request(hdr(31, 1, 24) + zeros(16) + "0100" + "8000" + zeros(4));
  assert.deepEqual(replyFdsAllowed(getInflight), { min: 0, max: 1 });
  const reply = ok(
    hdr(31, 5, 24) + u64(0x1000) + zeros(8) + "0100" + "8000" + zeros(4),
    1,
    "back-end",
  );
  assert.deepEqual(replyFdsAllowed(getInflight, reply.payload), { min: 1, max: 1 });
  assert.deepEqual(allowedFds(reply), { min: 1, max: 1 });
  const setState = request(hdr(42, 1, 8) + zeros(8), 1);
  assert.deepEqual(replyFdsAllowed(setState), { min: 0, max: 1 });
  const noFd = ok(hdr(42, 5, 8) + u64(0x100), 0, "back-end");
  assert.deepEqual(replyFdsAllowed(setState, noFd.payload), { min: 0, max: 0 });
  assert.deepEqual(allowedFds(request(hdr(99, 1, 0))), { min: 0, max: 8 });
});

Deno.test("checkReply: code, GET_CONFIG size, postcopy regions", () => {
  const get = request(hdr(24, 1, 16) + u32(0) + u32(4) + u32(0) + zeros(4));
  assert.equal(
    checkReply(get, ok(hdr(24, 5, 16) + u32(0) + u32(4) + u32(0) + zeros(4), 0, "back-end")),
    undefined,
  );
  const short = checkReply(
    get,
    ok(hdr(24, 5, 14) + u32(0) + u32(2) + u32(0) + zeros(2), 0, "back-end"),
  );
  assert.equal(
    short?.message,
    `Cannot decode GET_CONFIG reply from back-end: config size is "2", expected 4 as requested`,
  );
  const wrong = checkReply(get, ok(hdr(1, 5, 8) + u64(0), 0, "back-end"));
  assert.equal(wrong?.field, "request");
  const post = { postcopy: true };
  const table = request(
    hdr(5, 1, 40) + u32(1) + u32(0) + u64(0x1000) + u64(0x1000) + zeros(16),
    1,
    "main",
    post,
  );
  const moved = ok(
    hdr(5, 5, 40) + u32(1) + u32(0) + u64(0x2000) + u64(0x1000) + zeros(16),
    0,
    "back-end",
    {
      negotiated: post,
    },
  );
  assert.equal(checkReply(table, moved)?.field, "guestPhysAddr");
  const region = request(
    hdr(37, 1, 40) + u64(0) + u64(0x1000) + u64(0x1000) + zeros(16),
    1,
    "main",
    post,
  );
  const same = ok(
    hdr(37, 5, 40) + u64(0) + u64(0x1000) + u64(1) + u64(0x7f00) + zeros(8),
    0,
    "back-end",
    {
      negotiated: post,
    },
  );
  assert.equal(checkReply(region, same), undefined);
});

// ---------------------------------------------------------------------------------------------
// Logging views

Deno.test("messageToJson: JSON-safe, hex addresses, feature names", () => {
  const features = ok(hdr(1, 5, 8) + u64(VIRTIOFSD_VIRTIO), 0, "back-end");
  const json = messageToJson(features);
  assert.deepEqual(JSON.parse(JSON.stringify(json)), {
    request: "GET_FEATURES",
    code: 1,
    kind: "reply",
    channel: "main",
    sender: "back-end",
    dialect: "upstream",
    flags: "0x5",
    needReply: false,
    size: 8,
    fds: 0,
    layout: "virtio_features",
    payload: {
      features: {
        mask: "0x174000000",
        names: [
          "VHOST_F_LOG_ALL",
          "VIRTIO_RING_F_INDIRECT_DESC",
          "VIRTIO_RING_F_EVENT_IDX",
          "VHOST_USER_F_PROTOCOL_FEATURES",
          "VIRTIO_F_VERSION_1",
        ],
      },
    },
  });
  const protocol = messageToJson(ok(hdr(15, 5, 8) + u64(VIRTIOFSD_PROTOCOL), 0, "back-end"));
  assert.deepEqual(protocol.payload, {
    features: {
      mask: "0x8a42b",
      names: [
        "MQ",
        "LOG_SHMFD",
        "REPLY_ACK",
        "BACKEND_REQ",
        "BACKEND_SEND_FD",
        "RESET_DEVICE",
        "CONFIGURE_MEM_SLOTS",
        "DEVICE_STATE",
      ],
    },
  });
  const rfc = messageToJson(
    ok(hdr(15, 5, 8) + u64(1n << 17n), 0, "back-end", { dialect: "rfc2023" }),
  );
  assert.deepEqual(rfc.payload, { features: { mask: "0x20000", names: ["MIGRATORY_STATE"] } });
});

Deno.test("messageToJson: memory tables, inflight, device state, config, warnings", () => {
  const table = messageToJson(
    ok(
      hdr(5, 1, 40) + u32(1) + u32(0) + u64(0) + u64(0x20000000) + u64(0x7f0000000000n) + u64(0),
      1,
      "front-end",
    ),
  );
  assert.deepEqual(table.payload, {
    nregions: 1,
    regions: [{
      guestPhysAddr: "0x0",
      memorySize: "0x20000000",
      userspaceAddr: "0x7f0000000000",
      mmapOffset: "0x0",
    }],
  });
  const state = messageToJson(ok("2a000000 01000000 08000000 00000000 00000000", 1, "front-end"));
  assert.deepEqual(state.payload, {
    direction: 0,
    directionName: "SAVE",
    phase: 0,
    phaseName: "STOPPED",
  });
  const result = messageToJson(ok(hdr(42, 5, 8) + u64(0x100), 0, "back-end"));
  assert.deepEqual(result.payload, { error: 0, noFd: true });
  const config = messageToJson(
    ok(hdr(24, 5, 16) + u32(0) + u32(4) + u32(0) + "6d796673", 0, "back-end"),
  );
  assert.deepEqual(config.payload, {
    offset: 0,
    size: 4,
    flags: 0,
    flagsName: "WRITABLE",
    data: "6d796673",
  });
  const warned = messageToJson(ok(hdr(99, 1, 0), 0, "front-end"));
  assert.deepEqual(warned.warnings, [
    "unknown request code 99 on the main channel: relayed as raw bytes",
  ]);
  const crypto = messageToJson(
    ok(hdr(26, 5, 1072) + u64(1) + zeros(1056) + u64(-1n), 0, "back-end"),
  );
  assert.equal((crypto.payload as Record<string, unknown>).sessionId, -1);
});

Deno.test("summarizeMessage: key fields for a one-line log", () => {
  const cases: [string, number, Side, string, Ctx?][] = [
    ["08000000 01000000 08000000 00000000 00010000", 0, "front-end", "index=0 num=256"],
    [
      hdr(5, 1, 40) + u32(1) + u32(0) + u64(0) + u64(0x20000000) + u64(0x7f0000000000n) + u64(0),
      1,
      "front-end",
      "regions=1 [gpa=0x0 size=512MiB uaddr=0x7f0000000000 offset=0x0 fd]",
    ],
    [hdr(13, 1, 8) + u64(0x102), 0, "front-end", "index=2 nofd"],
    [hdr(12, 1, 8) + u64(1), 1, "front-end", "index=1 fd"],
    [
      hdr(1, 5, 8) + u64(0x140000000n),
      0,
      "back-end",
      "0x140000000 VHOST_USER_F_PROTOCOL_FEATURES|VIRTIO_F_VERSION_1",
    ],
    [hdr(16, 1, 8) + u64(0x80008n), 0, "front-end", "0x80008 REPLY_ACK|DEVICE_STATE"],
    [
      "2a000000 01000000 08000000 01000000 00000000",
      1,
      "front-end",
      "direction=LOAD phase=STOPPED",
    ],
    ["2a000000 05000000 08000000 0001000000000000", 0, "back-end", "ok nofd"],
    [hdr(43, 5, 8) + u64(1), 0, "back-end", "failed (1)"],
    [hdr(10, 1, 8) + u32(0) + "05800380", 0, "front-end", "index=0 avail=5 wrap=1 used=3 wrap=1", {
      negotiated: { virtio: 1n << 34n },
    }],
    [
      hdr(39, 1, 8) + u64(0xf),
      0,
      "front-end",
      "status=0xf ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK",
    ],
    [hdr(3, 1, 0), 0, "front-end", ""],
    [hdr(99, 1, 2) + "0102", 0, "front-end", "2 bytes"],
    [
      hdr(22, 9, 32) + u64(0x1000) + u64(0x1000) + u64(0x7f00) + "0302" + zeros(6),
      0,
      "front-end",
      "UPDATE iova=0x1000 size=4KiB uaddr=0x7f00 perm=RW",
    ],
    [hdr(0, 1, 8) + u64(0), 0, "front-end", "postcopy ack=0", { negotiated: { postcopy: true } }],
  ];
  for (const [hex, fds, sender, expected, opts] of cases) {
    assert.equal(summarizeMessage(ok(hex, fds, sender, opts)), expected);
  }
});

// ---------------------------------------------------------------------------------------------
// Building messages and the error class

Deno.test("createMessage builds QEMU-style flags and round-trips", () => {
  const reply = createMessage({
    channel: "main",
    sender: "back-end",
    request: "SET_DEVICE_STATE_FD",
    payload: { layout: "device_state_result", error: 0, noFd: true, reserved: 0n },
  });
  assert.deepEqual(encodeMessage(reply), bytesOf("2a000000 05000000 08000000 0001000000000000"));
  const rfc = createMessage({
    channel: "main",
    sender: "front-end",
    dialect: "rfc2023",
    request: "CHECK_DEVICE_STATE",
    payload: { layout: "empty" },
    needReply: true,
  });
  assert.deepEqual(encodeMessage(rfc), bytesOf(hdr(42, 9, 0)));
  assert.throws(
    () =>
      createMessage({
        channel: "main",
        sender: "front-end",
        dialect: "rfc2023",
        request: "GET_SHARED_OBJECT",
        payload: { layout: "empty" },
      }),
    TypeError,
  );
  assert.equal(FLAG_REPLY | FLAG_NEED_REPLY, 0xc);
});

Deno.test("encodeMessage refuses values that do not fit their fields", () => {
  const m = createMessage({
    channel: "main",
    sender: "front-end",
    request: "SET_VRING_NUM",
    payload: { layout: "vring_state", index: 0, num: 0 },
  });
  const huge: Message = { ...m, payload: { layout: "vring_state", index: 2 ** 32, num: 0 } };
  assert.throws(() => encodeMessage(huge), RangeError);
  const negative: Message = { ...m, payload: { layout: "u64", value: -1n } };
  assert.throws(() => encodeMessage(negative), RangeError);
});

Deno.test("ProtocolError carries the violation, request name and direction", () => {
  const v = bad(hdr(9, 1, 12) + zeros(12), 0, "front-end");
  const e = new ProtocolError(v);
  assert.ok(e instanceof Error);
  assert.equal(e.name, "ProtocolError");
  assert.equal(
    e.message,
    "Cannot decode SET_VRING_ADDR from front-end: payload is 12 bytes, expected 40",
  );
  assert.equal(e.request, "SET_VRING_ADDR");
  assert.equal(e.direction, "front-end → back-end");
  assert.equal(e.violation, v);
  const back = new ProtocolError(bad(hdr(1, 1, 0), 0, "back-end"));
  assert.equal(back.direction, "back-end → front-end");
});
