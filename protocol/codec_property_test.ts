import assert from "node:assert/strict";
import fc from "fast-check";
import { codeIn, type Dialect, REQUESTS, type RequestSpec } from "./catalogue.ts";
import {
  allowedFds,
  createMessage,
  decodeMessage,
  encodeMessage,
  HEADER_SIZE,
  type Message,
  messageToJson,
  type Negotiated,
  readHeader,
  resolveLayout,
  summarizeMessage,
} from "./codec.ts";
import type { LayoutName, MemoryRegion, PayloadOf, XenMemoryRegion } from "./layouts.ts";

// ---------------------------------------------------------------------------------------------
// Arbitraries for valid payloads of every layout

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const i64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
/** Reserved fields: mostly zero, sometimes not (a warning, still relayed and re-encoded exactly). */
const mostlyZero = <T>(zero: T, any: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 4, arbitrary: fc.constant(zero) }, { weight: 1, arbitrary: any });

/** A non-zero size and bases whose ranges do not wrap (what rust-vmm accepts). */
const regionCore = fc.bigInt({ min: 1n, max: 2n ** 48n }).chain((memorySize) => {
  const base = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n - memorySize });
  return fc.record({
    guestPhysAddr: base,
    memorySize: fc.constant(memorySize),
    userspaceAddr: base,
    mmapOffset: base,
  });
});
const region: fc.Arbitrary<MemoryRegion> = regionCore.map((r) => ({ ...r })); // plain prototype
const xenRegion: fc.Arbitrary<XenMemoryRegion> = fc.tuple(regionCore, u32, u32).map((
  [r, xenMmapFlags, domid],
) => ({ ...r, xenMmapFlags, domid }));
const aligned = (n: bigint) => fc.bigInt({ min: 0n, max: (2n ** 64n - 1n) / n }).map((x) => x * n);

function tagged<L extends LayoutName>(
  layout: L,
  value: fc.Arbitrary<Omit<PayloadOf<L>, "layout">>,
): fc.Arbitrary<PayloadOf<L>> {
  return value.map((v) => ({ ...v, layout }) as PayloadOf<L>);
}

const PAYLOADS: { [L in LayoutName]: fc.Arbitrary<PayloadOf<L>> } = {
  empty: fc.constant({ layout: "empty" }),
  raw: tagged("raw", fc.record({ bytes: fc.uint8Array({ maxLength: 64 }) })),
  u64: tagged("u64", fc.record({ value: u64 })),
  result: tagged("result", fc.record({ value: u64 })),
  postcopy_ack: tagged("postcopy_ack", fc.record({ value: mostlyZero(0n, u64) })),
  virtio_features: tagged("virtio_features", fc.record({ features: u64 })),
  protocol_features: tagged("protocol_features", fc.record({ features: u64 })),
  status: tagged("status", fc.record({ status: u64 })),
  mac: tagged("mac", fc.record({ mac: bytes(6), padding: mostlyZero(0, u16) })),
  vring_state: tagged("vring_state", fc.record({ index: u32, num: u32 })),
  vring_base_packed: tagged(
    "vring_base_packed",
    fc.record({
      index: u32,
      availIndex: fc.integer({ min: 0, max: 0x7fff }),
      availWrap: fc.boolean(),
      usedIndex: fc.integer({ min: 0, max: 0x7fff }),
      usedWrap: fc.boolean(),
    }),
  ),
  vring_file: tagged(
    "vring_file",
    fc.record({
      index: u8,
      noFd: fc.boolean(),
      reserved: mostlyZero(0n, fc.bigInt({ min: 0n, max: 2n ** 55n - 1n })),
    }),
  ),
  vring_addr: tagged(
    "vring_addr",
    fc.record({
      index: u32,
      flags: fc.integer({ min: 0, max: 1 }),
      descUserAddr: aligned(16n),
      usedUserAddr: aligned(4n),
      availUserAddr: aligned(2n),
      logGuestAddr: u64,
    }),
  ),
  memory_table: tagged(
    "memory_table",
    fc.record({
      padding: fc.constant(0),
      regions: fc.array(region, { minLength: 1, maxLength: 8 }),
    }),
  ),
  memory_table_xen: tagged(
    "memory_table_xen",
    fc.record({
      padding: fc.constant(0),
      regions: fc.array(xenRegion, { minLength: 1, maxLength: 8 }),
    }),
  ),
  mem_region: tagged(
    "mem_region",
    region.chain((r) => fc.record({ padding: mostlyZero(0n, u64) }).map((p) => ({ ...r, ...p }))),
  ),
  mem_region_xen: tagged(
    "mem_region_xen",
    xenRegion.chain((r) =>
      fc.record({ padding: mostlyZero(0n, u64) }).map((p) => ({ ...r, ...p }))
    ),
  ),
  log: tagged(
    "log",
    fc.bigInt({ min: 1n, max: 2n ** 40n }).chain((mmapSize) =>
      fc.record({
        mmapSize: fc.constant(mmapSize),
        mmapOffset: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n - mmapSize }),
      })
    ),
  ),
  iotlb: tagged(
    "iotlb",
    fc.record({
      iova: u64,
      size: u64,
      uaddr: u64,
      perm: fc.integer({ min: 0, max: 3 }),
      type: fc.integer({ min: 1, max: 4 }),
      padding: mostlyZero(new Uint8Array(6), bytes(6)),
    }),
  ),
  config: tagged(
    "config",
    fc.record({
      offset: u32,
      flags: mostlyZero(0, u32),
      data: fc.uint8Array({ minLength: 1, maxLength: 256 }),
    }),
  ),
  vring_area: tagged(
    "vring_area",
    fc.record({
      index: u8,
      noFd: fc.boolean(),
      reserved: mostlyZero(0n, fc.bigInt({ min: 0n, max: 2n ** 55n - 1n })),
      size: u64,
      offset: u64,
    }),
  ),
  inflight: tagged(
    "inflight",
    fc.record({
      mmapSize: u64,
      mmapOffset: u64,
      numQueues: fc.integer({ min: 1, max: 0xffff }),
      queueSize: fc.integer({ min: 1, max: 0xffff }),
      padding: mostlyZero(0, u32),
    }),
  ),
  shared_object: tagged(
    "shared_object",
    fc.record({ uuid: bytes(16) }).filter(({ uuid }) =>
      !uuid.every((b) => b === 0) && !uuid.every((b) => b === 0xff)
    ),
  ),
  device_state_params: tagged(
    "device_state_params",
    fc.record({ direction: fc.integer({ min: 0, max: 1 }), phase: fc.constant(0) }),
  ),
  device_state_result: tagged(
    "device_state_result",
    fc.record({
      error: u8,
      noFd: fc.boolean(),
      reserved: mostlyZero(0n, fc.bigInt({ min: 0n, max: 2n ** 55n - 1n })),
    })
      // The spec forbids an error together with a returned fd.
      .map((v) => (v.error !== 0 ? { ...v, noFd: true } : v)),
  ),
  crypto_session: tagged(
    "crypto_session",
    fc.record({ opCode: u64, session: bytes(1056), sessionId: i64 }),
  ),
  shmem_config: tagged(
    "shmem_config",
    fc.record({
      nregions: fc.integer({ min: 0, max: 256 }),
      padding: mostlyZero(0, u32),
      memorySizes: fc.array(u64, { minLength: 256, maxLength: 256 }),
    }),
  ),
  shmem_map: tagged(
    "shmem_map",
    fc.record({
      shmid: u8,
      padding: mostlyZero(new Uint8Array(7), bytes(7)),
      fdOffset: u64,
      shmOffset: u64,
      len: u64,
      flags: u64,
    }),
  ),
};

// ---------------------------------------------------------------------------------------------
// Valid messages of every catalogue row

interface Scenario {
  spec: RequestSpec;
  dialect: Dialect;
  reply: boolean;
  negotiated: Negotiated;
  /** Use the postcopy shape (ack request or region reply) where the row has one. */
  postcopyShape: boolean;
  needReply: boolean;
}

const scenario: fc.Arbitrary<Scenario> = fc
  .record({
    spec: fc.constantFrom(...REQUESTS),
    dialect: fc.constantFrom<Dialect>("upstream", "rfc2023"),
    reply: fc.boolean(),
    virtio: u64,
    protocol: u64,
    postcopy: fc.boolean(),
    postcopyShape: fc.boolean(),
    needReply: fc.boolean(),
  })
  .filter((s) => codeIn(s.spec, s.dialect) !== undefined)
  .map((s) => ({
    spec: s.spec,
    dialect: s.dialect,
    reply: s.reply,
    // An 8-byte postcopy acknowledgement is only legal after POSTCOPY_LISTEN.
    negotiated: {
      virtio: s.virtio,
      protocol: s.protocol,
      postcopy: s.postcopy || (s.postcopyShape && !s.reply && s.spec.postcopy?.ack === true),
    },
    postcopyShape: s.postcopyShape,
    needReply: s.needReply,
  }));

function layoutFor(s: Scenario): LayoutName {
  const { spec, negotiated, dialect } = s;
  if (!s.reply) {
    if (spec.postcopy?.ack && s.postcopyShape) return "postcopy_ack";
    return resolveLayout(spec.request, negotiated, dialect);
  }
  if (spec.postcopy?.reply !== undefined && s.postcopyShape) {
    return resolveLayout(spec.postcopy.reply, negotiated, dialect);
  }
  return resolveLayout(spec.reply, negotiated, dialect);
}

const validMessage: fc.Arbitrary<{ message: Message; negotiated: Negotiated }> = scenario.chain((
  s,
) =>
  fc.tuple(fc.constant(s), PAYLOADS[layoutFor(s)], fc.nat()).map(([s, payload, pick]) => {
    let p = payload;
    // Rows whose num must be 0 or 1.
    if (!s.reply && p.layout === "vring_state" && s.spec.checks?.includes("num_is_bool")) {
      p = { ...p, num: p.num & 1 };
    }
    const channel = s.spec.channel;
    const requester = channel === "main" ? "front-end" : "back-end";
    const responder = channel === "main" ? "back-end" : "front-end";
    const draft = createMessage({
      channel,
      sender: s.reply ? responder : requester,
      dialect: s.dialect,
      request: s.spec.name,
      payload: p,
      needReply: s.needReply,
    });
    const range = allowedFds(draft);
    const fdCount = range.min + (pick % (range.max - range.min + 1));
    // An 8-byte postcopy acknowledgement (rows 5, 37, 38 and NONE) is only legal in postcopy.
    const negotiated = p.layout === "postcopy_ack"
      ? { ...s.negotiated, postcopy: true }
      : s.negotiated;
    return { message: { ...draft, fdCount }, negotiated };
  })
);

Deno.test("property: encode → decode → encode is the identity for valid messages of every row", () => {
  fc.assert(
    fc.property(validMessage, ({ message, negotiated }) => {
      const bytes = encodeMessage(message);
      const r = decodeMessage(readHeader(bytes), bytes.subarray(HEADER_SIZE), message.fdCount, {
        channel: message.channel,
        sender: message.sender,
        dialect: message.dialect,
        negotiated,
      });
      if (!r.ok) assert.fail(`${message.name}: ${r.error.message}`);
      assert.equal(r.message.name, message.name);
      assert.equal(r.message.kind, message.kind);
      assert.equal(r.message.code, message.code);
      assert.deepEqual(r.message.payload, message.payload);
      assert.deepEqual(r.message.header, message.header);
      assert.deepEqual(encodeMessage(r.message), bytes);
      JSON.stringify(messageToJson(r.message));
    }),
    { numRuns: 3000 },
  );
});

Deno.test("property: every catalogue row and direction is reachable by the generator", () => {
  const seen = new Set<string>();
  fc.sample(validMessage, 6000).forEach(({ message }) =>
    seen.add(`${message.channel}:${message.name}:${message.kind}`)
  );
  for (const spec of REQUESTS) {
    assert.ok(seen.has(`${spec.channel}:${spec.name}:request`), spec.name);
    assert.ok(seen.has(`${spec.channel}:${spec.name}:reply`), `${spec.name} reply`);
  }
});

// ---------------------------------------------------------------------------------------------
// Arbitrary input never throws

const LENGTHS = [0, 1, 7, 8, 12, 14, 16, 24, 32, 40, 48, 72, 88, 264, 268, 1072, 2056];

const anyInput = fc.record({
  request: fc.oneof(fc.integer({ min: 0, max: 46 }), u32),
  flags: fc.oneof(fc.constantFrom(0x1, 0x5, 0x9, 0xd, 0x0, 0x2, 0x11, 0x80000001), u32),
  payload: fc.oneof(
    fc.constantFrom(...LENGTHS).chain((n) => bytes(n)),
    fc.uint8Array({ maxLength: 300 }),
  ),
  sizeDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, {
    weight: 1,
    arbitrary: fc.integer({ min: -4, max: 4 }),
  }),
  fdCount: fc.integer({ min: -1, max: 10 }),
  channel: fc.constantFrom<"main" | "backend">("main", "backend"),
  sender: fc.constantFrom<"front-end" | "back-end">("front-end", "back-end"),
  dialect: fc.constantFrom<Dialect>("upstream", "rfc2023"),
  virtio: u64,
  protocol: u64,
  postcopy: fc.boolean(),
});

Deno.test("property: decodeMessage never throws, and what it accepts re-encodes byte for byte", () => {
  fc.assert(
    fc.property(anyInput, (input) => {
      const header = {
        request: input.request,
        flags: input.flags,
        size: Math.max(0, input.payload.length + input.sizeDelta),
      };
      const r = decodeMessage(header, input.payload, input.fdCount, {
        channel: input.channel,
        sender: input.sender,
        dialect: input.dialect,
        negotiated: { virtio: input.virtio, protocol: input.protocol, postcopy: input.postcopy },
      });
      if (!r.ok) {
        assert.notEqual(r.error.kind, "internal", r.error.message);
        assert.ok(r.error.message.startsWith("Cannot decode "), r.error.message);
        assert.equal(r.error.code, input.request);
        return;
      }
      const original = new Uint8Array(HEADER_SIZE + input.payload.length);
      const dv = new DataView(original.buffer);
      dv.setUint32(0, header.request, true);
      dv.setUint32(4, header.flags, true);
      dv.setUint32(8, header.size, true);
      original.set(input.payload, HEADER_SIZE);
      assert.deepEqual(encodeMessage(r.message), original);
      assert.equal(typeof summarizeMessage(r.message), "string");
      JSON.stringify(messageToJson(r.message));
    }),
    { numRuns: 5000 },
  );
});

Deno.test("property: flipping one payload byte of a valid message never throws", () => {
  fc.assert(
    fc.property(
      validMessage,
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      ({ message, negotiated }, at, xor) => {
        const bytes = encodeMessage(message);
        if (bytes.length === HEADER_SIZE) return;
        const i = HEADER_SIZE + (at % (bytes.length - HEADER_SIZE));
        bytes[i] ^= xor;
        const r = decodeMessage(readHeader(bytes), bytes.subarray(HEADER_SIZE), message.fdCount, {
          channel: message.channel,
          sender: message.sender,
          dialect: message.dialect,
          negotiated,
        });
        if (!r.ok) assert.notEqual(r.error.kind, "internal", r.error.message);
        else assert.deepEqual(encodeMessage(r.message), bytes);
      },
    ),
    { numRuns: 2000 },
  );
});
