/**
 * Where records go: a JSON Lines file (one object per line, for programs) and a human stream.
 * Sinks are plain functions; writes are synchronous so that a crash never loses a line that was
 * already handed over, and ordering is exactly the relay's.
 *
 * @module
 */

import type { OwnedFd } from "../ffi/fd.ts";
import { tryLockFile } from "../ffi/file_lock.ts";
import type { LogRecord } from "./record.ts";
import { formatRecord } from "./format.ts";

/** Receives every record. */
export type Sink = (record: LogRecord) => void;

const encoder = new TextEncoder();

/** A JSON Lines log file the proxy writes. */
export interface JsonLinesLog {
  sink: Sink;
  /**
   * The highest session number already in the file (0 for a new or empty one): a proxy
   * appending to it numbers its sessions after it, so that one file never holds two session 3s.
   */
  readonly lastSession: number;
  /** Reopens `path` (after logrotate moved it away): later records go to a new file there. */
  reopen(): void;
  close(): void;
}

/** Thrown when the log cannot be opened; its message is one line naming the path and cause. */
export class LogFileError extends Error {
  override name = "LogFileError";
}

/**
 * Opens `path` for appending one JSON object per record. An existing log is never truncated
 * or rewritten: the records of this run follow the earlier ones. A log that another
 * vhost-user-proxy process is writing (it holds the file's lock) is refused.
 */
export function jsonLinesSink(path: string): JsonLinesLog {
  let { file, lock } = openLocked(path);
  const lastSession = lastSessionIn(path);
  return {
    lastSession,
    sink: (r) => {
      const bytes = encoder.encode(JSON.stringify(r) + "\n");
      let off = 0;
      while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
    },
    reopen: () => {
      const next = openLocked(path);
      file.close();
      lock.close();
      ({ file, lock } = next);
    },
    close: () => {
      file.close();
      lock.close();
    },
  };
}

function openLocked(path: string): { file: Deno.FsFile; lock: OwnedFd } {
  let lock: OwnedFd | undefined;
  try {
    lock = tryLockFile(path);
  } catch (e) {
    throw new LogFileError(`cannot open the log "${path}": ${causeOf(e)}`);
  }
  if (lock === undefined) {
    throw new LogFileError(
      `cannot write the log "${path}": another vhost-user-proxy process is writing it`,
    );
  }
  try {
    return { file: Deno.openSync(path, { append: true, create: true }), lock };
  } catch (e) {
    lock.close();
    throw new LogFileError(`cannot open the log "${path}": ${causeOf(e)}`);
  }
}

function causeOf(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "its directory does not exist";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.IsADirectory) return "it is a directory";
  return e instanceof Error ? e.message : String(e);
}

const SCAN_CHUNK = 4 << 20;
const SESSION_FIELD = /"session":(\d+)/g;
const RUN_START = '"event":"listening"';

/**
 * The highest `"session":N` in the last run recorded in `path`: session numbers only grow
 * (each run continues after the last), so the file is read backwards, in chunks, down to the
 * last run's "listening" record, not further.
 */
export function lastSessionIn(path: string): number {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path, { read: true });
  } catch {
    return 0;
  }
  try {
    const size = f.statSync().size;
    const decoder = new TextDecoder();
    let max = 0;
    // Chunks overlap by a field's length, so that no "session":N is cut in two.
    const overlap = 32;
    let end = size;
    while (end > 0) {
      const start = Math.max(0, end - SCAN_CHUNK);
      const len = Math.min(size, end + overlap) - start;
      const buf = new Uint8Array(len);
      f.seekSync(start, Deno.SeekMode.Start);
      let got = 0;
      while (got < len) {
        const n = f.readSync(buf.subarray(got));
        if (n === null || n === 0) break;
        got += n;
      }
      const text = decoder.decode(buf.subarray(0, got));
      for (const m of text.matchAll(SESSION_FIELD)) max = Math.max(max, Number(m[1]));
      if (text.includes(RUN_START)) break;
      end = start;
    }
    return max;
  } finally {
    f.close();
  }
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
