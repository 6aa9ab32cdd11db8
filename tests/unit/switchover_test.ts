// The switch-over figure of the downtime bench (bench/lib/switchover.ts) on QEMU 10.0's own
// timestamped trace (tests/harness/vhost_user_trace.ts): the fixtures are the traces of one
// rotating proxy chain (bench `--sections downtime`, 2026-12-04), proxy-0 → proxy-1 → proxy-2,
// cut to the migrations. proxy-1 is first a destination, then a source.

import assert from "node:assert/strict";
import { longestRoundTrips, switchoverOf } from "../../bench/lib/switchover.ts";
import {
  parseTimedTrace,
  parseVhostUserTrace,
  vhostUserMessageOf,
} from "../harness/vhost_user_trace.ts";

Deno.test("a timestamped trace line: thread, wall clock in µs, event and its arguments", () => {
  const events = parseTimedTrace(PROXY_0);
  assert.deepEqual(events[0], {
    tid: 13766,
    us: 1796347587325622,
    event: "migrate_set_state",
    args: "new state setup",
  });
  const stop = events.find((e) => e.event === "vm_state_notify");
  assert.equal(stop?.args, "running 0 reason 7 (finish-migrate)");
  assert.deepEqual(vhostUserMessageOf(events[1]), {
    kind: "write",
    code: 6,
    name: "SET_LOG_BASE",
    flags: 0x1,
    tid: 14122,
    us: 1796347587326724,
  });
  assert.equal(vhostUserMessageOf(events[2])?.kind, "read");
  assert.equal(vhostUserMessageOf(events[0]), undefined);
});

Deno.test("a line without the timestamp prefix, or cut short, is skipped", () => {
  const text = "vhost_user_write req:1 flags:0x1\n14180@1796347591.7377\n" +
    "14180@1796347591.097074:loadvm_state_setup \n";
  assert.deepEqual(parseTimedTrace(text).map((e) => [e.event, e.args]), [
    ["loadvm_state_setup", ""],
  ]);
});

Deno.test("parseVhostUserTrace still reads the requests of a timestamped trace, writes only", () => {
  const requests = parseVhostUserTrace(PROXY_0);
  assert.deepEqual(requests.slice(0, 3).map((r) => r.name), [
    "SET_LOG_BASE",
    "SET_FEATURES",
    "SET_VRING_ADDR",
  ]);
  assert.equal(requests.length, 12);
});

Deno.test("switch-over proxy-0 → proxy-1: the round trips of the stopped window, both sides", () => {
  const s = switchoverOf(parseTimedTrace(PROXY_0), parseTimedTrace(PROXY_1));
  // Source: vm_state_notify running 0 (finish-migrate) → completed; the dirty-log set-up of
  // the migration's start (SET_LOG_BASE, SET_FEATURES, SET_VRING_ADDR) is outside it.
  assert.deepEqual(s.source.roundTrips.map((t) => [t.name, t.us]), [
    ["SET_VRING_ENABLE", 406],
    ["SET_VRING_ENABLE", 93],
    ["GET_VRING_BASE", 79],
    ["GET_VRING_BASE", 82],
    ["SET_DEVICE_STATE_FD", 870],
    ["CHECK_DEVICE_STATE", 215],
  ]);
  assert.equal(s.source.sumUs, 1745);
  assert.equal(s.source.oneWay, 2, "the two SET_VRING_CALLs count zero");
  assert.equal(s.source.streamUs, 3584, "QEMU reading the state to EOF");
  // Destination: loadvm_state_setup → completed, so the ring start after `running 1` is in.
  assert.deepEqual(s.destination.roundTrips.map((t) => [t.name, t.us]), [
    ["SET_DEVICE_STATE_FD", 1163],
    ["CHECK_DEVICE_STATE", 1715],
    ["ADD_MEM_REG", 1950],
    ["SET_VRING_ENABLE", 2109],
    ["SET_VRING_ENABLE", 76],
  ]);
  assert.equal(s.destination.sumUs, 7013);
  assert.equal(s.destination.oneWay, 13);
  assert.equal(s.destination.streamUs, 30);
  assert.equal(s.sumUs, 8758);
  assert.equal(s.windowUs, 1796347588918104 - 1796347588899109);
  assert.deepEqual([s.dominant?.side, s.dominant?.name, s.dominant?.us], [
    "destination",
    "SET_VRING_ENABLE",
    2109,
  ]);
  assert.deepEqual(longestRoundTrips(s, 2).map((t) => t.us), [2109, 1950]);
});

Deno.test("switch-over proxy-1 → proxy-2: a side that was a destination is judged on its last outgoing window", () => {
  const s = switchoverOf(parseTimedTrace(PROXY_1), parseTimedTrace(PROXY_2));
  assert.deepEqual(s.source.roundTrips.map((t) => t.us), [540, 139, 119, 104, 2847, 228]);
  assert.equal(s.source.sumUs, 3977);
  assert.equal(s.destination.sumUs, 632 + 1176 + 291 + 350 + 110);
  assert.equal(s.dominant?.name, "SET_DEVICE_STATE_FD");
  assert.equal(s.dominant?.side, "source");
});

Deno.test("a shutdown's stop is not a switch-over, and an unfinished window is an error", () => {
  // proxy-2 only stops for its shutdown (running 0, reason 11).
  assert.throws(
    () => switchoverOf(parseTimedTrace(PROXY_2), parseTimedTrace(PROXY_1)),
    /no source start/,
  );
  const unfinished = PROXY_2.slice(0, PROXY_2.indexOf("migrate_set_state new state completed"));
  assert.throws(
    () => switchoverOf(parseTimedTrace(PROXY_1), parseTimedTrace(unfinished)),
    /no final migration state/,
  );
});

// Real QEMU 10.0.2 output (`-msg timestamp=on`, SWITCHOVER_TRACE_EVENTS), cut to the migrations.
const PROXY_0 = `
13766@1796347587.325622:migrate_set_state new state setup
14122@1796347587.326724:vhost_user_write req:6 flags:0x1
14122@1796347587.326809:vhost_user_read req:6 flags:0x5
14122@1796347587.326820:vhost_user_write req:2 flags:0x9
14122@1796347587.329240:vhost_user_read req:2 flags:0x5
14122@1796347587.329260:vhost_user_write req:9 flags:0x9
14122@1796347587.329409:vhost_user_read req:9 flags:0x5
14122@1796347587.329412:vhost_user_write req:9 flags:0x9
14122@1796347587.329457:vhost_user_read req:9 flags:0x5
14122@1796347587.330304:migrate_set_state new state active
14122@1796347588.899109:vm_state_notify running 0 reason 7 (finish-migrate)
14122@1796347588.899144:vhost_user_write req:18 flags:0x9
14122@1796347588.899550:vhost_user_read req:18 flags:0x5
14122@1796347588.899584:vhost_user_write req:18 flags:0x9
14122@1796347588.899677:vhost_user_read req:18 flags:0x5
14122@1796347588.899686:vhost_user_write req:11 flags:0x1
14122@1796347588.899765:vhost_user_read req:11 flags:0x5
14122@1796347588.899788:vhost_user_write req:11 flags:0x1
14122@1796347588.899870:vhost_user_read req:11 flags:0x5
14122@1796347588.899948:vhost_user_write req:13 flags:0x1
14122@1796347588.899953:vhost_user_write req:13 flags:0x1
14122@1796347588.900219:migrate_set_state new state device
14122@1796347588.901541:vhost_user_write req:42 flags:0x1
14122@1796347588.902411:vhost_user_read req:42 flags:0x5
14122@1796347588.905995:vhost_user_write req:43 flags:0x1
14122@1796347588.906210:vhost_user_read req:43 flags:0x5
14122@1796347588.918190:migrate_set_state new state completed
`;
const PROXY_1 = `
14115@1796347587.322088:vhost_user_write req:34 flags:0x1
14115@1796347587.325225:migrate_set_state new state setup
14115@1796347587.326009:migrate_set_state new state active
14115@1796347587.326657:loadvm_state_setup 
14115@1796347588.910452:vhost_user_write req:42 flags:0x1
14115@1796347588.911615:vhost_user_read req:42 flags:0x5
14115@1796347588.911645:vhost_user_write req:43 flags:0x1
14115@1796347588.913360:vhost_user_read req:43 flags:0x5
14115@1796347588.913791:vm_state_notify running 1 reason 9 (running)
14115@1796347588.913822:vhost_user_write req:13 flags:0x1
14115@1796347588.913825:vhost_user_write req:13 flags:0x1
14115@1796347588.913829:vhost_user_write req:2 flags:0x1
14115@1796347588.913841:vhost_user_write req:37 flags:0x9
14115@1796347588.915791:vhost_user_read req:37 flags:0x5
14115@1796347588.915816:vhost_user_write req:8 flags:0x1
14115@1796347588.915818:vhost_user_write req:10 flags:0x1
14115@1796347588.915823:vhost_user_write req:9 flags:0x1
14115@1796347588.915826:vhost_user_write req:12 flags:0x1
14115@1796347588.915828:vhost_user_write req:8 flags:0x1
14115@1796347588.915830:vhost_user_write req:10 flags:0x1
14115@1796347588.915831:vhost_user_write req:9 flags:0x1
14115@1796347588.915832:vhost_user_write req:12 flags:0x1
14115@1796347588.915838:vhost_user_write req:18 flags:0x9
14115@1796347588.917947:vhost_user_read req:18 flags:0x5
14115@1796347588.917981:vhost_user_write req:18 flags:0x9
14115@1796347588.918057:vhost_user_read req:18 flags:0x5
14115@1796347588.918080:vhost_user_write req:13 flags:0x1
14115@1796347588.918082:vhost_user_write req:13 flags:0x1
14115@1796347588.918104:migrate_set_state new state completed
14115@1796347591.096382:migrate_set_state new state setup
14187@1796347591.096942:vhost_user_write req:6 flags:0x1
14187@1796347591.097520:vhost_user_read req:6 flags:0x5
14187@1796347591.097535:vhost_user_write req:2 flags:0x9
14187@1796347591.098488:vhost_user_read req:2 flags:0x5
14187@1796347591.098498:vhost_user_write req:9 flags:0x9
14187@1796347591.098669:vhost_user_read req:9 flags:0x5
14187@1796347591.098674:vhost_user_write req:9 flags:0x9
14187@1796347591.098777:vhost_user_read req:9 flags:0x5
14187@1796347591.099161:migrate_set_state new state active
14187@1796347591.726754:vm_state_notify running 0 reason 7 (finish-migrate)
14187@1796347591.726789:vhost_user_write req:18 flags:0x9
14187@1796347591.727329:vhost_user_read req:18 flags:0x5
14187@1796347591.727345:vhost_user_write req:18 flags:0x9
14187@1796347591.727484:vhost_user_read req:18 flags:0x5
14187@1796347591.727489:vhost_user_write req:11 flags:0x1
14187@1796347591.727608:vhost_user_read req:11 flags:0x5
14187@1796347591.727616:vhost_user_write req:11 flags:0x1
14187@1796347591.727720:vhost_user_read req:11 flags:0x5
14187@1796347591.727755:vhost_user_write req:13 flags:0x1
14187@1796347591.727758:vhost_user_write req:13 flags:0x1
14187@1796347591.727870:migrate_set_state new state device
14187@1796347591.729126:vhost_user_write req:42 flags:0x1
14187@1796347591.731973:vhost_user_read req:42 flags:0x5
14187@1796347591.732106:vhost_user_write req:43 flags:0x1
14187@1796347591.732334:vhost_user_read req:43 flags:0x5
14187@1796347591.741072:migrate_set_state new state completed
`;
const PROXY_2 = `
14180@1796347591.075849:vhost_user_write req:34 flags:0x1
14180@1796347591.095931:migrate_set_state new state setup
14180@1796347591.096731:migrate_set_state new state active
14180@1796347591.097074:loadvm_state_setup 
14180@1796347591.737772:vhost_user_write req:42 flags:0x1
14180@1796347591.738404:vhost_user_read req:42 flags:0x5
14180@1796347591.738416:vhost_user_write req:43 flags:0x1
14180@1796347591.739592:vhost_user_read req:43 flags:0x5
14180@1796347591.739763:vm_state_notify running 1 reason 9 (running)
14180@1796347591.739792:vhost_user_write req:13 flags:0x1
14180@1796347591.739796:vhost_user_write req:13 flags:0x1
14180@1796347591.739800:vhost_user_write req:2 flags:0x1
14180@1796347591.739850:vhost_user_write req:37 flags:0x9
14180@1796347591.740141:vhost_user_read req:37 flags:0x5
14180@1796347591.740165:vhost_user_write req:8 flags:0x1
14180@1796347591.740167:vhost_user_write req:10 flags:0x1
14180@1796347591.740171:vhost_user_write req:9 flags:0x1
14180@1796347591.740173:vhost_user_write req:12 flags:0x1
14180@1796347591.740175:vhost_user_write req:8 flags:0x1
14180@1796347591.740176:vhost_user_write req:10 flags:0x1
14180@1796347591.740178:vhost_user_write req:9 flags:0x1
14180@1796347591.740179:vhost_user_write req:12 flags:0x1
14180@1796347591.740182:vhost_user_write req:18 flags:0x9
14180@1796347591.740532:vhost_user_read req:18 flags:0x5
14180@1796347591.740537:vhost_user_write req:18 flags:0x9
14180@1796347591.740647:vhost_user_read req:18 flags:0x5
14180@1796347591.740666:vhost_user_write req:13 flags:0x1
14180@1796347591.740668:vhost_user_write req:13 flags:0x1
14180@1796347591.740687:migrate_set_state new state completed
14180@1796347594.788157:vm_state_notify running 0 reason 11 (shutdown)
14180@1796347594.788188:vhost_user_write req:18 flags:0x9
14180@1796347594.788574:vhost_user_read req:18 flags:0x5
`;
