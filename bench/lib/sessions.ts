// The memory section: the proxy's VmRSS with 0, 1, 16 and 64 concurrent idle sessions.
//
// A fresh `vhost-user-proxy run --quiet` in front of a back-end played here (it accepts every
// connection and answers GET_FEATURES); each session is a front-end that connects and does
// GET_FEATURES, as QEMU opens one, then stays idle. Goal (issue 12): ≤ +1 MiB per session,
// judged from 1 session to 16 and to 64 (the first session also pays one-time costs).

import type { HelperPaths } from "./build.ts";
import { type Children, waitForSocket } from "./children.ts";
import type { GoalRow } from "./goals.ts";
import { readMem } from "./procfs.ts";

export const SESSION_COUNTS = [1, 16, 64] as const;
export const PER_SESSION_GOAL_MIB = 1;

const PROXY_START_MS = 60_000;
/** After opening sessions: the proxy's allocations and a GC have settled. */
const SETTLE_MS = 1500;
const GET_FEATURES = 1;
const VERSION = 0x1, REPLY = 0x4, NEED_REPLY = 0x8;

export interface SessionsContext {
  children: Children;
  bins: HelperPaths;
  dir: string;
  proxyBin: string;
  log: (line: string) => void;
}

export interface SessionsResult {
  /** VmRSS (KiB) by number of open idle sessions (0 included). */
  rssKiB: Record<number, number>;
  /** (RSS at n − RSS at 1) / (n − 1), MiB, for n = 16 and 64. */
  perSessionMiB: Record<number, number>;
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) return null;
    got += r;
  }
  return out;
}

function header(request: number, flags: number, size: number): Uint8Array {
  const b = new Uint8Array(12 + (flags & REPLY ? size : 0));
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return b;
}

/** Back-end side: answers GET_FEATURES (VERSION_1) and acks NEED_REPLY requests, forever. */
async function serveBackend(conn: Deno.Conn): Promise<void> {
  try {
    for (;;) {
      const h = await readExactly(conn, 12);
      if (!h) return;
      const v = new DataView(h.buffer);
      const request = v.getUint32(0, true),
        flags = v.getUint32(4, true),
        size = v.getUint32(8, true);
      if (size > 0 && !(await readExactly(conn, size))) return;
      if (request === GET_FEATURES || flags & NEED_REPLY) {
        const reply = header(request, VERSION | REPLY, 8);
        new DataView(reply.buffer).setBigUint64(
          12,
          request === GET_FEATURES ? 1n << 32n : 0n,
          true,
        );
        await conn.write(reply);
      }
    }
  } catch {
    // The proxy closed the connection at the end: nothing to report.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** Front-end side: connects and does GET_FEATURES like QEMU's first message; stays open. */
async function openSession(path: string): Promise<Deno.Conn> {
  const conn = await Deno.connect({ transport: "unix", path });
  await conn.write(header(GET_FEATURES, VERSION, 0));
  const reply = await readExactly(conn, 20);
  if (!reply) throw new Error("the proxy closed a session before answering GET_FEATURES");
  return conn;
}

const settle = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function sessionsBench(ctx: SessionsContext): Promise<SessionsResult> {
  const backendPath = `${ctx.dir}/sessions-backend.sock`;
  const listener = Deno.listen({ transport: "unix", path: backendPath });
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    try {
      for await (const conn of listener) served.push(serveBackend(conn));
    } catch {
      // Closed at the end.
    }
  })();
  const socket = `${ctx.dir}/sessions-proxy.sock`;
  const proxy = ctx.children.start("vhost-user-proxy (sessions)", ctx.proxyBin, [
    "run",
    ...["--listen", socket, "--backend", backendPath],
    "--quiet",
  ]);
  const sessions: Deno.Conn[] = [];
  try {
    await waitForSocket(socket, proxy, PROXY_START_MS);
    await settle(SETTLE_MS);
    const rss = () => {
      const m = readMem(proxy.pid);
      if (!m) throw new Error(`the proxy exited: ${proxy.output}`);
      return m.vmRssKiB;
    };
    const rssKiB: Record<number, number> = { 0: rss() };
    for (const n of SESSION_COUNTS) {
      while (sessions.length < n) sessions.push(await openSession(socket));
      await settle(SETTLE_MS);
      rssKiB[n] = rss();
      ctx.log(`memory: ${n} idle session(s): VmRSS ${(rssKiB[n] / 1024).toFixed(1)} MiB`);
    }
    const perSessionMiB: Record<number, number> = {};
    for (const n of SESSION_COUNTS.filter((n) => n > 1)) {
      perSessionMiB[n] = (rssKiB[n] - rssKiB[1]) / 1024 / (n - 1);
    }
    return { rssKiB, perSessionMiB };
  } finally {
    for (const c of sessions) {
      try {
        c.close();
      } catch {
        // Already closed by the proxy.
      }
    }
    await proxy.stop();
    listener.close();
    await accepting;
    await Promise.all(served);
  }
}

const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

/** Runs the section, prints it and adds its goal rows; returns 1 if it could not run. */
export async function sessionsSection(ctx: SessionsContext, goals: GoalRow[]): Promise<number> {
  ctx.log("memory with idle sessions…");
  let r: SessionsResult;
  try {
    r = await sessionsBench(ctx);
  } catch (e) {
    if (ctx.children.closed) throw e;
    console.log(`\nMEMORY SECTION FAILED: ${(e as Error).message}`);
    return 1;
  }
  console.log(
    `\nproxy memory with idle sessions (VmRSS, each session connected and past GET_FEATURES): ` +
      Object.entries(r.rssKiB).map(([n, kib]) => `${n}: ${mib(kib)}`).join(", "),
  );
  for (const [n, per] of Object.entries(r.perSessionMiB)) {
    goals.push({
      figure: `RSS per idle session, 1 → ${n} sessions`,
      measured: `${mib(r.rssKiB[Number(n)])} with ${n}, ${mib(r.rssKiB[1])} with 1`,
      value: `${per >= 0 ? "+" : ""}${per.toFixed(3)} MiB`,
      goal: `≤ +${PER_SESSION_GOAL_MIB} MiB per session`,
      pass: per <= PER_SESSION_GOAL_MIB,
    });
  }
  return 0;
}
