/**
 * Runs the device-state code once when the engine starts, on throwaway pipes.
 *
 * A proxy process usually sees one migration in its life, and it comes while the VM is stopped.
 * Traced against QEMU's own timestamps, the first SET_DEVICE_STATE_FD through a fresh proxy took
 * 1–1.8 ms per direction inside the proxy instead of ~0.1 ms: the first pipe2, /proc readlink,
 * F_SETPIPE_SZ and SHA-256 of a process cost 0.1–0.6 ms each (measured cold vs warm), on top of
 * the lazy compilation of the transfer code. Paying that here keeps it out of the downtime.
 *
 * @module
 */

import { createPipe, writeAll } from "../ffi/pipe.ts";
import { Reactor } from "../ffi/reactor.ts";
import type { FingerprintAlgorithm } from "../device_state/fingerprint.ts";
import { StateCopy } from "../device_state/copy.ts";

/** Sixteen KiB through a hashed splice copy and a read/write copy, on a private reactor. */
export function warmUpDeviceState(algorithm?: FingerprintAlgorithm): void {
  const reactor = new Reactor(() => {});
  const pattern = new Uint8Array(16 << 10).map((_, i) => i * 7);
  for (const faults of [undefined, { truncateAt: 1 << 20 }]) {
    const [srcR, srcW] = createPipe();
    const [dstR, dstW] = createPipe();
    let done = false;
    const copy = new StateCopy(reactor, srcR, dstW, {
      keepUpTo: 1 << 20,
      algorithm,
      faults, // a truncation beyond the end takes the read/write path and changes nothing
      onDone: () => (done = true),
    });
    writeAll(srcW, pattern);
    srcW.close();
    for (let i = 0; i < 20 && !done; i++) reactor.turn(5);
    if (!done) copy.cancel("warm-up");
    dstR.close();
  }
}
