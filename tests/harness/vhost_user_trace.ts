/**
 * Reads what QEMU's `vhost_user_write` trace event recorded: every request QEMU wrote to a
 * vhost-user back-end, in order. Debian's QEMU uses the `log` trace backend, so
 * `-trace enable=vhost_user_write,file=F` writes text lines `vhost_user_write req:N flags:0xF`.
 *
 * @module
 */

// The spec's transcription, not the proxy's catalogue: the harness stays independent of the
// code under test.
import { SPEC_FRONT_END_NAMES } from "../support/spec_names.ts";

/** One request QEMU wrote, as traced. */
export interface TracedRequest {
  /** Request code (front-end → back-end numbering of the upstream spec). */
  code: number;
  /** Upstream name, e.g. `SET_DEVICE_STATE_FD`; `UNKNOWN_<code>` if not in the table. */
  name: string;
  /** Header flags QEMU sent (version 0x1, NEED_REPLY 0x8). */
  flags: number;
}

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
      name: SPEC_FRONT_END_NAMES[code] ?? `UNKNOWN_${code}`,
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
