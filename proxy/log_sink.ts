/**
 * Where records go: a JSON Lines file (one object per line, for programs) and a human stream.
 * Sinks are plain functions; writes are synchronous so that a crash never loses a line that was
 * already handed over, and ordering is exactly the relay's.
 *
 * @module
 */

import type { LogRecord } from "./log_record.ts";
import { formatRecord } from "./log_format.ts";

/** Receives every record. */
export type Sink = (record: LogRecord) => void;

const encoder = new TextEncoder();

/** Appends one JSON object per record to `path` (created or truncated). */
export function jsonLinesSink(path: string): { sink: Sink; close(): void } {
  const file = Deno.openSync(path, { write: true, create: true, truncate: true });
  return {
    sink: (r) => {
      const bytes = encoder.encode(JSON.stringify(r) + "\n");
      let off = 0;
      while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
    },
    close: () => file.close(),
  };
}

/** Writes one human line per record to stderr. */
export function humanSink(filter: (r: LogRecord) => boolean = () => true): Sink {
  return (r) => {
    if (!filter(r)) return;
    const bytes = encoder.encode(formatRecord(r) + "\n");
    let off = 0;
    while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
  };
}

/** Sends every record to each sink. */
export function fanOut(...sinks: Sink[]): Sink {
  return (r) => {
    for (const s of sinks) s(r);
  };
}
