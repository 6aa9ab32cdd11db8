// The floor of a relay written on Deno: bytes and fds both ways through the proxy's own FFI layer
// (poll, recvmsg, sendmsg), one thread, no framing, no decoding, no log. It is what the README's
// "Measured here" compares the proxy's CPU per message, memory and cold round trips with, to tell
// the runtime's cost from the proxy's. Not a relay to use: a read may glue messages, and it serves
// one front-end at a time.
//
//   deno run -A bench/deno_floor_relay.ts <listen-path> <backend-path>
//   out/bench/bin/pingpong --socket <listen-path> --rounds 30000      # utime+stime from /proc

import {
  acceptConnection,
  connectUnix,
  listenUnix,
  recvWithFds,
  sendWithFds,
} from "../ffi/socket.ts";
import { POLLIN, PollSet } from "../ffi/poll.ts";

const [listenPath, backendPath] = Deno.args;
if (!listenPath || !backendPath) {
  console.error("usage: deno run -A bench/deno_floor_relay.ts <listen-path> <backend-path>");
  Deno.exit(2);
}
const listener = listenUnix(listenPath);
const poll = new PollSet();
const buf = new Uint8Array(new ArrayBuffer(65536));
for (;;) {
  poll.clear();
  poll.add(listener.fd, POLLIN);
  poll.wait(-1);
  const front = acceptConnection(listener);
  if (!front) continue;
  const back = connectUnix(backendPath);
  front.setNonBlocking(true);
  back.setNonBlocking(true);
  pair: for (;;) {
    poll.clear();
    poll.add(front.fd, POLLIN);
    poll.add(back.fd, POLLIN);
    poll.wait(-1);
    for (const [slot, from, to] of [[0, front, back], [1, back, front]] as const) {
      if (poll.revents(slot) === 0) continue;
      const r = recvWithFds(from.fd, buf, 0, buf.length);
      if (r.kind === "eof") break pair;
      if (r.kind !== "data") continue;
      sendWithFds(to.fd, buf, 0, r.bytes, r.fds.map((f) => f.fd));
      for (const f of r.fds) f.close();
    }
  }
  front.close();
  back.close();
}
