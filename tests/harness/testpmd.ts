/**
 * dpdk-testpmd as a vhost-user-net peer without a guest: `net_vhost` makes it a back-end
 * (it listens on the socket), `net_virtio_user` a front-end (it connects). Both forward in `io`
 * mode and print port statistics every `statsPeriodS`, which {@linkcode Testpmd.stats} parses.
 *
 * @module
 */

import { Child, tail } from "./child.ts";
import { requirePeers } from "./peers.ts";
import { socketExists, waitFor } from "./wait.ts";

/** Options for {@linkcode startTestpmd}. */
export interface TestpmdOptions {
  /** `backend`: vhost-user server on `socketPath`; `frontend`: virtio-user client of it. */
  role: "backend" | "frontend";
  socketPath: string;
  /** Directory for logs. */
  logDir: string;
  /** Label; also the DPDK `--file-prefix` (must be unique per running instance). */
  name?: string;
  /** EAL lcore list; at least two (main + one forwarding core). Default `0,1`. */
  lcores?: string;
  /** Memory without hugepages, MiB; default 256 (1024 takes ~3 s to map at SET_MEM_TABLE). */
  memoryMiB?: number;
  /** Size of the mbuf pool; the default pool (~155k mbufs) does not fit in 256 MiB. Default 8192. */
  totalMbufs?: number;
  /** Send a first burst so io forwarding has something to bounce; default: frontend only. */
  txFirst?: boolean;
  /** Statistics period; default 1 s. Also keeps testpmd from exiting on stdin EOF. */
  statsPeriodS?: number;
  /** Extra `--vdev` arguments, e.g. `queues=1`. */
  vdevArgs?: string;
  /** Extra testpmd application arguments (after `--`). */
  extraArgs?: string[];
  /** How long to wait for start-up; default 20000 ms. */
  startTimeoutMs?: number;
}

/** Port counters as testpmd prints them. */
export interface PortStats {
  port: number;
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
}

/** A running dpdk-testpmd. Disposing it stops it and removes its DPDK runtime directory. */
export class Testpmd implements AsyncDisposable {
  readonly name: string;
  readonly role: "backend" | "frontend";
  readonly socketPath: string;
  readonly argv: string[];
  readonly child: Child;

  constructor(init: {
    name: string;
    role: "backend" | "frontend";
    socketPath: string;
    argv: string[];
    child: Child;
  }) {
    this.name = init.name;
    this.role = init.role;
    this.socketPath = init.socketPath;
    this.argv = init.argv;
    this.child = init.child;
  }

  /** Resolves when testpmd exits. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.child.exited;
  }

  /** testpmd's stdout so far (EAL messages and statistics). */
  output(): Promise<string> {
    return this.child.stdoutText();
  }

  /** The most recent statistics block of each port, parsed from the output. */
  async stats(): Promise<PortStats[]> {
    return parseTestpmdStats(await this.output());
  }

  /** Waits until port 0 has received at least `minRx` packets; returns its stats. */
  async waitForRx(minRx: number, options: { timeoutMs?: number } = {}): Promise<PortStats> {
    return await waitFor(async () => {
      if (this.child.status) {
        throw new Error(
          `${this.name} exited with code ${this.child.status.code}: ${tail(await this.output())}`,
        );
      }
      const port = (await this.stats()).find((s) => s.port === 0);
      return port && port.rxPackets >= minRx ? port : undefined;
    }, {
      what: `${this.name} to receive ${minRx} packets`,
      timeoutMs: options.timeoutMs ?? 20_000,
      intervalMs: 250,
      detail: async () => tail(await this.output(), 15),
    });
  }

  /** SIGTERM (testpmd prints final stats and closes its ports), then SIGKILL; cleans up. */
  async stop(): Promise<Deno.CommandStatus> {
    const status = await this.child.stop({ graceMs: 5000 });
    await Deno.remove(`/var/run/dpdk/${this.name}`, { recursive: true }).catch(() => {});
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Parses testpmd's "NIC statistics for port N" blocks; the last block per port wins.
 *
 * @example
 * ```ts
 * const [port0] = parseTestpmdStats(output);
 * ```
 */
export function parseTestpmdStats(output: string): PortStats[] {
  const byPort = new Map<number, PortStats>();
  const blocks = output.split(/#+ NIC statistics for port /).slice(1);
  for (const block of blocks) {
    const port = Number(block.match(/^(\d+)/)?.[1]);
    const field = (name: string) =>
      Number(block.match(new RegExp(`${name}:\\s*(\\d+)`))?.[1] ?? NaN);
    const stats = {
      port,
      rxPackets: field("RX-packets"),
      txPackets: field("TX-packets"),
      rxBytes: field("RX-bytes"),
      txBytes: field("TX-bytes"),
    };
    if (!Number.isNaN(port) && !Number.isNaN(stats.rxPackets)) byPort.set(port, stats);
  }
  return [...byPort.values()].sort((a, b) => a.port - b.port);
}

let instanceCounter = 0;

/**
 * Starts dpdk-testpmd and waits until it forwards (and, for a back-end, listens).
 *
 * @example
 * ```ts
 * await using backend = await startTestpmd({ role: "backend", socketPath, logDir: dir.path });
 * await using frontend = await startTestpmd({ role: "frontend", socketPath, logDir: dir.path });
 * await backend.waitForRx(1);
 * ```
 */
export async function startTestpmd(options: TestpmdOptions): Promise<Testpmd> {
  const { testpmd } = await requirePeers("testpmd");
  const name = options.name ?? `vup-testpmd-${Deno.pid}-${++instanceCounter}`;
  const vdev = options.role === "backend"
    ? `net_vhost0,iface=${options.socketPath}`
    : `net_virtio_user0,path=${options.socketPath}`;
  const txFirst = options.txFirst ?? options.role === "frontend";
  const args = [
    ...["-l", options.lcores ?? "0,1", "--no-huge", "-m", String(options.memoryMiB ?? 256)],
    ...["--no-pci", "--file-prefix", name, "--log-level", "user1,info"],
    ...["--vdev", options.vdevArgs ? `${vdev},${options.vdevArgs}` : vdev],
    "--",
    ...["--forward-mode=io", `--stats-period=${options.statsPeriodS ?? 1}`],
    `--total-num-mbufs=${options.totalMbufs ?? 8192}`,
    ...(txFirst ? ["--tx-first"] : []),
    ...(options.extraArgs ?? []),
  ];
  if (options.role === "backend") await Deno.remove(options.socketPath).catch(() => {});
  const child = new Child({
    name,
    cmd: testpmd,
    args,
    stdoutPath: `${options.logDir}/${name}.stdout.log`,
    stderrPath: `${options.logDir}/${name}.stderr.log`,
  });
  const handle = new Testpmd({
    name,
    role: options.role,
    socketPath: options.socketPath,
    argv: [testpmd, ...args],
    child,
  });
  try {
    await waitFor(async () => {
      if (child.status) {
        throw new Error(
          `${name} exited with code ${child.status.code}: ${
            tail(`${await child.stdoutText()}${await child.stderrText()}`)
          }`,
        );
      }
      // Non-interactive testpmd starts forwarding once its port is configured: for a front-end
      // that means it has connected to the back-end.
      const forwarding = (await child.stdoutText()).includes("packet forwarding - ports=");
      const listening = options.role === "frontend" || await socketExists(options.socketPath);
      return (forwarding && listening) || undefined;
    }, {
      what: `${name} (${options.role}) to start`,
      timeoutMs: options.startTimeoutMs ?? 20_000,
      detail: async () => tail(`${await child.stdoutText()}${await child.stderrText()}`),
    });
  } catch (error) {
    await handle.stop();
    throw error;
  }
  return handle;
}
