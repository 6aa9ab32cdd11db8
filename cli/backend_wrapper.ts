/**
 * The proxy as a drop-in vhost-user back-end program (QEMU's "Backend program conventions",
 * as libvirt launches virtiofsd): it takes the back-end's own command line, keeps the socket
 * options for itself, starts the real back-end on a private socket with every other argument
 * unchanged, and relays between the two.
 *
 * - `--print-capabilities`: the real back-end's answer, passed through (with `migrate-precopy`
 *   added when the proxy emulates device state, since migration then works through it);
 * - `--socket-path=PATH` / `--socket PATH`: the proxy listens there;
 * - `--fd=N`: an inherited, already listening socket (libvirt creates it), accepted on;
 * - SIGTERM/SIGINT: forwarded to the back-end; both exit promptly. No daemonizing; stdout stays
 *   the back-end's.
 *
 * @module
 */

import type { EngineConfig } from "../relay/engine.ts";
import type { LogRecord } from "../log/record.ts";
import { ioCause } from "../log/tools.ts";
import { listenForStopSignals, startProxy } from "../relay/server.ts";
import { type ControlServer, parseControlRequest, serveControl } from "../relay/control.ts";

/** What the wrapper took from the back-end's command line. */
export interface SplitArgs {
  listen: { path: string } | { fd: number } | undefined;
  printCapabilities: boolean;
  /** Everything else, in order, for the real back-end. */
  rest: string[];
}

/** The back-end's command line is wrong (a usage error, named for the CLI to report as one). */
export class BackendArgsError extends Error {
  override name = "BackendArgsError";
}

/** Separates the socket options (the proxy's) from the back-end's own arguments. */
export function splitBackendArgs(args: readonly string[]): SplitArgs {
  const out: SplitArgs = {
    listen: undefined,
    printCapabilities: false,
    rest: [],
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const [flag, inline] = a.startsWith("--") && a.includes("=")
      ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)]
      : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      const v = args[++i];
      if (v === undefined) throw new BackendArgsError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--socket-path":
      case "--socket":
        out.listen = { path: value() };
        break;
      case "--fd": {
        const v = value();
        const fd = Number(v);
        if (!Number.isInteger(fd) || fd < 0) {
          throw new BackendArgsError(`--fd must be an fd number, not "${v}"`);
        }
        out.listen = { fd };
        break;
      }
      case "--print-capabilities":
        out.printCapabilities = true;
        break;
      default:
        out.rest.push(a);
    }
  }
  return out;
}

/** Options of the wrapper besides the back-end's command line. */
export interface WrapperOptions {
  /** The real back-end program. */
  binary: string;
  /** Engine settings; `listen` and `backend` are filled in by the wrapper. */
  engine: Omit<EngineConfig, "listen" | "backend">;
  /** Mode of the socket made for `--socket-path` (an inherited `--fd` keeps its own). */
  socketMode?: number;
  onRecord: (r: LogRecord) => void;
  /**
   * A control socket (`ctl`): `restart-backend` starts a new back-end process itself (the same
   * program, or `binary` from the request) on a new private socket and swaps it in.
   */
  control?: string;
  /**
   * When the back-end exits while QEMU is connected, start a new one and reconnect it without
   * state instead of ending QEMU's session (its device would be dead until the VM reboots).
   */
  restartOnExit?: boolean;
}

/** A back-end process the wrapper started, on its private socket. */
interface BackendProcess {
  binary: string;
  socket: string;
  child: Deno.ChildProcess;
}

/** How long a new back-end may take to create its socket. */
const BACKEND_START_MS = 10_000;

/** Runs the real back-end behind the proxy; resolves to the exit code to use. */
export async function runBackendWrapper(
  args: readonly string[],
  o: WrapperOptions,
): Promise<number> {
  const split = splitBackendArgs(args);
  if (split.printCapabilities) {
    return await printCapabilities(o.binary, o.engine.deviceState.mode);
  }
  if (split.listen === undefined) {
    console.error(
      "vhost-user-proxy: the back-end needs --socket-path=PATH or --fd=N",
    );
    return 1;
  }
  const listen = "path" in split.listen
    ? {
      path: split.listen.path,
      ...(o.socketMode === undefined ? {} : { mode: o.socketMode }),
    }
    : split.listen;
  if ("fd" in listen && o.socketMode !== undefined && o.socketMode !== 0o600) {
    console.error(
      "vhost-user-proxy: backend: warning: --socket-mode does nothing with an inherited --fd",
    );
  }
  const dir = Deno.makeTempDirSync({ prefix: "vhost-user-proxy-" });
  const privateSocket = `${dir}/backend.sock`;
  let generation = 0;
  const spawnBackend = (binary: string, socket: string): BackendProcess => ({
    binary,
    socket,
    child: new Deno.Command(binary, {
      args: [...split.rest, `--socket-path=${socket}`],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn(),
  });
  let current: BackendProcess;
  try {
    current = spawnBackend(o.binary, privateSocket);
  } catch (e) {
    Deno.removeSync(dir, { recursive: true });
    console.error(
      `vhost-user-proxy: cannot start the back-end "${o.binary}": ${ioCause(e)}`,
    );
    return 1;
  }
  const child = current.child;
  // A signal ends the back-end; its exit then stops the proxy (below), in order.
  let signalled = false;
  const unlisten = listenForStopSignals(() => {
    signalled = true;
    try {
      current.child.kill("SIGTERM");
    } catch {
      // already gone
    }
  });
  let proxy;
  try {
    proxy = await startProxy(
      { ...o.engine, listen, backend: privateSocket },
      o.onRecord,
    );
  } catch (e) {
    console.error(
      `vhost-user-proxy: backend: cannot start the proxy: ${e instanceof Error ? e.message : e}`,
    );
    try {
      child.kill("SIGTERM");
    } catch {
      // the back-end is already gone (it may have failed first)
    }
    await child.status;
    unlisten();
    Deno.removeSync(dir, { recursive: true });
    return 1;
  }
  let control: ControlServer | undefined;
  if (o.control) {
    const running = proxy;
    try {
      control = serveControl(o.control, async (raw) => {
        const request = parseControlRequest(raw);
        if (typeof request === "string") return { ok: false, error: request };
        if (request.cmd === "status") {
          const r = await running.control(request);
          return {
            ...r,
            backendPid: current.child.pid,
            backendBinary: current.binary,
          };
        }
        if (request.backend !== undefined) {
          return {
            ok: false,
            error:
              "the drop-in starts the new back-end itself: give --binary <prog>, not --backend",
          };
        }
        const binary = typeof raw.binary === "string" ? raw.binary : current.binary;
        const socket = `${dir}/backend-${++generation}.sock`;
        let next: BackendProcess;
        try {
          next = spawnBackend(binary, socket);
        } catch (e) {
          return {
            ok: false,
            failedStep: "start",
            error: `cannot start "${binary}": ${ioCause(e)}`,
            rolledBack: "nothing was changed: the old back-end serves on",
          };
        }
        const ready = await waitForSocket(socket, next.child, BACKEND_START_MS);
        if (ready !== undefined) {
          await stopProcess(next.child);
          return {
            ok: false,
            failedStep: "start",
            error: `the new back-end "${binary}" ${ready}`,
            rolledBack: "nothing was changed: the old back-end serves on",
          };
        }
        const r = await running.control({ ...request, backend: socket });
        if (r.ok !== true) {
          await stopProcess(next.child);
          return {
            ...r,
            binary,
            rolledBack: `${r.rolledBack ?? ""}; the new back-end was stopped`,
          };
        }
        const old = current;
        current = next;
        // The old back-end exits once the proxy closed its connection; make sure it does.
        void Promise.race([old.child.status, delay(5000)]).then((st) => {
          if (st === undefined) void stopProcess(old.child);
        });
        return { ...r, binary, backendPid: next.child.pid };
      });
    } catch (e) {
      console.error(
        `vhost-user-proxy: backend: cannot create the control socket "${o.control}": ${ioCause(e)}`,
      );
      await proxy.stop("the control socket could not be created");
      await stopProcess(child);
      unlisten();
      Deno.removeSync(dir, { recursive: true });
      return 1;
    }
  }
  // The back-end ends the run: virtiofsd serves one connection and exits when QEMU leaves. After
  // a restart that is the new back-end; the old one's exit is expected.
  let status: Deno.CommandStatus;
  for (;;) {
    const watched = current;
    status = await watched.child.status;
    if (watched !== current) continue;
    if (!o.restartOnExit || signalled) break;
    const live = ((await proxy.control({ cmd: "status" })).sessions ?? []) as unknown[];
    if (live.length === 0) break; // QEMU left first: the normal end
    console.error(
      `vhost-user-proxy: backend: the back-end "${current.binary}" ${
        exitText(status)
      } with QEMU connected: starting a new one (--restart-on-exit; its state is lost)`,
    );
    const socket = `${dir}/backend-${++generation}.sock`;
    let next: BackendProcess;
    try {
      next = spawnBackend(current.binary, socket);
    } catch (e) {
      console.error(
        `vhost-user-proxy: backend: cannot start "${current.binary}": ${ioCause(e)}`,
      );
      break;
    }
    const ready = await waitForSocket(socket, next.child, BACKEND_START_MS);
    if (ready !== undefined) {
      console.error(`vhost-user-proxy: backend: the new back-end ${ready}`);
      await stopProcess(next.child);
      break;
    }
    const r = await proxy.control({
      cmd: "reconnect-backend",
      backend: socket,
    });
    if (r.ok !== true) {
      console.error(
        `vhost-user-proxy: backend: reconnecting failed: ${r.error}`,
      );
      await stopProcess(next.child);
      break;
    }
    current = next;
  }
  control?.close();
  unlisten();
  await proxy.stop(
    signalled ? "signal received" : `the back-end ${exitText(status)}`,
  );
  Deno.removeSync(dir, { recursive: true });
  if (!signalled) {
    console.error(
      `vhost-user-proxy: the back-end "${o.binary}" ${exitText(status)}`,
    );
  }
  return signalled ? 0 : status.code;
}

/** Waits until `socket` exists; undefined when it does, else why not (the process exited…). */
async function waitForSocket(
  socket: string,
  child: Deno.ChildProcess,
  timeoutMs: number,
): Promise<string | undefined> {
  let exited: Deno.CommandStatus | undefined;
  child.status.then((st) => (exited = st));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) return exitText(exited) + " before creating its socket";
    try {
      if (Deno.statSync(socket).isSocket) return undefined;
    } catch {
      // not yet
    }
    await delay(10);
  }
  return `did not create its socket within ${timeoutMs} ms`;
}

async function stopProcess(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch {
    return; // gone
  }
  const st = await Promise.race([child.status, delay(3000)]);
  if (st === undefined) {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
    await child.status;
  }
}

function delay(ms: number): Promise<undefined> {
  return new Promise((res) => setTimeout(() => res(undefined), ms));
}

/** How a process ended: `exited with code 1`, `was killed by SIGKILL`. */
export function exitText(status: Deno.CommandStatus): string {
  return status.signal !== null
    ? `was killed by ${status.signal} (exit status ${status.code})`
    : `exited with code ${status.code}`;
}

async function printCapabilities(
  binary: string,
  mode: string,
): Promise<number> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(binary, {
      args: ["--print-capabilities"],
      stderr: "inherit",
    })
      .output();
  } catch (e) {
    console.error(
      `vhost-user-proxy: cannot start the back-end "${binary}": ${ioCause(e)}`,
    );
    return 1;
  }
  if (!out.success) {
    console.error(
      `vhost-user-proxy: the back-end "${binary}" --print-capabilities ${exitText(out)}`,
    );
    return out.code;
  }
  const text = new TextDecoder().decode(out.stdout);
  if (mode !== "emulate") {
    await Deno.stdout.write(out.stdout);
    return 0;
  }
  try {
    const caps = JSON.parse(text);
    const features: unknown[] = Array.isArray(caps.features) ? caps.features : [];
    if (!features.includes("migrate-precopy")) features.push("migrate-precopy");
    caps.features = features;
    console.log(JSON.stringify(caps, null, 2));
    return 0;
  } catch {
    // Not JSON we understand: pass it through untouched rather than invent capabilities.
    await Deno.stdout.write(out.stdout);
    return 0;
  }
}
