import assert from "node:assert/strict";
import fc from "fast-check";
import {
  codeFor,
  lookupRequest,
  translateMessage,
  translateProtocolFeatures,
  translateRequestCode,
} from "./dialect.ts";
import { decodeMessage, encodeMessage, HEADER_SIZE, type Message, readHeader } from "./codec.ts";
import { REQUESTS } from "./catalogue.ts";
import { bytesOf, ctxOf, hdr, u64 } from "./_test_utils.ts";

const bit = (n: number) => 1n << BigInt(n);

Deno.test("lookupRequest and codeFor follow each dialect's numbering", () => {
  assert.equal(lookupRequest("main", 41, "upstream")?.name, "GET_SHARED_OBJECT");
  assert.equal(lookupRequest("main", 42, "upstream")?.name, "SET_DEVICE_STATE_FD");
  assert.equal(lookupRequest("main", 43, "upstream")?.name, "CHECK_DEVICE_STATE");
  assert.equal(lookupRequest("main", 41, "rfc2023")?.name, "SET_DEVICE_STATE_FD");
  assert.equal(lookupRequest("main", 42, "rfc2023")?.name, "CHECK_DEVICE_STATE");
  assert.equal(lookupRequest("main", 43, "rfc2023"), undefined);
  assert.equal(codeFor("main", "SET_DEVICE_STATE_FD", "upstream"), 42);
  assert.equal(codeFor("main", "SET_DEVICE_STATE_FD", "rfc2023"), 41);
  assert.equal(codeFor("main", "CHECK_DEVICE_STATE", "rfc2023"), 42);
  assert.equal(codeFor("main", "GET_SHARED_OBJECT", "rfc2023"), undefined);
  assert.equal(codeFor("backend", "BACKEND_IOTLB_MSG", "rfc2023"), 1);
  assert.equal(codeFor("main", "NO_SUCH_REQUEST", "upstream"), undefined);
});

Deno.test("translateRequestCode maps the device-state pair both ways", () => {
  assert.deepEqual(translateRequestCode("main", 42, "upstream", "rfc2023"), { ok: true, code: 41 });
  assert.deepEqual(translateRequestCode("main", 43, "upstream", "rfc2023"), { ok: true, code: 42 });
  assert.deepEqual(translateRequestCode("main", 41, "rfc2023", "upstream"), { ok: true, code: 42 });
  assert.deepEqual(translateRequestCode("main", 42, "rfc2023", "upstream"), { ok: true, code: 43 });
  for (let code = 0; code <= 40; code++) {
    assert.deepEqual(translateRequestCode("main", code, "upstream", "rfc2023"), { ok: true, code });
  }
  assert.deepEqual(translateRequestCode("main", 44, "upstream", "rfc2023"), { ok: true, code: 44 });
  assert.deepEqual(translateRequestCode("backend", 8, "upstream", "rfc2023"), {
    ok: true,
    code: 8,
  });
});

Deno.test("clash: upstream GET_SHARED_OBJECT has no rfc2023 code", () => {
  const r = translateRequestCode("main", 41, "upstream", "rfc2023");
  assert.ok(!r.ok);
  assert.equal(
    r.error,
    "Cannot translate GET_SHARED_OBJECT (41) from upstream to rfc2023: the request does not exist in rfc2023",
  );
  assert.deepEqual(r.details, {
    kind: "dialect",
    channel: "main",
    code: 41,
    request: "GET_SHARED_OBJECT",
    from: "upstream",
    to: "rfc2023",
    message: r.error,
  });
});

Deno.test("clash: an rfc2023-unknown 43 would mean CHECK_DEVICE_STATE upstream, so it is refused", () => {
  const r = translateRequestCode("main", 43, "rfc2023", "upstream");
  assert.ok(!r.ok);
  assert.equal(
    r.error,
    "Cannot translate UNKNOWN(43) (43) from rfc2023 to upstream: code 43 means CHECK_DEVICE_STATE in upstream",
  );
  // Codes unknown in both pass through: unknown requests are relayed verbatim.
  assert.deepEqual(translateRequestCode("main", 99, "rfc2023", "upstream"), { ok: true, code: 99 });
  assert.deepEqual(translateRequestCode("backend", 11, "upstream", "rfc2023"), {
    ok: true,
    code: 11,
  });
});

Deno.test("protocol features: bit 19 ↔ 17, XEN_MMAP and SHARED_OBJECT dropped going to rfc2023", () => {
  assert.deepEqual(translateProtocolFeatures(bit(19), "upstream", "rfc2023"), {
    bits: bit(17),
    dropped: [],
  });
  assert.deepEqual(translateProtocolFeatures(bit(17), "rfc2023", "upstream"), {
    bits: bit(19),
    dropped: [],
  });
  assert.deepEqual(translateProtocolFeatures(bit(17), "upstream", "rfc2023"), {
    bits: 0n,
    dropped: ["XEN_MMAP"],
  });
  assert.deepEqual(translateProtocolFeatures(bit(18) | bit(19) | bit(3), "upstream", "rfc2023"), {
    bits: bit(17) | bit(3),
    dropped: ["SHARED_OBJECT"],
  });
  // Bits 18/19 mean nothing in rfc2023 but something upstream: dropped, not reinterpreted.
  assert.deepEqual(translateProtocolFeatures(bit(18) | bit(19), "rfc2023", "upstream"), {
    bits: 0n,
    dropped: ["bit 18", "bit 19"],
  });
  // Bits unknown in both are kept.
  assert.deepEqual(translateProtocolFeatures(bit(40) | bit(0), "upstream", "rfc2023"), {
    bits: bit(40) | bit(0),
    dropped: [],
  });
  const virtiofsd = 0x8a42bn;
  assert.deepEqual(translateProtocolFeatures(virtiofsd, "upstream", "upstream"), {
    bits: virtiofsd,
    dropped: [],
  });
});

Deno.test("property: feature translation round-trips when nothing is dropped", () => {
  const clashUp = bit(17) | bit(18);
  const clashRfc = bit(18) | bit(19);
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (mask) => {
      const up = mask & ~clashUp;
      const there = translateProtocolFeatures(up, "upstream", "rfc2023");
      assert.deepEqual(there.dropped, []);
      assert.equal(translateProtocolFeatures(there.bits, "rfc2023", "upstream").bits, up);
      const rfc = mask & ~clashRfc;
      const back = translateProtocolFeatures(rfc, "rfc2023", "upstream");
      assert.deepEqual(back.dropped, []);
      assert.equal(translateProtocolFeatures(back.bits, "upstream", "rfc2023").bits, rfc);
      // Translation never invents bits: the population count never grows.
      const any = translateProtocolFeatures(mask, "upstream", "rfc2023");
      const count = (m: bigint) => m.toString(2).replaceAll("0", "").length;
      assert.equal(count(any.bits) + any.dropped.length, count(mask));
    }),
  );
});

Deno.test("translateMessage(bytes): SET_DEVICE_STATE_FD 42 → 41 keeps the payload", () => {
  const up = bytesOf("2a000000 01000000 08000000 00000000 00000000");
  const r = translateMessage(up, "upstream", "rfc2023");
  assert.ok(r.ok);
  assert.deepEqual(r.value, bytesOf("29000000 01000000 08000000 00000000 00000000"));
  assert.deepEqual(r.dropped, []);
  const back = translateMessage(r.value, "rfc2023", "upstream");
  assert.ok(back.ok);
  assert.deepEqual(back.value, up);
  // The input is not modified.
  assert.equal(up[0], 0x2a);
});

Deno.test("translateMessage(bytes): GET_PROTOCOL_FEATURES reply and SET_PROTOCOL_FEATURES rewrite bits", () => {
  const reply = bytesOf(hdr(15, 5, 8) + u64(bit(19) | bit(17) | bit(3)));
  const r = translateMessage(reply, "upstream", "rfc2023");
  assert.ok(r.ok);
  assert.deepEqual(r.value, bytesOf(hdr(15, 5, 8) + u64(bit(17) | bit(3))));
  assert.deepEqual(r.dropped, ["XEN_MMAP"]);
  const set = bytesOf(hdr(16, 1, 8) + u64(bit(17) | bit(0)));
  const s = translateMessage(set, "rfc2023", "upstream");
  assert.ok(s.ok);
  assert.deepEqual(s.value, bytesOf(hdr(16, 1, 8) + u64(bit(19) | bit(0))));
  // The SET_PROTOCOL_FEATURES ack is a result, not a mask: untouched.
  const ack = bytesOf(hdr(16, 5, 8) + u64(bit(17)));
  const a = translateMessage(ack, "rfc2023", "upstream");
  assert.ok(a.ok);
  assert.deepEqual(a.value, ack);
  // GET_PROTOCOL_FEATURES request has no payload.
  const get = translateMessage(bytesOf(hdr(15, 1, 0)), "upstream", "rfc2023");
  assert.ok(get.ok);
  assert.deepEqual(get.value, bytesOf(hdr(15, 1, 0)));
});

Deno.test("translateMessage(bytes): refusals and the back-end channel", () => {
  const shared = translateMessage(bytesOf(hdr(41, 1, 16) + "00".repeat(16)), "upstream", "rfc2023");
  assert.ok(!shared.ok);
  assert.match(shared.error, /GET_SHARED_OBJECT \(41\) from upstream to rfc2023/);
  const short = translateMessage(new Uint8Array(4), "upstream", "rfc2023");
  assert.ok(!short.ok);
  // On the back-end channel code 41 is unknown in both dialects.
  const backend = translateMessage(bytesOf(hdr(41, 1, 0)), "upstream", "rfc2023", "backend");
  assert.ok(backend.ok);
  assert.deepEqual(backend.value, bytesOf(hdr(41, 1, 0)));
});

function decoded(
  hex: string,
  sender: "front-end" | "back-end",
  dialect: "upstream" | "rfc2023",
): Message {
  const bytes = bytesOf(hex);
  const r = decodeMessage(
    readHeader(bytes),
    bytes.subarray(HEADER_SIZE),
    0,
    ctxOf(sender, { dialect }),
  );
  if (!r.ok) assert.fail(r.error.message);
  return r.message;
}

Deno.test("translateMessage(Message): code, dialect and feature mask, decodable on the other side", () => {
  const reply = decoded(hdr(15, 5, 8) + u64(bit(19) | bit(1)), "back-end", "upstream");
  const r = translateMessage(reply, "upstream", "rfc2023");
  assert.ok(r.ok);
  assert.equal(r.value.dialect, "rfc2023");
  assert.deepEqual(r.value.payload, { layout: "protocol_features", features: bit(17) | bit(1) });
  const bytes = encodeMessage(r.value);
  const again = decodeMessage(
    readHeader(bytes),
    bytes.subarray(HEADER_SIZE),
    0,
    ctxOf("back-end", {
      dialect: "rfc2023",
    }),
  );
  assert.ok(again.ok);
  assert.deepEqual(again.message.payload, r.value.payload);

  const check = decoded(hdr(42, 1, 0), "front-end", "rfc2023");
  assert.equal(check.name, "CHECK_DEVICE_STATE");
  const up = translateMessage(check, "rfc2023", "upstream");
  assert.ok(up.ok);
  assert.equal(up.value.code, 43);
  assert.deepEqual(encodeMessage(up.value), bytesOf(hdr(43, 1, 0)));

  const wrongFrom = translateMessage(check, "upstream", "rfc2023");
  assert.ok(!wrongFrom.ok);
  assert.match(wrongFrom.error, /decoded as rfc2023, not upstream/);
});

Deno.test("property: every request existing in both dialects translates there and back unchanged", () => {
  const both = REQUESTS.filter((r) => r.dialects?.rfc2023 !== null);
  fc.assert(
    fc.property(
      fc.constantFrom(...both),
      fc.boolean(),
      fc.uint8Array({ maxLength: 64 }),
      (spec, reply, payload) => {
        const bytes = new Uint8Array([
          ...bytesOf(hdr(spec.code, reply ? 5 : 1, payload.length)),
          ...payload,
        ]);
        const there = translateMessage(bytes, "upstream", "rfc2023", spec.channel);
        assert.ok(there.ok, spec.name);
        const back = translateMessage(there.value, "rfc2023", "upstream", spec.channel);
        assert.ok(back.ok);
        if (spec.name !== "GET_PROTOCOL_FEATURES" && spec.name !== "SET_PROTOCOL_FEATURES") {
          assert.deepEqual(back.value, bytes);
        } else if (there.dropped.length === 0) {
          assert.deepEqual(back.value, bytes);
        }
      },
    ),
  );
});
