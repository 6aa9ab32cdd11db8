import assert from "node:assert/strict";
import {
  codeIn,
  DIALECTS,
  findRequest,
  findRequestByName,
  type LayoutRef,
  REQUESTS,
  requestsOf,
} from "./catalogue.ts";
import { type LayoutName, LAYOUTS } from "./layouts.ts";
import { PROTOCOL_FEATURES, VIRTIO_FEATURES } from "./features.ts";
import { FIXTURES } from "./_test_utils.ts";
import { SPEC_BACKEND_NAMES, SPEC_FRONT_END_NAMES } from "../tests/support/spec_names.ts";

/** Front-end request names 1..44 and back-end request names 1..10, as the spec lists them. */
const MAIN_NAMES = SPEC_FRONT_END_NAMES.slice(1);
const BACKEND_NAMES = SPEC_BACKEND_NAMES.slice(1);

function layoutsOf(ref: LayoutRef): LayoutName[] {
  if (typeof ref === "string") return [ref];
  if ("byRing" in ref) return [ref.byRing.split, ref.byRing.packed];
  return [ref.byXen.plain, ref.byXen.xen];
}

Deno.test("catalogue has every upstream front-end request 1..45 with name and layouts", () => {
  MAIN_NAMES.forEach((name, i) => {
    const spec = findRequest("main", i + 1, "upstream");
    assert.ok(spec, `code ${i + 1}`);
    assert.equal(spec.name, name);
    assert.equal(spec.channel, "main");
    for (const l of [...layoutsOf(spec.request), ...layoutsOf(spec.reply)]) assert.ok(l in LAYOUTS);
    assert.ok(spec.summary.length > 0);
  });
  assert.equal(findRequest("main", 46), undefined);
});

Deno.test("catalogue has every back-end request 1..10 with name and layouts", () => {
  BACKEND_NAMES.forEach((name, i) => {
    const spec = findRequest("backend", i + 1, "upstream");
    assert.ok(spec, `code ${i + 1}`);
    assert.equal(spec.name, name);
    for (const l of [...layoutsOf(spec.request), ...layoutsOf(spec.reply)]) assert.ok(l in LAYOUTS);
  });
  assert.equal(findRequest("backend", 11), undefined);
  assert.equal(findRequest("backend", 0), undefined);
});

Deno.test("code 0 is the postcopy acknowledgement QEMU sends after an empty ADD/REM batch", () => {
  const none = findRequest("main", 0);
  assert.equal(none?.name, "NONE");
  assert.equal(none?.request, "postcopy_ack");
  assert.equal(none?.replies, "never");
});

Deno.test("rows are well-formed: names, fd rules, reply layouts", () => {
  for (const spec of REQUESTS) {
    assert.doesNotMatch(spec.name, /^VHOST_USER_/);
    assert.match(spec.name, /^[A-Z0-9_]+$/);
    for (const rule of [spec.fds, spec.replyFds]) {
      assert.ok(rule.min >= 0 && rule.min <= rule.max && rule.max <= 8, spec.name);
    }
    if (spec.replies !== "always") {
      // Acks are u64 results; postcopy region replies are described separately.
      assert.equal(spec.reply, "result", spec.name);
    }
    if (spec.channel === "backend") assert.match(spec.name, /^BACKEND_/);
    assert.equal(findRequestByName(spec.channel, spec.name), spec);
  }
  const names = REQUESTS.map((r) => `${r.channel}:${r.name}`);
  assert.equal(new Set(names).size, names.length);
});

Deno.test("rows carry the spec's special cases", () => {
  const get = (name: string) => findRequestByName("main", name)!;
  assert.equal(get("SET_LOG_BASE").alwaysWith, "LOG_SHMFD");
  assert.deepEqual(get("GET_INFLIGHT_FD").replyFds, { min: 0, max: 1, from: "mmap_size" });
  assert.deepEqual(get("SET_DEVICE_STATE_FD").replyFds, { min: 0, max: 1, from: "nofd" });
  assert.deepEqual(get("SET_DEVICE_STATE_FD").fds, { min: 1, max: 1 });
  assert.deepEqual(get("SET_MEM_TABLE").fds, { min: 1, max: 8, from: "regions" });
  for (const name of ["SET_MEM_TABLE", "ADD_MEM_REG", "REM_MEM_REG", "NONE"]) {
    assert.equal(get(name).postcopy?.ack, true, name);
  }
  assert.ok(get("SET_MEM_TABLE").postcopy?.reply);
  assert.ok(get("ADD_MEM_REG").postcopy?.reply);
  assert.equal(get("REM_MEM_REG").postcopy?.reply, undefined);
  for (const name of ["SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR"]) {
    assert.equal(get(name).fds.from, "nofd");
  }
  assert.equal(findRequestByName("backend", "BACKEND_VRING_HOST_NOTIFIER_MSG")?.fds.from, "nofd");
  assert.deepEqual(get("GET_VRING_BASE").reply, {
    byRing: { split: "vring_state", packed: "vring_base_packed" },
  });
  for (
    const name of [
      "GET_FEATURES",
      "GET_PROTOCOL_FEATURES",
      "GET_VRING_BASE",
      "GET_CONFIG",
      "GET_INFLIGHT_FD",
      "SET_DEVICE_STATE_FD",
      "CHECK_DEVICE_STATE",
      "POSTCOPY_ADVISE",
    ]
  ) {
    assert.equal(get(name).replies, "always", name);
  }
  assert.equal(get("SET_DEVICE_STATE_FD").gate?.protocol, "DEVICE_STATE");
});

Deno.test("dialects: rfc2023 numbers the device-state pair 41/42 and lacks GET_SHARED_OBJECT", () => {
  assert.deepEqual(DIALECTS, ["upstream", "rfc2023"]);
  assert.equal(findRequest("main", 41, "rfc2023")?.name, "SET_DEVICE_STATE_FD");
  assert.equal(findRequest("main", 42, "rfc2023")?.name, "CHECK_DEVICE_STATE");
  assert.equal(findRequest("main", 43, "rfc2023"), undefined);
  assert.equal(codeIn(findRequestByName("main", "GET_SHARED_OBJECT")!, "rfc2023"), undefined);
  // Everything else keeps its number.
  for (const spec of REQUESTS) {
    if (["GET_SHARED_OBJECT", "SET_DEVICE_STATE_FD", "CHECK_DEVICE_STATE"].includes(spec.name)) {
      continue;
    }
    assert.equal(codeIn(spec, "rfc2023"), spec.code, spec.name);
  }
});

Deno.test("protocol feature bits 0..23 by name (spec §1.3.2, newest text §1.10)", () => {
  assert.deepEqual(PROTOCOL_FEATURES.map((f) => [f.bit, f.name]), [
    [0, "MQ"],
    [1, "LOG_SHMFD"],
    [2, "RARP"],
    [3, "REPLY_ACK"],
    [4, "MTU"],
    [5, "BACKEND_REQ"],
    [6, "CROSS_ENDIAN"],
    [7, "CRYPTO_SESSION"],
    [8, "PAGEFAULT"],
    [9, "CONFIG"],
    [10, "BACKEND_SEND_FD"],
    [11, "HOST_NOTIFIER"],
    [12, "INFLIGHT_SHMFD"],
    [13, "RESET_DEVICE"],
    [14, "INBAND_NOTIFICATIONS"],
    [15, "CONFIGURE_MEM_SLOTS"],
    [16, "STATUS"],
    [17, "XEN_MMAP"],
    [18, "SHARED_OBJECT"],
    [19, "DEVICE_STATE"],
    [20, "GET_VRING_BASE_INFLIGHT"],
    [21, "GPA_ADDRESSES"],
    [22, "SHMEM"],
    [23, "GET_VRING_BASE_SKIP_DRAIN"],
  ]);
});

Deno.test("virtio feature bits that matter (spec §1.3.1)", () => {
  const byName = new Map<string, number>(VIRTIO_FEATURES.map((f) => [f.name, f.bit]));
  assert.equal(byName.get("VHOST_F_LOG_ALL"), 26);
  assert.equal(byName.get("VHOST_USER_F_PROTOCOL_FEATURES"), 30);
  assert.equal(byName.get("VIRTIO_F_VERSION_1"), 32);
  assert.equal(byName.get("VIRTIO_F_ACCESS_PLATFORM"), 33);
  assert.equal(byName.get("VIRTIO_F_RING_PACKED"), 34);
  assert.equal(byName.get("VIRTIO_RING_F_EVENT_IDX"), 29);
});

Deno.test("fixtures cover every catalogue row and every layout", () => {
  const rows = new Set(FIXTURES.map((f) => `${f.channel ?? "main"}:${f.name}`));
  for (const spec of REQUESTS) assert.ok(rows.has(`${spec.channel}:${spec.name}`), spec.name);
  const layouts = new Set(FIXTURES.map((f) => f.layout));
  for (const name of Object.keys(LAYOUTS)) assert.ok(layouts.has(name as LayoutName), name);
  for (const spec of requestsOf("main")) {
    if (spec.replies === "always") {
      assert.ok(
        FIXTURES.some((f) => f.name === spec.name && f.sender === "back-end"),
        `${spec.name} reply fixture`,
      );
    }
  }
});
