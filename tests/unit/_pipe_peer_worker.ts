// Worker for stream_hash_test.ts: one end of a pipe, driven with blocking I/O on its own thread,
// so that the thread under test can block in poll() as the relay does.

/// <reference lib="deno.worker" />

import { createHash } from "node:crypto";
import { libc } from "../../ffi/libc.ts";
import { readFd, writeAll } from "../../ffi/pipe.ts";

export type PipePeerCommand =
  | { role: "write"; fd: number; data: Uint8Array }
  | { role: "read"; fd: number };

export interface PipePeerResult {
  bytes: number;
  sha256?: string;
}

self.postMessage("ready");
self.onmessage = (e: MessageEvent<PipePeerCommand>) => {
  const cmd = e.data;
  if (cmd.role === "write") {
    writeAll(cmd.fd, cmd.data);
    libc.close(cmd.fd);
    self.postMessage({ bytes: cmd.data.length } satisfies PipePeerResult);
    return;
  }
  const hash = createHash("sha256");
  const buf = new Uint8Array(new ArrayBuffer(1 << 20));
  let bytes = 0;
  for (;;) {
    const n = readFd(cmd.fd, buf);
    if (n <= 0) break;
    hash.update(buf.subarray(0, n));
    bytes += n;
  }
  libc.close(cmd.fd);
  self.postMessage({ bytes, sha256: hash.digest("hex") } satisfies PipePeerResult);
};
