/**
 * Reads what QEMU's `vhost_user_write` trace event recorded: every request QEMU wrote to a
 * vhost-user back-end, in order. Debian's QEMU uses the `log` trace backend, so
 * `-trace enable=vhost_user_write,file=F` writes text lines `vhost_user_write req:N flags:0xF`.
 *
 * @module
 */

/** One request QEMU wrote, as traced. */
export interface TracedRequest {
  /** Request code (front-end → back-end numbering of the upstream spec). */
  code: number;
  /** Upstream name, e.g. `SET_DEVICE_STATE_FD`; `UNKNOWN_<code>` if not in the table. */
  name: string;
  /** Header flags QEMU sent (version 0x1, NEED_REPLY 0x8). */
  flags: number;
}

// Front-end request names of the upstream spec (protocol.md §1.5). Kept here so the harness
// does not depend on the proxy's catalogue; the test tool must stay independent of the code
// under test.
const FRONT_END_REQUEST_NAMES: readonly string[] = [
  "NONE",
  "GET_FEATURES",
  "SET_FEATURES",
  "SET_OWNER",
  "RESET_OWNER",
  "SET_MEM_TABLE",
  "SET_LOG_BASE",
  "SET_LOG_FD",
  "SET_VRING_NUM",
  "SET_VRING_ADDR",
  "SET_VRING_BASE",
  "GET_VRING_BASE",
  "SET_VRING_KICK",
  "SET_VRING_CALL",
  "SET_VRING_ERR",
  "GET_PROTOCOL_FEATURES",
  "SET_PROTOCOL_FEATURES",
  "GET_QUEUE_NUM",
  "SET_VRING_ENABLE",
  "SEND_RARP",
  "NET_SET_MTU",
  "SET_BACKEND_REQ_FD",
  "IOTLB_MSG",
  "SET_VRING_ENDIAN",
  "GET_CONFIG",
  "SET_CONFIG",
  "CREATE_CRYPTO_SESSION",
  "CLOSE_CRYPTO_SESSION",
  "POSTCOPY_ADVISE",
  "POSTCOPY_LISTEN",
  "POSTCOPY_END",
  "GET_INFLIGHT_FD",
  "SET_INFLIGHT_FD",
  "GPU_SET_SOCKET",
  "RESET_DEVICE",
  "VRING_KICK",
  "GET_MAX_MEM_SLOTS",
  "ADD_MEM_REG",
  "REM_MEM_REG",
  "SET_STATUS",
  "GET_STATUS",
  "GET_SHARED_OBJECT",
  "SET_DEVICE_STATE_FD",
  "CHECK_DEVICE_STATE",
];

const TRACE_LINE = /vhost_user_write req:(\d+) flags:0x([0-9a-fA-F]+)/;

/** Parses trace text (lines not from `vhost_user_write` are ignored). */
export function parseVhostUserTrace(text: string): TracedRequest[] {
  const requests: TracedRequest[] = [];
  for (const line of text.split("\n")) {
    const match = line.match(TRACE_LINE);
    if (!match) continue;
    const code = Number(match[1]);
    requests.push({
      code,
      name: FRONT_END_REQUEST_NAMES[code] ?? `UNKNOWN_${code}`,
      flags: parseInt(match[2], 16),
    });
  }
  return requests;
}

/**
 * Reads a QEMU trace file written with `-trace enable=vhost_user_write,file=F` (see
 * `VmOptions.traceVhostUser`). QEMU flushes each line, so this works while QEMU runs. With
 * several vhost-user devices the requests of all of them are interleaved.
 *
 * @example
 * ```ts
 * const names = (await readVhostUserTrace(vm.paths.trace!)).map((r) => r.name);
 * assert(names.includes("SET_DEVICE_STATE_FD"));
 * ```
 */
export async function readVhostUserTrace(file: string): Promise<TracedRequest[]> {
  return parseVhostUserTrace(await Deno.readTextFile(file));
}
