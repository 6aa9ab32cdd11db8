// Starts the processes behind each measured path and says where the client connects.
//
//   direct: pingpong -> echo_backend
//   c:      pingpong -> poll_relay -> echo_backend
//   proxy:  pingpong -> bin/vhost-user-proxy -> echo_backend
//   proxyLog: the same with --log <file>: decoding and logging each message
//
// Each path gets its own echo_backend: the back-end serves connections one after another, so
// sharing one would let a relay that keeps its back-end connection open stall the other paths.
// Idle back-ends and relays sleep in accept/poll and cost nothing while another path runs.

import type { PathName } from "./args.ts";
import type { HelperPaths } from "./build.ts";
import { type Child, type Children, waitForSocket } from "./children.ts";

export interface Endpoint {
  name: PathName;
  /** Where pingpong connects. */
  socket: string;
  /** The relay process in the middle (absent for direct). */
  relay?: Child;
}

export interface PathContext {
  children: Children;
  bins: HelperPaths;
  /** Directory for the sockets; removed by the caller. */
  dir: string;
  /** The proxy launcher (bin/vhost-user-proxy). */
  proxyBin: string;
  /** Start back-ends with --echo-fd (see BenchOptions.fdBack). */
  fdBack: boolean;
}

const HELPER_START_MS = 5_000;
// Deno may type-check or fetch npm packages on the proxy's first start.
const PROXY_START_MS = 60_000;

export const PATH_LABELS: Record<PathName, string> = {
  direct: "direct",
  c: "C poll relay",
  proxy: "proxy",
  proxyLog: "proxy --log",
};

async function startBackend(ctx: PathContext, name: PathName): Promise<string> {
  const socket = `${ctx.dir}/${name}-backend.sock`;
  const args = ctx.fdBack ? ["--echo-fd", socket] : [socket];
  const child = ctx.children.start(`echo_backend (${name})`, ctx.bins.echo_backend, args);
  await waitForSocket(socket, child, HELPER_START_MS);
  return socket;
}

export async function startPath(ctx: PathContext, name: PathName): Promise<Endpoint> {
  const backend = await startBackend(ctx, name);
  if (name === "direct") return { name, socket: backend };
  const socket = `${ctx.dir}/${name}.sock`;
  if (name === "c") {
    const relay = ctx.children.start("poll_relay", ctx.bins.poll_relay, [socket, backend]);
    await waitForSocket(socket, relay, HELPER_START_MS);
    return { name, socket, relay };
  }
  const log = name === "proxyLog" ? ["--log", `${ctx.dir}/proxy-bench.jsonl`] : [];
  const relay = ctx.children.start(`vhost-user-proxy (${PATH_LABELS[name]})`, ctx.proxyBin, [
    "run",
    "--listen",
    socket,
    "--backend",
    backend,
    "--quiet",
    ...log,
  ]);
  await waitForSocket(socket, relay, PROXY_START_MS);
  return { name, socket, relay };
}
