/**
 * The conformance lint over scripted conversations: every rule of the table fires once on a
 * peer that breaks it and stays quiet on one that does not. The records are made the way the
 * proxy makes them (the codec's `createMessage` + `messageToJson`), so the rules see the
 * payload shapes of real logs.
 */

import assert from "node:assert/strict";
import {
  type Channel,
  createMessage,
  messageToJson,
  summarizeMessage,
} from "../../protocol/codec.ts";
import type { Payload } from "../../protocol/layouts.ts";
import type { LogRecord, MessageRecord, SenderSide } from "../../log/record.ts";
import type { LintFindingRecord, LintRecord, LintVerdictRecord } from "../../log/lint_record.ts";
import { formatLintRecord } from "../../log/lint_record.ts";
import { LintEngine, lintLog, lintRuleTable, lintSink } from "../../log/lint.ts";
import { LINT_RULES } from "../../log/lint_rules.ts";
import { formatRecord } from "../../log/format.ts";
import { parseLog, problemOf } from "../../log/tools.ts";

// ---- a scripted conversation ---------------------------------------------------------------

const VIRTIO_OFFER = 0x174000000n; // LOG_ALL|INDIRECT_DESC|EVENT_IDX|PROTOCOL_FEATURES|VERSION_1
const P = {
  MQ: 1n << 0n,
  LOG_SHMFD: 1n << 1n,
  REPLY_ACK: 1n << 3n,
  BACKEND_REQ: 1n << 5n,
  PAGEFAULT: 1n << 8n,
  BACKEND_SEND_FD: 1n << 10n,
  HOST_NOTIFIER: 1n << 11n,
  INFLIGHT_SHMFD: 1n << 12n,
  INBAND: 1n << 14n,
  CONFIGURE_MEM_SLOTS: 1n << 15n,
  STATUS: 1n << 16n,
  DEVICE_STATE: 1n << 19n,
  INFLIGHT: 1n << 20n,
  SKIP_DRAIN: 1n << 23n,
};
/** What virtiofsd 1.13 offers: MQ|LOG_SHMFD|REPLY_ACK|BACKEND_REQ|BACKEND_SEND_FD|
 * RESET_DEVICE|CONFIGURE_MEM_SLOTS|DEVICE_STATE. */
const VIRTIOFSD = 0x8a42bn;

interface Opts {
  needReply?: boolean;
  fds?: number;
  action?: string;
  injected?: boolean;
}

/** Builds a log the way the proxy writes one, a millisecond per record. */
class Script {
  readonly records: LogRecord[] = [];
  #t = Date.parse("2026-12-03T12:00:00.000Z");
  readonly session = 1;

  ts(): string {
    return new Date(this.#t++).toISOString();
  }

  start(): this {
    this.records.push({
      type: "session-start",
      ts: this.ts(),
      session: this.session,
      frontEnd: null,
      backend: "/run/back.sock",
    });
    return this;
  }

  msg(
    channel: Channel,
    sender: SenderSide,
    name: string,
    payload: Record<string, unknown> = { layout: "empty" },
    o: Opts = {},
  ): this {
    const kind = sender === (channel === "main" ? "front-end" : "back-end") ? "request" : "reply";
    const m = createMessage({
      channel,
      sender,
      request: name,
      payload: payload as unknown as Payload,
      needReply: o.needReply,
      fdCount: o.fds ?? 0,
    });
    const j = messageToJson(m);
    const flags = m.header.flags;
    const record: MessageRecord = {
      type: "message",
      ts: this.ts(),
      session: this.session,
      channel,
      from: sender,
      direction: sender === "front-end" ? "front-end → back-end" : "back-end → front-end",
      kind,
      code: m.code,
      name: m.name,
      flags: `0x${flags.toString(16)}`,
      flagNames: [...(flags & 4 ? ["REPLY"] : []), ...(flags & 8 ? ["NEED_REPLY"] : [])],
      size: m.header.size,
      layout: m.payload.layout,
      payload: j.payload as Record<string, unknown>,
      summary: summarizeMessage(m),
      fds: Array.from({ length: o.fds ?? 0 }, () => ({ kind: "eventfd" })),
    };
    if (o.action) record.action = o.action;
    if (o.injected) record.injected = true;
    this.records.push(record);
    return this;
  }

  /** A front-end request on the main channel. */
  front(name: string, payload?: Record<string, unknown>, o?: Opts): this {
    return this.msg("main", "front-end", name, payload, o);
  }

  /** The back-end's reply on the main channel. */
  back(name: string, payload: Record<string, unknown> = RESULT_OK, o?: Opts): this {
    return this.msg("main", "back-end", name, payload, o);
  }

  /** GET_FEATURES, GET/SET_PROTOCOL_FEATURES and SET_OWNER as QEMU sends them. */
  negotiate(protocol = VIRTIOFSD, virtio = VIRTIO_OFFER, set = protocol): this {
    return this.front("GET_FEATURES")
      .back("GET_FEATURES", { layout: "virtio_features", features: virtio })
      .front("GET_PROTOCOL_FEATURES")
      .back("GET_PROTOCOL_FEATURES", { layout: "protocol_features", features: protocol })
      .front("SET_PROTOCOL_FEATURES", { layout: "protocol_features", features: set })
      .front("SET_OWNER");
  }

  device(event: Record<string, unknown>): this {
    this.records.push(
      { type: "device-state", ts: this.ts(), session: this.session, ...event } as LogRecord,
    );
    return this;
  }

  end(closedBy: SenderSide | "proxy" = "front-end"): this {
    this.records.push({
      type: "session-end",
      ts: this.ts(),
      session: this.session,
      reason: `${closedBy} closed the main channel`,
      closedBy,
      inFlight: [],
      summary: {
        durationMs: 1,
        messages: 0,
        bytes: 0,
        fdsRelayed: 0,
        byName: {},
        errors: 0,
        warnings: 0,
      },
    });
    return this;
  }
}

const RESULT_OK = { layout: "result", value: 0n };
const ring = (index: number, num = 0) => ({ layout: "vring_state", index, num });
const file = (index: number, noFd = false) => ({ layout: "vring_file", index, noFd, reserved: 0n });
const region = (gpa: bigint, size: bigint, uaddr: bigint) => ({
  guestPhysAddr: gpa,
  memorySize: size,
  userspaceAddr: uaddr,
  mmapOffset: 0n,
});
const SAVE = { layout: "device_state_params", direction: 0, phase: 0 };
const STATE_OK = { layout: "device_state_result", error: 0, noFd: true, reserved: 0n };

function findings(s: Script): LintFindingRecord[] {
  return lintLog(s.records).sessions.flatMap((x) => x.findings);
}

function rulesFired(s: Script): string[] {
  return [...new Set(findings(s).map((f) => `${f.rule} ${f.peer}`))].sort();
}

// ---- every rule: once where it fires, once where it stays quiet ----------------------------

interface RuleCase {
  /** A conversation breaking the rule, and the `rule peer` findings it must give (default:
   * the rule, once, against its peer). */
  fires: () => Script;
  expect?: string[];
  /** The same conversation done right: no finding of the rule (and no other, unless
   * `quietExpect` names the ones the conversation must still give). */
  quiet: () => Script;
  quietExpect?: string[];
}

const CASES: Record<string, RuleCase[]> = {
  "reply-missing": [{
    fires: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0)).front("GET_FEATURES")
        .back("GET_FEATURES", { layout: "virtio_features", features: VIRTIO_OFFER }).end(),
    expect: ["reply-missing back-end"],
    quiet: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0))
        .back("GET_VRING_BASE", ring(0, 7)).front("GET_FEATURES")
        .back("GET_FEATURES", { layout: "virtio_features", features: VIRTIO_OFFER }).end(),
  }, {
    // The back-end closes the connection with GET_VRING_BASE unanswered.
    fires: () => new Script().start().negotiate().front("GET_VRING_BASE", ring(1)).end("back-end"),
    expect: ["reply-missing back-end"],
    // The front-end closing first says nothing about a reply that might have come.
    quiet: () => new Script().start().negotiate().front("GET_VRING_BASE", ring(1)).end("front-end"),
  }],
  "ack-missing": [{
    fires: () =>
      new Script().start().negotiate().front("SET_VRING_NUM", ring(0, 256), { needReply: true })
        .front("GET_QUEUE_NUM").back("GET_QUEUE_NUM", { layout: "u64", value: 2n }).end(),
    expect: ["ack-missing back-end"],
    quiet: () =>
      new Script().start().negotiate().front("SET_VRING_NUM", ring(0, 256), { needReply: true })
        .back("SET_VRING_NUM").front("GET_QUEUE_NUM")
        .back("GET_QUEUE_NUM", { layout: "u64", value: 2n }).end(),
  }],
  "reply-unasked": [{
    // An ack to a request without NEED_REPLY.
    fires: () =>
      new Script().start().negotiate().front("SET_VRING_NUM", ring(0, 256))
        .back("SET_VRING_NUM").end(),
    expect: ["reply-unasked back-end"],
    quiet: () =>
      new Script().start().negotiate().front("SET_VRING_NUM", ring(0, 256), { needReply: true })
        .back("SET_VRING_NUM").end(),
  }, {
    // A second reply (an ack besides the body) to GET_VRING_BASE.
    fires: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0), { needReply: true })
        .back("GET_VRING_BASE", ring(0, 3)).back("GET_VRING_BASE", ring(0, 0)).end(),
    expect: ["reply-unasked back-end"],
    quiet: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0), { needReply: true })
        .back("GET_VRING_BASE", ring(0, 3)).end(),
  }],
  "need-reply-without-reply-ack": [{
    fires: () =>
      new Script().start().negotiate(P.MQ).front("SET_VRING_NUM", ring(0, 256), {
        needReply: true,
      }).end(),
    quiet: () =>
      new Script().start().negotiate(P.MQ | P.REPLY_ACK).front("SET_VRING_NUM", ring(0, 256), {
        needReply: true,
      }).back("SET_VRING_NUM").end(),
  }],
  "protocol-features-unoffered": [{
    fires: () => new Script().start().negotiate(VIRTIOFSD, 0x100000000n).end(),
    expect: ["protocol-features-unoffered front-end"],
    quiet: () => new Script().start().negotiate(VIRTIOFSD, VIRTIO_OFFER).end(),
  }, {
    // GET_PROTOCOL_FEATURES without any GET_FEATURES (cloud-hypervisor's restore path).
    fires: () =>
      new Script().start().front("GET_PROTOCOL_FEATURES")
        .back("GET_PROTOCOL_FEATURES", { layout: "protocol_features", features: VIRTIOFSD }).end(),
    quiet: () =>
      new Script().start().front("GET_FEATURES")
        .back("GET_FEATURES", { layout: "virtio_features", features: VIRTIO_OFFER })
        .front("GET_PROTOCOL_FEATURES")
        .back("GET_PROTOCOL_FEATURES", { layout: "protocol_features", features: VIRTIOFSD }).end(),
  }],
  "features-not-offered": [{
    // VIRTIO_F_ACCESS_PLATFORM (bit 33) set, never offered.
    fires: () =>
      new Script().start().negotiate()
        .front("SET_FEATURES", { layout: "virtio_features", features: 0x340000000n }).end(),
    quiet: () =>
      new Script().start().negotiate()
        .front("SET_FEATURES", { layout: "virtio_features", features: 0x140000000n }).end(),
  }, {
    // SET_PROTOCOL_FEATURES with STATUS, which the back-end did not offer.
    fires: () =>
      new Script().start().negotiate(VIRTIOFSD, VIRTIO_OFFER, VIRTIOFSD | P.STATUS).end(),
    quiet: () => new Script().start().negotiate(VIRTIOFSD, VIRTIO_OFFER, VIRTIOFSD & ~P.MQ).end(),
  }, {
    // --device-state emulate: the proxy added DEVICE_STATE to the offer the front-end saw.
    fires: () =>
      new Script().start().front("GET_FEATURES")
        .back("GET_FEATURES", { layout: "virtio_features", features: VIRTIO_OFFER })
        .front("GET_PROTOCOL_FEATURES")
        .back("GET_PROTOCOL_FEATURES", { layout: "protocol_features", features: P.REPLY_ACK })
        .front("SET_PROTOCOL_FEATURES", {
          layout: "protocol_features",
          features: P.REPLY_ACK | P.DEVICE_STATE,
        }).end(),
    quiet: () =>
      new Script().start().front("GET_FEATURES")
        .back("GET_FEATURES", { layout: "virtio_features", features: VIRTIO_OFFER })
        .front("GET_PROTOCOL_FEATURES")
        .back("GET_PROTOCOL_FEATURES", { layout: "protocol_features", features: P.REPLY_ACK }, {
          action: "added F_DEVICE_STATE (emulated by the proxy)",
        })
        .front("SET_PROTOCOL_FEATURES", {
          layout: "protocol_features",
          features: P.REPLY_ACK | P.DEVICE_STATE,
        }, { action: "removed F_DEVICE_STATE (the proxy emulates it)" }).end(),
  }],
  "request-not-negotiated": [{
    // SET_STATUS needs F_STATUS.
    fires: () =>
      new Script().start().negotiate().front("SET_STATUS", { layout: "status", status: 1n }).end(),
    quiet: () =>
      new Script().start().negotiate(VIRTIOFSD | P.STATUS)
        .front("SET_STATUS", { layout: "status", status: 1n }).end(),
  }, {
    // SET_VRING_ENABLE needs VHOST_USER_F_PROTOCOL_FEATURES in SET_FEATURES.
    fires: () =>
      new Script().start().negotiate()
        .front("SET_FEATURES", { layout: "virtio_features", features: 0x100000000n })
        .front("SET_VRING_ENABLE", ring(0, 1)).end(),
    quiet: () =>
      new Script().start().negotiate()
        .front("SET_FEATURES", { layout: "virtio_features", features: 0x140000000n })
        .front("SET_VRING_ENABLE", ring(0, 1)).end(),
  }],
  "inband-needs-backend-req-reply-ack": [{
    fires: () => new Script().start().negotiate(P.INBAND | P.BACKEND_REQ).end("back-end"),
    quiet: () => new Script().start().negotiate(P.INBAND | P.BACKEND_REQ | P.REPLY_ACK).end(),
  }],
  "inband-not-closed": [{
    // The back-end answers the next request instead of closing.
    fires: () =>
      new Script().start().negotiate(P.INBAND | P.MQ).front("GET_QUEUE_NUM")
        .back("GET_QUEUE_NUM", { layout: "u64", value: 1n }).end(),
    expect: ["inband-needs-backend-req-reply-ack front-end", "inband-not-closed back-end"],
    quiet: () => new Script().start().negotiate(P.INBAND | P.MQ).end("back-end"),
    quietExpect: ["inband-needs-backend-req-reply-ack front-end"],
  }],
  "skip-drain-needs-inflight": [{
    // Offered by the back-end and set by the front-end without bits 20 and 12: both broke it.
    fires: () => new Script().start().negotiate(P.REPLY_ACK | P.SKIP_DRAIN).end(),
    expect: ["skip-drain-needs-inflight back-end", "skip-drain-needs-inflight front-end"],
    quiet: () =>
      new Script().start().negotiate(P.REPLY_ACK | P.SKIP_DRAIN | P.INFLIGHT | P.INFLIGHT_SHMFD)
        .end(),
  }],
  "postcopy-after-mem-slots": [{
    fires: () =>
      new Script().start().negotiate(P.PAGEFAULT | P.CONFIGURE_MEM_SLOTS | P.REPLY_ACK)
        .front("POSTCOPY_ADVISE").back("POSTCOPY_ADVISE", { layout: "empty" }, { fds: 1 }).end(),
    quiet: () =>
      new Script().start().negotiate(P.PAGEFAULT | P.REPLY_ACK).front("POSTCOPY_ADVISE")
        .back("POSTCOPY_ADVISE", { layout: "empty" }, { fds: 1 }).end(),
  }],
  "num-reserved": [{
    // DPDK 22.11 virtio-user: the second GET_VRING_BASE carries the first reply's num.
    fires: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0))
        .back("GET_VRING_BASE", ring(0, 8096)).front("GET_VRING_BASE", ring(1, 8096))
        .back("GET_VRING_BASE", ring(1, 8096)).end(),
    quiet: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0))
        .back("GET_VRING_BASE", ring(0, 8096)).front("GET_VRING_BASE", ring(1, 0))
        .back("GET_VRING_BASE", ring(1, 8096)).end(),
  }, {
    fires: () =>
      new Script().start().negotiate(P.INBAND | P.BACKEND_REQ | P.REPLY_ACK)
        .front("VRING_KICK", ring(0, 5)).end(),
    quiet: () =>
      new Script().start().negotiate(P.INBAND | P.BACKEND_REQ | P.REPLY_ACK)
        .front("VRING_KICK", ring(0, 0)).end(),
  }],
  "vring-base-reserved-bits": [{
    fires: () => new Script().start().negotiate().front("SET_VRING_BASE", ring(0, 0x10005)).end(),
    quiet: () => new Script().start().negotiate().front("SET_VRING_BASE", ring(0, 0xffff)).end(),
  }, {
    // The back-end's GET_VRING_BASE reply for a split ring.
    fires: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0))
        .back("GET_VRING_BASE", ring(0, 0x20001)).end(),
    expect: ["vring-base-reserved-bits back-end"],
    quiet: () =>
      new Script().start().negotiate().front("GET_VRING_BASE", ring(0))
        .back("GET_VRING_BASE", ring(0, 1)).end(),
  }],
  "memory-regions-overlap": [{
    fires: () =>
      new Script().start().negotiate(P.REPLY_ACK).front("SET_MEM_TABLE", {
        layout: "memory_table",
        padding: 0,
        regions: [
          region(0n, 0x100000n, 0x7f0000000000n),
          region(0x80000n, 0x100000n, 0x7f1000000000n),
        ],
      }, { fds: 2 }).end(),
    quiet: () =>
      new Script().start().negotiate(P.REPLY_ACK).front("SET_MEM_TABLE", {
        layout: "memory_table",
        padding: 0,
        regions: [
          region(0n, 0x100000n, 0x7f0000000000n),
          region(0x100000n, 0x100000n, 0x7f1000000000n),
        ],
      }, { fds: 2 }).end(),
  }, {
    // ADD_MEM_REG whose user range overlaps a region already in the table.
    fires: () =>
      new Script().start().negotiate().front("ADD_MEM_REG", {
        layout: "mem_region",
        padding: 0n,
        ...region(0n, 0x100000n, 0x7f0000000000n),
      }, { fds: 1 }).front("ADD_MEM_REG", {
        layout: "mem_region",
        padding: 0n,
        ...region(0x200000n, 0x100000n, 0x7f00000ff000n),
      }, { fds: 1 }).end(),
    quiet: () =>
      new Script().start().negotiate().front("ADD_MEM_REG", {
        layout: "mem_region",
        padding: 0n,
        ...region(0n, 0x100000n, 0x7f0000000000n),
      }, { fds: 1 }).front("REM_MEM_REG", {
        layout: "mem_region",
        padding: 0n,
        ...region(0n, 0x100000n, 0x7f0000000000n),
      }).front("ADD_MEM_REG", {
        layout: "mem_region",
        padding: 0n,
        ...region(0x200000n, 0x100000n, 0x7f00000ff000n),
      }, { fds: 1 }).end(),
  }],
  "backend-fd-without-send-fd": [{
    fires: () =>
      new Script().start().negotiate(P.BACKEND_REQ | P.REPLY_ACK | P.HOST_NOTIFIER)
        .msg("backend", "back-end", "BACKEND_VRING_HOST_NOTIFIER_MSG", {
          layout: "vring_area",
          index: 0,
          noFd: false,
          reserved: 0n,
          size: 0x1000n,
          offset: 0n,
        }, { fds: 1 }).end(),
    quiet: () =>
      new Script().start().negotiate(
        P.BACKEND_REQ | P.REPLY_ACK | P.HOST_NOTIFIER | P.BACKEND_SEND_FD,
      ).msg("backend", "back-end", "BACKEND_VRING_HOST_NOTIFIER_MSG", {
        layout: "vring_area",
        index: 0,
        noFd: false,
        reserved: 0n,
        size: 0x1000n,
        offset: 0n,
      }, { fds: 1 }).end(),
  }],
  "device-state-not-negotiated": [{
    fires: () =>
      new Script().start().negotiate(VIRTIOFSD & ~P.DEVICE_STATE)
        .front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 }).back("SET_DEVICE_STATE_FD", STATE_OK)
        .end(),
    quiet: () =>
      new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 })
        .back("SET_DEVICE_STATE_FD", STATE_OK).end(),
  }],
  "device-state-rings-running": [{
    fires: () =>
      new Script().start().negotiate().front("SET_VRING_KICK", file(1), { fds: 1 })
        .front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 }).back("SET_DEVICE_STATE_FD", STATE_OK)
        .end(),
    quiet: () =>
      new Script().start().negotiate().front("SET_VRING_KICK", file(1), { fds: 1 })
        .front("GET_VRING_BASE", ring(1)).back("GET_VRING_BASE", ring(1, 93))
        .front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 }).back("SET_DEVICE_STATE_FD", STATE_OK)
        .end(),
  }],
  "check-before-transfer-end": [{
    fires: () =>
      new Script().start().negotiate().front("CHECK_DEVICE_STATE")
        .back("CHECK_DEVICE_STATE", { layout: "result", value: 1n }).end(),
    quiet: () =>
      new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 })
        .back("SET_DEVICE_STATE_FD", STATE_OK).front("CHECK_DEVICE_STATE")
        .back("CHECK_DEVICE_STATE").end(),
  }, {
    // SAVE through the proxy: CHECK came before the stream's end of file (the transfer-end
    // record, stamped at the copy's end, is written after the CHECK exchange).
    fires: () => {
      const s = new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 })
        .device({ event: "transfer-start", direction: "SAVE", phase: 0 })
        .back("SET_DEVICE_STATE_FD", STATE_OK).front("CHECK_DEVICE_STATE")
        .back("CHECK_DEVICE_STATE");
      return s.device({ event: "transfer-end", direction: "SAVE", ok: true }).end();
    },
    quiet: () => {
      const s = new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 })
        .device({ event: "transfer-start", direction: "SAVE", phase: 0 })
        .back("SET_DEVICE_STATE_FD", STATE_OK);
      const endTs = s.ts();
      s.front("CHECK_DEVICE_STATE").back("CHECK_DEVICE_STATE");
      s.records.push({
        type: "device-state",
        event: "transfer-end",
        ts: endTs,
        session: 1,
        direction: "SAVE",
        ok: true,
      } as LogRecord);
      return s.end();
    },
  }],
  "device-state-error-with-fd": [{
    fires: () =>
      new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 })
        .back("SET_DEVICE_STATE_FD", { ...STATE_OK, error: 1, noFd: false }, { fds: 1 }).end(),
    quiet: () =>
      new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 })
        .back("SET_DEVICE_STATE_FD", { ...STATE_OK, error: 1, noFd: true }).end(),
  }, {
    // The proxy refused such a reply (its codec checks the same sentence): an error record.
    fires: () => {
      const s = new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 });
      s.records.push({
        type: "error",
        ts: s.ts(),
        session: 1,
        channel: "main",
        side: "back-end",
        request: "SET_DEVICE_STATE_FD",
        field: "error",
        message: "Cannot relay SET_DEVICE_STATE_FD from back-end on the main channel: …",
      });
      return s.end("proxy");
    },
    quiet: () => {
      const s = new Script().start().negotiate().front("SET_DEVICE_STATE_FD", SAVE, { fds: 1 });
      s.records.push({
        type: "error",
        ts: s.ts(),
        session: 1,
        channel: "main",
        side: "back-end",
        request: "SET_DEVICE_STATE_FD",
        field: "size",
        message: "Cannot relay SET_DEVICE_STATE_FD from back-end on the main channel: size",
      });
      return s.end("proxy");
    },
  }],
};

for (const rule of LINT_RULES) {
  for (const [i, c] of (CASES[rule.id] ?? []).entries()) {
    const n = (CASES[rule.id]?.length ?? 0) > 1 ? ` (case ${i + 1})` : "";
    Deno.test(`lint ${rule.id}: fires on a peer that breaks it${n}`, () => {
      const expected = c.expect ??
        [`${rule.id} ${rule.peer === "both" ? "front-end" : rule.peer}`];
      assert.deepEqual(rulesFired(c.fires()), [...expected].sort());
    });
    Deno.test(`lint ${rule.id}: stays quiet on a peer that keeps it${n}`, () => {
      const fired = rulesFired(c.quiet());
      assert.ok(!fired.some((f) => f.startsWith(`${rule.id} `)), fired.join(", "));
      assert.deepEqual(fired, c.quietExpect ?? []);
    });
  }
}

Deno.test("lint: every rule of the table has a case where it fires and one where it is quiet", () => {
  const missing = LINT_RULES.filter((r) => (CASES[r.id]?.length ?? 0) === 0).map((r) => r.id);
  assert.deepEqual(missing, []);
  assert.deepEqual(Object.keys(CASES).filter((id) => !LINT_RULES.some((r) => r.id === id)), []);
});

Deno.test("lint: rule ids are unique kebab-case, and every rule quotes a spec sentence", () => {
  const ids = LINT_RULES.map((r) => r.id);
  assert.equal(new Set(ids).size, ids.length);
  for (const r of LINT_RULES) {
    assert.match(r.id, /^[a-z0-9]+(-[a-z0-9]+)*$/);
    assert.ok(r.spec.quote.length > 10 && r.spec.section.length > 3, r.id);
  }
});

// ---- the engine: verdicts, live and offline alike -------------------------------------------

Deno.test("lint: a verdict per peer at each session end; clean peers say so", () => {
  const s = new Script().start().negotiate().front("SET_VRING_BASE", ring(0, 0x10000)).end();
  const report = lintLog(s.records);
  assert.equal(report.findings, 1);
  const verdicts = report.sessions[0].verdicts;
  assert.deepEqual(verdicts.map((v) => [v.peer, v.verdict, v.findings]), [
    ["front-end", "findings", 1],
    ["back-end", "clean", 0],
  ]);
  assert.equal(verdicts[0].messages, 5);
  assert.equal(verdicts[1].messages, 2);
  assert.deepEqual(verdicts[0].rules, { "vring-base-reserved-bits": 1 });
  assert.match(
    formatLintRecord(verdicts[0]),
    /verdict front-end: 1 finding \(0 errors, 1 warning\)/,
  );
  assert.match(formatLintRecord(verdicts[1]), /verdict back-end: clean \(2 messages\)/);
});

Deno.test("lint: the live sink passes every record on, then the lint records, as log lint finds them", () => {
  const s = new Script().start().negotiate().front("GET_VRING_BASE", ring(0, 3))
    .back("GET_VRING_BASE", ring(0, 1)).end();
  const written: LogRecord[] = [];
  const sink = lintSink((r) => written.push(r));
  for (const r of s.records) sink(r);
  const lint = written.filter((r) => r.type === "lint") as LintRecord[];
  assert.deepEqual(written.filter((r) => r.type !== "lint"), s.records);
  const finding = lint.find((r) => r.event === "finding") as LintFindingRecord;
  assert.equal(finding.rule, "num-reserved");
  assert.equal(finding.peer, "front-end");
  assert.equal(finding.ts, s.records[7].ts, "stamped with the message's time");
  assert.deepEqual(finding.values, { request: "GET_VRING_BASE", index: 0, num: 3 });
  // The finding follows the message it is about; the verdicts follow the session end.
  assert.equal(written.indexOf(finding), 8);
  assert.deepEqual(written.slice(-2).map((r) => (r as LintVerdictRecord).event), [
    "verdict",
    "verdict",
  ]);
  // log lint over what the live proxy wrote: its lint records are ignored and made afresh.
  const offline = lintLog(written);
  assert.deepEqual(offline.sessions[0].findings, [finding]);
  assert.deepEqual(offline.sessions[0].verdicts, lint.filter((r) => r.event === "verdict"));
});

Deno.test("lint: a session whose start the log lacks is not judged; one never ended is incomplete", () => {
  const s = new Script().start().negotiate();
  s.records.push({ ...(s.records[1] as MessageRecord), session: 7 });
  const report = lintLog(s.records);
  assert.deepEqual(report.unjudged, [7]);
  assert.equal(report.sessions[0].verdicts[0].incomplete, true);
});

Deno.test("lint: a held CHECK_DEVICE_STATE (logged when held and when released) is one request", () => {
  const s = new Script().start().negotiate()
    .front("SET_DEVICE_STATE_FD", { ...SAVE, direction: 1 }, { fds: 1 })
    .back("SET_DEVICE_STATE_FD", STATE_OK)
    .front("CHECK_DEVICE_STATE", undefined, { action: "held: waiting for the LOAD copy to end" })
    .front("CHECK_DEVICE_STATE", undefined, { action: "released after the state copy finished" })
    .back("CHECK_DEVICE_STATE").end();
  assert.deepEqual(findings(s), []);
  assert.equal(
    lintLog(s.records).sessions[0].verdicts[0].messages,
    6,
    "the release is the proxy's",
  );
});

Deno.test("lint: emulated device state, answered by the proxy, judges neither peer for the answer", () => {
  const s = new Script().start().negotiate(P.REPLY_ACK | P.DEVICE_STATE)
    .front("SET_DEVICE_STATE_FD", SAVE, { fds: 1, action: "answered by the proxy (emulated)" })
    .back("SET_DEVICE_STATE_FD", STATE_OK, { injected: true })
    .front("CHECK_DEVICE_STATE", undefined, { action: "answered by the proxy (emulated)" })
    .back("CHECK_DEVICE_STATE", RESULT_OK, { injected: true }).end("back-end");
  assert.deepEqual(findings(s), []);
  assert.equal(lintLog(s.records).sessions[0].verdicts[1].messages, 2, "injected not counted");
});

Deno.test("lint: past 10 findings of a rule in a session the rest are counted, not written", () => {
  const s = new Script().start().negotiate();
  for (let i = 0; i < 12; i++) s.front("SET_VRING_BASE", ring(0, 0x10000 + i));
  const report = lintLog(s.end().records);
  assert.equal(report.sessions[0].findings.length, 10);
  assert.equal(report.findings, 12);
  assert.equal(report.sessions[0].verdicts[0].rules["vring-base-reserved-bits"], 12);
});

Deno.test("lint: lint records are log records: parsed, rendered, and findings are problems", () => {
  const s = new Script().start().negotiate().front("SET_VRING_BASE", ring(1, 0x10000)).end();
  const engine = new LintEngine();
  const out = s.records.flatMap((r) => [r, ...engine.push(r)]);
  const parsed = parseLog(out.map((r) => JSON.stringify(r)).join("\n"));
  assert.deepEqual(parsed.problems, []);
  const finding = parsed.records.find((r) => r.type === "lint" && r.event === "finding")!;
  assert.match(
    formatRecord(finding),
    /^12:00:00\.\d{3}Z s1 LINT warning front-end \[vring-base-reserved-bits\] SET_VRING_BASE index=1: num 0x10000 has reserved bits 16–31 set/,
  );
  assert.match(problemOf(finding)!, /^s1: lint warning: front-end \[vring-base-reserved-bits\]/);
  const verdict = parsed.records.find((r) => r.type === "lint" && r.event === "verdict")!;
  assert.equal(problemOf(verdict), undefined);
});

Deno.test("lint: the README's rule table is the code's table", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const start = readme.indexOf("<!-- lint-rules:start -->");
  const end = readme.indexOf("<!-- lint-rules:end -->");
  assert.ok(start >= 0 && end > start, "README lacks the lint-rules markers");
  // deno fmt pads the columns; compare the cells.
  const cells = (line: string) =>
    line.trim().replace(/^\||\|$/g, "").split(/(?<!\\)\|/).map((c) => c.trim());
  const rows = readme.slice(start, end).split("\n").filter((l) => l.startsWith("|"))
    .filter((l) => !/^\|\s*-/.test(l)).map(cells);
  const expected = lintRuleTable().filter((l) => !/^\|\s*-/.test(l)).map(cells);
  assert.deepEqual(rows, expected, `the README table should be:\n${lintRuleTable().join("\n")}`);
});
