import assert from "node:assert/strict";
import {
  decodePayload,
  encodePayload,
  type Field,
  FIELD_TABLES,
  fieldSize,
  LAYOUTS,
  payloadToJson,
  sizeText,
  summarizePayload,
  uuidText,
} from "./layouts.ts";
import {
  describeProtocolFeatures,
  describeVirtioFeatures,
  hasProtocolFeature,
  protocolFeatureBit,
  protocolFeatureMask,
} from "./features.ts";
import { bytesOf, u32, u64, zeros } from "./_test_utils.ts";

/** Struct sizes from spec §1.4.1. */
const SIZES: Record<keyof typeof FIELD_TABLES, number> = {
  u64: 8,
  vring_state: 8,
  vring_base_packed: 8,
  vring_file: 8,
  vring_addr: 40,
  memory_region: 32,
  memory_region_xen: 40,
  mem_region: 40,
  mem_region_xen: 48,
  log: 16,
  iotlb: 32,
  vring_area: 24,
  inflight: 24,
  device_state_params: 8,
  device_state_result: 8,
  crypto_session: 1072,
  shmem_map: 40,
};

Deno.test("field tables tile their structs: no gaps, no overlaps, spec sizes", () => {
  for (const [name, table] of Object.entries(FIELD_TABLES)) {
    const owner = new Array<string | undefined>(SIZES[name as keyof typeof SIZES]).fill(undefined);
    const words = new Map<number, { used: bigint; bits: number }>();
    for (const [field, spec] of Object.entries(table as Readonly<Record<string, Field>>)) {
      const size = fieldSize(spec);
      const isBits = spec.kind === "bits" || spec.kind === "bigbits" || spec.kind === "flag";
      if (isBits) {
        // Bit fields share a word: their bits must not overlap and must fill it.
        const width = spec.kind === "flag" ? 1 : spec.width;
        const shift = spec.kind === "flag" ? spec.bit : spec.shift;
        const mask = ((1n << BigInt(width)) - 1n) << BigInt(shift);
        const word = words.get(spec.at) ?? { used: 0n, bits: size * 8 };
        assert.equal(word.used & mask, 0n, `${name}.${field} overlaps a bit field`);
        assert.ok(shift + width <= word.bits, `${name}.${field} exceeds its word`);
        words.set(spec.at, { ...word, used: word.used | mask });
      }
      const mine = isBits ? `word@${spec.at}` : field;
      for (let i = spec.at; i < spec.at + size; i++) {
        assert.ok(i < owner.length, `${name}.${field} past the end`);
        if (isBits && owner[i] === mine) continue;
        assert.equal(owner[i], undefined, `${name}.${field} overlaps ${owner[i]}`);
        owner[i] = mine;
      }
    }
    assert.ok(owner.every((o) => o !== undefined), `${name} has a gap`);
    for (const [at, word] of words) {
      assert.equal(
        word.used,
        (1n << BigInt(word.bits)) - 1n,
        `${name} word at ${at} has unused bits`,
      );
    }
  }
});

Deno.test("vring address offsets follow the spec: index 0, flags 4, desc 8, used 16, avail 24, log 32", () => {
  const t = FIELD_TABLES.vring_addr;
  assert.deepEqual(
    [
      t.index.at,
      t.flags.at,
      t.descUserAddr.at,
      t.usedUserAddr.at,
      t.availUserAddr.at,
      t.logGuestAddr.at,
    ],
    [0, 4, 8, 16, 24, 32],
  );
  const iotlb = FIELD_TABLES.iotlb;
  assert.deepEqual([iotlb.perm.at, iotlb.type.at], [24, 25]);
  const inflight = FIELD_TABLES.inflight;
  assert.deepEqual([inflight.numQueues.at, inflight.queueSize.at], [16, 18]);
  assert.equal(FIELD_TABLES.mem_region.guestPhysAddr.at, 8);
  assert.equal(FIELD_TABLES.crypto_session.sessionId.at, 1064);
});

Deno.test("layout size rules", () => {
  assert.deepEqual(LAYOUTS.vring_addr.size, { exact: 40 });
  assert.deepEqual(LAYOUTS.inflight.size, { exact: 24 });
  assert.deepEqual(LAYOUTS.crypto_session.size, { exact: 1072 });
  assert.deepEqual(LAYOUTS.shmem_config.size, { exact: 2056 });
  assert.deepEqual(LAYOUTS.shmem_map.size, { exact: 40 });
  assert.deepEqual(LAYOUTS.shared_object.size, { exact: 16 });
  assert.deepEqual(LAYOUTS.mem_region_xen.size, { exact: 48 });
  const table = LAYOUTS.memory_table.size;
  assert.ok("min" in table && table.min === 40 && table.max === 264);
  const xen = LAYOUTS.memory_table_xen.size;
  assert.ok("min" in xen && xen.min === 48 && xen.max === 328);
  const config = LAYOUTS.config.size;
  assert.ok("min" in config && config.min === 12 && config.max === 268);
});

Deno.test("packed vring base splits num into indices and wrap counters", () => {
  const { payload } = decodePayload("vring_base_packed", bytesOf(u32(3) + u32(0x80018002)));
  assert.deepEqual(payload, {
    layout: "vring_base_packed",
    index: 3,
    availIndex: 0x8002 & 0x7fff,
    availWrap: true,
    usedIndex: 1,
    usedWrap: true,
  });
  assert.deepEqual(encodePayload(payload), bytesOf(u32(3) + u32(0x80018002)));
  // The same bytes read as a split ring keep num whole.
  assert.deepEqual(decodePayload("vring_state", bytesOf(u32(3) + u32(0x80018002))).payload, {
    layout: "vring_state",
    index: 3,
    num: 0x80018002,
  });
});

Deno.test("vring file index: bits 0-7 index, bit 8 NOFD, rest reserved", () => {
  const { payload, issues } = decodePayload("vring_file", bytesOf(u64(0x1ff)));
  assert.deepEqual(payload, { layout: "vring_file", index: 0xff, noFd: true, reserved: 0n });
  assert.deepEqual(issues, []);
  const high = decodePayload("vring_file", bytesOf(u64(0x8000000000000001n)));
  assert.deepEqual(high.payload, {
    layout: "vring_file",
    index: 1,
    noFd: false,
    reserved: 1n << 54n,
  });
  assert.equal(high.issues[0].severity, "warning");
  assert.deepEqual(encodePayload(high.payload), bytesOf(u64(0x8000000000000001n)));
});

Deno.test("crypto session keeps the union raw and decodes op_code and session_id", () => {
  const hex = u64(2) + "ab".repeat(1056) + u64(-5n);
  const { payload } = decodePayload("crypto_session", bytesOf(hex));
  assert.equal(payload.layout, "crypto_session");
  if (payload.layout !== "crypto_session") return;
  assert.equal(payload.opCode, 2n);
  assert.equal(payload.sessionId, -5n);
  assert.equal(payload.session.length, 1056);
  assert.deepEqual(encodePayload(payload), bytesOf(hex));
});

Deno.test("shmem config: the array index is the region id (a region only at id 1 is logged as id 1)", () => {
  const hex = u32(1) + u32(0) + u64(0) + u64(0x200000) + zeros(8 * 254);
  const { payload, issues } = decodePayload("shmem_config", bytesOf(hex));
  assert.deepEqual(issues, []);
  assert.deepEqual(payloadToJson(payload, { dialect: "upstream" }), {
    nregions: 1,
    regions: [{ id: 1, size: "0x200000" }],
  });
  assert.equal(summarizePayload(payload, { dialect: "upstream" }), "nregions=1 1:2MiB");
  // nregions counts the non-zero sizes: a mismatch is a warning.
  const off = decodePayload(
    "shmem_config",
    bytesOf(u32(3) + u32(0) + u64(0x1000) + zeros(8 * 255)),
  );
  assert.deepEqual(off.issues.map((i) => [i.severity, i.field]), [["warning", "nregions"]]);
});

Deno.test("shmem config and map (rust-vmm 0.16 layouts)", () => {
  const hex = u32(1) + u32(0) + u64(0x400000) + zeros(8 * 255);
  const { payload } = decodePayload("shmem_config", bytesOf(hex));
  assert.equal(payload.layout, "shmem_config");
  assert.deepEqual(payloadToJson(payload, { dialect: "upstream" }), {
    nregions: 1,
    regions: [{ id: 0, size: "0x400000" }],
  });
  assert.deepEqual(encodePayload(payload), bytesOf(hex));
  const tooMany = decodePayload("shmem_config", bytesOf(u32(257) + zeros(2052)));
  assert.equal(tooMany.issues[0].severity, "violation");
  const map = decodePayload(
    "shmem_map",
    bytesOf("01" + zeros(7) + u64(0) + u64(0x1000) + u64(0x2000) + u64(1)),
  );
  assert.deepEqual(payloadToJson(map.payload, { dialect: "upstream" }), {
    shmid: 1,
    fdOffset: "0x0",
    shmOffset: "0x1000",
    len: "0x2000",
    flags: "0x1",
  });
});

Deno.test("JSON view: uuid, mac, iotlb names, inflight counters", () => {
  const uuid = "0123456789abcdef0123456789abcdef";
  assert.deepEqual(
    payloadToJson(decodePayload("shared_object", bytesOf(uuid)).payload, { dialect: "upstream" }),
    {
      uuid: "01234567-89ab-cdef-0123-456789abcdef",
    },
  );
  assert.equal(uuidText(bytesOf(uuid)), "01234567-89ab-cdef-0123-456789abcdef");
  assert.deepEqual(
    payloadToJson(decodePayload("mac", bytesOf("5254001234560000")).payload, {
      dialect: "upstream",
    }),
    { mac: "52:54:00:12:34:56" },
  );
  assert.deepEqual(
    payloadToJson(
      decodePayload("iotlb", bytesOf(u64(0x1000) + u64(0x1000) + u64(0x7f00) + "0101" + zeros(6)))
        .payload,
      { dialect: "upstream" },
    ),
    {
      iova: "0x1000",
      size: "0x1000",
      uaddr: "0x7f00",
      perm: 1,
      permName: "RO",
      type: 1,
      typeName: "MISS",
    },
  );
  assert.deepEqual(
    payloadToJson(
      decodePayload("inflight", bytesOf(u64(0x2000) + u64(0) + "0200" + "8000" + zeros(4))).payload,
      {
        dialect: "upstream",
      },
    ),
    { mmapSize: "0x2000", mmapOffset: "0x0", numQueues: 2, queueSize: 128 },
  );
  const huge = payloadToJson(decodePayload("u64", bytesOf(u64(0xffffffffffffffffn))).payload, {
    dialect: "upstream",
  });
  assert.deepEqual(huge, { value: "18446744073709551615" });
});

Deno.test("sizeText prefers exact binary units", () => {
  assert.equal(sizeText(0x20000000n), "512MiB");
  assert.equal(sizeText(1n << 32n), "4GiB");
  assert.equal(sizeText(0x1000n), "4KiB");
  assert.equal(sizeText(0x1001n), "0x1001");
  assert.equal(sizeText(0n), "0x0");
});

Deno.test("feature describe helpers name bits per dialect", () => {
  assert.deepEqual(describeProtocolFeatures((1n << 17n) | (1n << 19n) | (1n << 40n)), [
    "XEN_MMAP",
    "DEVICE_STATE",
    "bit 40",
  ]);
  assert.deepEqual(describeProtocolFeatures((1n << 17n) | (1n << 19n), "rfc2023"), [
    "MIGRATORY_STATE",
    "bit 19",
  ]);
  assert.deepEqual(describeVirtioFeatures((1n << 34n) | 1n), ["bit 0", "VIRTIO_F_RING_PACKED"]);
  assert.equal(protocolFeatureBit("DEVICE_STATE", "rfc2023"), 17);
  assert.equal(protocolFeatureBit("SHARED_OBJECT", "rfc2023"), undefined);
  assert.equal(protocolFeatureMask("XEN_MMAP", "rfc2023"), 0n);
  assert.equal(hasProtocolFeature(1n << 17n, "XEN_MMAP", "upstream"), true);
  assert.equal(hasProtocolFeature(1n << 17n, "XEN_MMAP", "rfc2023"), false);
  assert.equal(hasProtocolFeature(1n << 17n, "DEVICE_STATE", "rfc2023"), true);
});
