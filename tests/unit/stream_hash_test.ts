// The trailing SHA-256 (device_state/stream_hash.ts) behind real pipe transfers (device_state/copy.ts):
// the digest must equal the inline one whatever the backlog, the copy must wait for the hash
// rather than lose a wake-up, and the kept blob must be the delivered bytes.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createPipe } from "../../ffi/pipe.ts";
import { Reactor } from "../../ffi/reactor.ts";
import { type CopyResult, StateCopy, type StateCopyOptions } from "../../device_state/copy.ts";
import { fingerprintOf, fingerprintsReady } from "../../device_state/fingerprint.ts";
import { TrailingHasher } from "../../device_state/stream_hash.ts";
import type { PipePeerCommand, PipePeerResult } from "./_pipe_peer_worker.ts";

const MiB = 1 << 20;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
// StateCopy hashes with xxh3-128 (WebAssembly) by default.
await fingerprintsReady;

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(n));
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(out.subarray(off, off + 65536));
  return out;
}

interface Outcome {
  result: CopyResult;
  /** What the reader got. */
  delivered: PipePeerResult;
  sha256: string | undefined;
}

/** Runs one side of a pipe on its own thread, once that thread is up. */
async function pipePeer(
  command: PipePeerCommand,
): Promise<{ done: Promise<PipePeerResult>; stop(): void }> {
  const worker = new Worker(new URL("./_pipe_peer_worker.ts", import.meta.url).href, {
    type: "module",
  });
  let ready: () => void;
  const up = new Promise<void>((r) => (ready = r));
  const done = new Promise<PipePeerResult>((resolve, reject) => {
    worker.onmessage = (e) => (e.data === "ready" ? ready() : resolve(e.data));
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(e.message));
    };
  });
  done.catch(() => {}); // a writer cut short by a fault fails with EPIPE: not the test's concern
  await up;
  worker.postMessage(command);
  return { done, stop: () => worker.terminate() };
}

/** Longest a poll() may wait with the transfer unfinished: a lost wake-up shows as a stall. */
const STALL_MS = 2_000;

/**
 * Copies `data` from a writer thread to a reader thread through a StateCopy on this thread,
 * which blocks in poll() as the relay does (no timeout), until the copy has ended and its
 * trailing digest is known. A wake-up the hasher fails to give would stall it: that fails.
 */
async function transfer(
  data: Uint8Array,
  options: Omit<StateCopyOptions, "onDone">,
  maxBacklogBytes: number,
): Promise<Outcome> {
  const reactor = new Reactor((e) => {
    throw e;
  });
  const hasher = new TrailingHasher(reactor, { maxBacklogBytes });
  const [srcR, srcW] = createPipe();
  const [dstR, dstW] = createPipe();
  const writer = await pipePeer({ role: "write", fd: srcW.release(), data });
  const reader = await pipePeer({ role: "read", fd: dstR.release() });
  try {
    let result: CopyResult | undefined;
    let sha256: string | undefined;
    new StateCopy(reactor, srcR, dstW, {
      // xxh3-128, the default, is hashed inline: the trailing hash is for SHA-256 and BLAKE3.
      algorithm: "sha256",
      ...options,
      hasher,
      onDone: (r) => {
        result = r;
        r.digest?.whenReady(() => (sha256 = r.digest!.value));
      },
    });
    while (result === undefined || (result.digest && sha256 === undefined)) {
      const t = performance.now();
      const dispatched = reactor.turn(STALL_MS);
      if (dispatched === 0 && performance.now() - t >= STALL_MS) {
        throw new Error(`the transfer stalled: ${result ? "digest never arrived" : "copy stuck"}`);
      }
    }
    return { result, delivered: await reader.done, sha256 };
  } finally {
    writer.stop();
    reader.stop();
    hasher.close();
  }
}

Deno.test("trailing hash: a 24 MiB splice transfer with a 2 MiB backlog waits for the hash and gets the inline digest", async () => {
  const data = randomBytes(24 * MiB);
  const { result, delivered, sha256 } = await transfer(data, {}, 2 * MiB);
  assert.equal(result.ok, true);
  assert.equal(result.mode, "splice");
  assert.deepEqual(delivered, { bytes: data.length, sha256: sha(data) });
  assert.equal(sha256, sha(data));
});

Deno.test("trailing hash: a read/write copy cut by a fault hashes exactly the delivered bytes", async () => {
  const data = randomBytes(5 * MiB + 77);
  const cut = 3 * MiB + 3;
  const { result, delivered, sha256 } = await transfer(
    data,
    { faults: { truncateAt: cut } },
    1 * MiB,
  );
  assert.equal(result.mode, "copy");
  assert.equal(result.ok, false);
  assert.deepEqual(delivered, { bytes: cut, sha256: sha(data.subarray(0, cut)) });
  assert.equal(sha256, sha(data.subarray(0, cut)));
});

Deno.test("trailing hash: a blob within keepUpTo comes back whole, a larger one does not", async () => {
  const small = randomBytes(3 * MiB + 5);
  const kept = await transfer(small, { keepUpTo: 4 * MiB }, 64 * MiB);
  assert.equal(kept.sha256, sha(small));
  assert.ok(kept.result.blob, "a blob within keepUpTo is kept");
  assert.equal(sha(kept.result.blob), sha(small));

  const large = randomBytes(6 * MiB);
  const notKept = await transfer(large, { keepUpTo: 4 * MiB }, 64 * MiB);
  assert.equal(notKept.sha256, sha(large));
  assert.equal(notKept.result.blob, undefined);
});

Deno.test("trailing hash: BLAKE3 trails too, and its digest is the one computed in one go", async () => {
  const data = randomBytes(9 * MiB + 11);
  const { result, sha256: digest } = await transfer(data, { algorithm: "blake3" }, 2 * MiB);
  assert.equal(result.mode, "splice");
  assert.equal(result.digest?.algorithm, "blake3");
  assert.ok((result.digest?.trailMs ?? -1) >= 0);
  assert.equal(digest, fingerprintOf("blake3", data).value);
});

Deno.test("xxh3-128 (the default) is hashed inline even when a trailing hasher is there", async () => {
  const data = randomBytes(7 * MiB + 3);
  const { result, sha256: digest } = await transfer(data, { algorithm: "xxh3-128" }, 1 * MiB);
  assert.equal(result.mode, "splice");
  assert.equal(result.digest?.algorithm, "xxh3-128");
  assert.equal(result.digest?.trailMs, 0, "known when the stream ended");
  assert.equal(digest, fingerprintOf("xxh3-128", data).value);
});
