/**
 * The control socket (`--control <path>`) and its client (`vhost-user-proxy ctl`): JSON Lines,
 * one request object per line, one response object per line, on a unix socket of mode 0600.
 *
 * Requests: `{"cmd":"status"}` and `{"cmd":"restart-backend","session":1,"backend":"/x.sock"}`
 * (both fields optional). Every response has `ok`; a failure has `error`.
 *
 * @module
 */

import { checkListenPath } from "../ffi/socket.ts";
import type { ControlRequest } from "./engine.ts";

/** A listening control socket. */
export interface ControlServer {
  readonly path: string;
  /** Stops accepting and removes the socket file. */
  close(): void;
}

/** The most a request line may hold. */
const MAX_LINE = 64 << 10;

/** Listens on `path` and answers each request line with `handle`'s response. */
export function serveControl(
  path: string,
  handle: (request: Record<string, unknown>) => Promise<Record<string, unknown>>,
): ControlServer {
  if (checkListenPath(path) === "stale") Deno.removeSync(path);
  const listener = Deno.listen({ transport: "unix", path });
  Deno.chmodSync(path, 0o600);
  let closed = false;
  (async () => {
    for await (const conn of listener) void serveConnection(conn, handle);
  })().catch(() => {
    // the listener was closed
  });
  return {
    path,
    close: () => {
      if (closed) return;
      closed = true;
      listener.close();
      try {
        Deno.removeSync(path);
      } catch {
        // already gone
      }
    },
  };
}

async function serveConnection(
  conn: Deno.UnixConn,
  handle: (request: Record<string, unknown>) => Promise<Record<string, unknown>>,
): Promise<void> {
  const encoder = new TextEncoder();
  let pending = "";
  try {
    for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      if (pending.length > MAX_LINE) {
        await write(conn, encoder, { ok: false, error: "request line too long" });
        return;
      }
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (line === "") continue;
        let response: Record<string, unknown>;
        try {
          const request = JSON.parse(line);
          response = typeof request === "object" && request !== null && !Array.isArray(request)
            ? await handle(request)
            : { ok: false, error: "a request is a JSON object" };
        } catch (e) {
          response = {
            ok: false,
            error: `not a JSON request: ${e instanceof Error ? e.message : e}`,
          };
        }
        await write(conn, encoder, response);
      }
    }
  } catch {
    // the client went away
  } finally {
    try {
      conn.close();
    } catch {
      // closed already
    }
  }
}

async function write(conn: Deno.UnixConn, encoder: TextEncoder, r: Record<string, unknown>) {
  const bytes = encoder.encode(JSON.stringify(r) + "\n");
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** Checks a parsed request line: the commands and their fields. */
export function parseControlRequest(r: Record<string, unknown>): ControlRequest | string {
  switch (r.cmd) {
    case "status":
      return { cmd: "status" };
    case "restart-backend": {
      if (r.session !== undefined && !Number.isInteger(r.session)) {
        return `"session" must be an integer, not ${JSON.stringify(r.session)}`;
      }
      if (r.backend !== undefined && typeof r.backend !== "string") {
        return `"backend" must be a socket path, not ${JSON.stringify(r.backend)}`;
      }
      return {
        cmd: "restart-backend",
        ...(r.session === undefined ? {} : { session: r.session as number }),
        ...(r.backend === undefined ? {} : { backend: r.backend as string }),
      };
    }
    default:
      return `unknown command ${JSON.stringify(r.cmd)}: status or restart-backend`;
  }
}

/** Sends one request to the control socket at `path` and returns its response. */
export async function controlRequest(
  path: string,
  request: Record<string, unknown>,
  timeoutMs = 60_000,
): Promise<Record<string, unknown>> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const encoder = new TextEncoder();
    await conn.write(encoder.encode(JSON.stringify(request) + "\n"));
    const decoder = new TextDecoder();
    let text = "";
    const buf = new Uint8Array(64 << 10);
    const deadline = Date.now() + timeoutMs;
    while (!text.includes("\n")) {
      const timer = setTimeout(() => conn.close(), Math.max(0, deadline - Date.now()));
      let n: number | null;
      try {
        n = await conn.read(buf);
      } finally {
        clearTimeout(timer);
      }
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
    const line = text.split("\n")[0];
    if (line === "") throw new Error("the proxy closed the control connection without answering");
    return JSON.parse(line);
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the timer
    }
  }
}
