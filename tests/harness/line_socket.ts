/**
 * A line-oriented unix-socket client, the transport under the QMP client and the guest agent:
 * every received line goes to a callback, writes are serialized.
 *
 * @module
 */

import { delay } from "./wait.ts";

/** Options for {@linkcode LineSocket.connect}. */
export interface LineSocketOptions {
  /** Human description for errors, e.g. `QMP of vm "src"`. */
  what: string;
  /** Keep retrying while the socket does not accept yet; default 10000 ms. */
  timeoutMs?: number;
  /** Called for each received line, without its line ending (and without a trailing CR). */
  onLine: (line: string) => void;
  /** Called once when the peer closes the connection or reading fails. */
  onClose?: (error?: Error) => void;
  /** Stop retrying early when this returns a reason (e.g. the process exited). */
  abortReason?: () => string | undefined;
}

/** A connected line socket. */
export class LineSocket {
  readonly what: string;
  /** Resolves when the reader loop has ended (peer closed or {@linkcode close} called). */
  readonly closed: Promise<void>;
  #conn: Deno.UnixConn;
  #writeChain: Promise<void> = Promise.resolve();
  #closing = false;

  private constructor(conn: Deno.UnixConn, options: LineSocketOptions) {
    this.what = options.what;
    this.#conn = conn;
    this.closed = this.#readLoop(options);
  }

  /** Connects to `path`, retrying until it accepts or the timeout elapses. */
  static async connect(path: string, options: LineSocketOptions): Promise<LineSocket> {
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    let lastError: unknown;
    while (Date.now() < deadline) {
      const reason = options.abortReason?.();
      if (reason) throw new Error(`Cannot connect to ${options.what} at "${path}": ${reason}`);
      try {
        const conn = await Deno.connect({ transport: "unix", path });
        return new LineSocket(conn, options);
      } catch (error) {
        lastError = error;
        await delay(50);
      }
    }
    throw new Error(
      `Cannot connect to ${options.what} at "${path}": ${
        (lastError as Error)?.message ?? "timeout"
      }`,
    );
  }

  /** Writes `line` plus a newline; writes are queued so they never interleave. */
  send(line: string): Promise<void> {
    const bytes = new TextEncoder().encode(`${line}\n`);
    const write = this.#writeChain.then(async () => {
      let offset = 0;
      while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
    });
    this.#writeChain = write.catch(() => {});
    return write;
  }

  /** Closes the connection; the reader loop ends. Idempotent. */
  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed by the peer.
      }
    }
    await this.closed;
  }

  async #readLoop(options: LineSocketOptions): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(65536);
    let pending = "";
    let failure: Error | undefined;
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        pending += decoder.decode(buffer.subarray(0, n), { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          options.onLine(pending.slice(0, newline).replace(/\r$/, ""));
          pending = pending.slice(newline + 1);
        }
      }
    } catch (error) {
      if (!this.#closing) failure = error as Error;
    }
    if (!this.#closing) {
      this.#closing = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed.
      }
    }
    options.onClose?.(failure);
  }
}
