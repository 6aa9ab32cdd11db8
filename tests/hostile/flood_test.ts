/**
 * Floods through the proxy subprocess: 10,000 back-end-channel IOTLB messages, 200
 * connect/close cycles, and a slow (then stalled) reader on each side with 2 KiB payloads.
 * Each checks ordering, that nothing is dropped, and the proxy's memory (VmRSS/VmHWM) stays
 * bounded; the measurements are printed for the report.
 */

import assert from "node:assert/strict";
import { closeAll } from "../../ffi/fd.ts";
import type { SessionEndRecord } from "../../log/record.ts";
import type { WireMessage } from "../support/scripted_peer.ts";
import { pump, type Stream } from "./_pump.ts";
import { drain, ProxyProcess, type Session } from "./_rig.ts";
import { frame, iotlb, NEED_REPLY, REPLY, REQ, u64 } from "./_wire.ts";

const NO_SANITIZERS = { sanitizeOps: false, sanitizeResources: false, sanitizeExit: false };
/** The proxy's memory must stay below this whatever the flood (issue 4: bounded memory). */
const RSS_LIMIT_KIB = 200 * 1024;
const IOTLB_COUNT = 10_000;

/** Tracks the proxy's peak RSS while a flood runs. */
class MemoryWatch {
  peakRssKiB = 0;
  constructor(readonly proxy: ProxyProcess) {
    this.sample();
  }
  sample(): void {
    this.peakRssKiB = Math.max(this.peakRssKiB, this.proxy.memory().rssKiB);
  }
  check(label: string): string {
    this.sample();
    const { hwmKiB } = this.proxy.memory();
    assert.ok(this.peakRssKiB < RSS_LIMIT_KIB, `${label}: RSS ${this.peakRssKiB} KiB`);
    assert.ok(hwmKiB < RSS_LIMIT_KIB, `${label}: VmHWM ${hwmKiB} KiB`);
    return `peak VmRSS ${(this.peakRssKiB / 1024).toFixed(1)} MiB, VmHWM ${
      (hwmKiB / 1024).toFixed(1)
    } MiB`;
  }
}

/** Closes a session and returns its session-end record (its summary counts every message). */
function finish(proxy: ProxyProcess, s: Session): SessionEndRecord {
  s.close();
  const end = proxy.sessionEnd(s.id, 30_000);
  assert.ok(end, "session-end logged");
  return end;
}

function iovaOf(m: WireMessage): bigint {
  return new DataView(m.payload.buffer, m.payload.byteOffset, 8).getBigUint64(0, true);
}

Deno.test({
  name: "floods: the proxy subprocess stays bounded, ordered and lossless",
  ...NO_SANITIZERS,
  fn: async (t) => {
    const proxy = await ProxyProcess.start();
    try {
      proxy.proveServing();
      const baseline = proxy.settleFds(0, 300);

      await t.step({
        name: `${IOTLB_COUNT} BACKEND_IOTLB_MSG on the back-end channel arrive in order, then ` +
          `${IOTLB_COUNT} more with NEED_REPLY are acked in order`,
        ...NO_SANITIZERS,
        fn: () => {
          const mem = new MemoryWatch(proxy);
          const s = proxy.open().withChannel();
          const qemu = s.qemuCh!, backend = s.backCh!;
          for (const needReply of [false, true]) {
            let sent = 0, received = 0, replied = 0, acked = 0;
            const requests: Stream = {
              from: backend,
              to: qemu,
              next: () =>
                sent < IOTLB_COUNT
                  ? frame(1, needReply ? NEED_REPLY : REQ, iotlb(BigInt(sent++) * 0x1000n))
                  : undefined,
              received: (m) => {
                assert.equal(m.request, 1);
                assert.equal(iovaOf(m), BigInt(received) * 0x1000n, "in order, none dropped");
                received++;
              },
            };
            // QEMU acks each NEED_REPLY request in the order it read them.
            const acks: Stream = {
              from: qemu,
              to: backend,
              next: () =>
                replied < received && needReply ? (replied++, frame(1, REPLY, u64(0))) : undefined,
              received: (m) => {
                assert.equal(m.request, 1);
                assert.equal(m.flags, REPLY);
                acked++;
              },
            };
            let checks = 0;
            const stats = pump(
              needReply ? [requests, acks] : [requests],
              () => received === IOTLB_COUNT && (!needReply || acked === IOTLB_COUNT),
              {
                timeoutMs: 60_000,
                tick: () => {
                  mem.sample();
                  // Another session is served while this one floods (sessions are isolated).
                  if (checks++ % 25 === 0) proxy.proveServing();
                },
              },
            );
            console.log(
              `  ${IOTLB_COUNT} IOTLB ${
                needReply ? "with NEED_REPLY + acks" : "one-way"
              }: ${stats.elapsedMs} ms`,
            );
          }
          const end = finish(proxy, s);
          assert.equal(end.summary.byName["BACKEND_IOTLB_MSG"], 2 * IOTLB_COUNT, "all logged");
          assert.equal(end.summary.byName["BACKEND_IOTLB_MSG (reply)"], IOTLB_COUNT);
          assert.equal(end.summary.errors, 0);
          console.log(`  ${mem.check("IOTLB flood")}`);
          assert.ok(proxy.settleFds(baseline) <= baseline, "fds back to baseline");
        },
      });

      await t.step({
        name: "200 connect/close cycles in five patterns leave no session and no fd behind",
        ...NO_SANITIZERS,
        fn: () => {
          const mem = new MemoryWatch(proxy);
          const t0 = performance.now();
          const patterns = [
            "QEMU closes first",
            "the back-end closes first",
            "QEMU closes mid-request",
            "a request in flight, then QEMU closes",
            "the back-end channel is opened, then QEMU closes",
          ];
          const ids: number[] = [];
          for (let i = 0; i < 200; i++) {
            const s = proxy.open();
            ids.push(s.id);
            switch (i % patterns.length) {
              case 0:
                s.front.close();
                break;
              case 1:
                s.back.close();
                break;
              case 2:
                s.front.sendRaw(frame(9, REQ, new Uint8Array(40)).subarray(0, 20));
                s.front.close();
                break;
              case 3:
                s.relay(s.front, s.back, { request: 11, flags: REQ, payload: new Uint8Array(8) });
                s.front.close();
                break;
              case 4:
                s.openChannel();
                s.front.close();
                break;
            }
            for (const p of s.peers) if (p.channel.socket.isOpen) assert.ok(drain(p, 2000).eof);
            s.close();
            if (i % 20 === 0) mem.sample();
          }
          const elapsed = Math.round(performance.now() - t0);
          for (const id of ids) assert.ok(proxy.sessionEnd(id, 5000), `session ${id} ended`);
          assert.ok(proxy.alive);
          assert.ok(proxy.settleFds(baseline) <= baseline, "fds back to baseline");
          console.log(`  200 cycles: ${elapsed} ms, ${mem.check("connect/close cycles")}`);
        },
      });

      for (const side of ["back-end (main channel)", "QEMU (back-end channel)"] as const) {
        await t.step({
          name: `a stalled, then slow ${side} reader: 2,000 × 2 KiB relayed in order with ` +
            "bounded buffering",
          ...NO_SANITIZERS,
          fn: () => slowReader(proxy, baseline, side === "QEMU (back-end channel)"),
        });
      }
    } finally {
      assert.equal(await proxy.stop(), 0, "the proxy exits cleanly on SIGTERM");
    }
  },
});

const BIG = 2056;
const BIG_COUNT = 2000;
/** The slow reader's pace: 1.5 messages (3 KiB) per millisecond. */
const READ_PER_MS = 1.5;

/**
 * The reader stalls for 500 ms while the writer pushes 2 KiB unknown-code messages (relayed
 * verbatim, the largest payload in the spec, 2056 bytes): the writer must soon block (backpressure: the proxy
 * buffers at most one message), the proxy's RSS stays flat, another session is served. Then
 * the reader reads slowly, a few messages per ms, and every message arrives in order.
 */
function slowReader(proxy: ProxyProcess, baseline: number, backendChannel: boolean): void {
  const mem = new MemoryWatch(proxy);
  const s = proxy.open();
  if (backendChannel) s.withChannel();
  const writer = backendChannel ? s.backCh! : s.front;
  const reader = backendChannel ? s.qemuCh! : s.back;
  const code = backendChannel ? 50 : 99;
  let sent = 0, received = 0;
  const stalledUntil = performance.now() + 500;
  let readFrom: number | undefined;
  let bytesWhenStalled = 0;
  const payload = new Uint8Array(BIG);
  const stream: Stream = {
    from: writer,
    to: reader,
    next: () => {
      if (sent >= BIG_COUNT) return undefined;
      new DataView(payload.buffer).setUint32(0, sent++, true);
      payload[BIG - 1] = sent & 0xff;
      return frame(code, REQ, payload);
    },
    received: (m) => {
      assert.equal(m.request, code);
      assert.equal(m.payload.length, BIG);
      const seq = new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(0, true);
      assert.equal(seq, received, "in order, none dropped");
      assert.equal(m.payload[BIG - 1], (seq + 1) & 0xff, "payload intact");
      received++;
      closeAll(m.fds);
    },
    // Stalled, then paced at READ_PER_MS messages per millisecond: slower than the writer.
    readBudget: () => {
      const now = performance.now();
      if (now < stalledUntil) return 0;
      readFrom ??= now;
      return Math.max(0, Math.floor((now - readFrom) * READ_PER_MS) - received);
    },
  };
  let isolation = false;
  const stats = pump([stream], () => received === BIG_COUNT, {
    timeoutMs: 90_000,
    tick: () => {
      mem.sample();
      if (performance.now() < stalledUntil) {
        bytesWhenStalled = sent * (BIG + 12);
        if (!isolation && sent > 50) {
          proxy.proveServing(); // another session is served while this one is stuck
          isolation = true;
        }
      }
    },
  });
  assert.ok(isolation, "another session was served during the stall");
  // What the writer got rid of while nobody read: socket buffers plus one message in the proxy.
  assert.ok(
    bytesWhenStalled < 4 * 1024 * 1024,
    `writer pushed ${bytesWhenStalled} bytes into a stalled path`,
  );
  const end = finish(proxy, s);
  assert.equal(end.summary.errors, 0);
  console.log(
    `  ${
      backendChannel ? "back-end channel" : "main channel"
    }: ${BIG_COUNT} × 2 KiB in ${stats.elapsedMs} ms; ` +
      `${(bytesWhenStalled / 1024).toFixed(0)} KiB accepted during the 500 ms stall; ${
        mem.check("slow reader")
      }`,
  );
  assert.ok(proxy.settleFds(baseline) <= baseline, "fds back to baseline");
}
