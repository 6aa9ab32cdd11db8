/**
 * Child processes for the real peers: output goes straight to log files (no pipes for Deno to
 * drain, and the logs survive a crash of the test), and stopping escalates from a polite signal
 * to SIGKILL for the whole process tree.
 *
 * @module
 */

/** How to launch a peer process. */
export interface ChildSpec {
  /** Short label used in error messages, e.g. `virtiofsd-src`. */
  name: string;
  /** Executable path (or a name on PATH). */
  cmd: string;
  args: string[];
  /** File that receives the process's stdout (appended). */
  stdoutPath: string;
  /** File that receives the process's stderr (appended). */
  stderrPath: string;
  /** `"piped"` gives the caller {@linkcode Child.stdin}; default `"null"`. */
  stdin?: "piped" | "null";
  env?: Record<string, string>;
}

/** Options for {@linkcode Child.stop}. */
export interface StopOptions {
  /** First signal; default `SIGTERM`. */
  signal?: Deno.Signal;
  /** How long to wait for the process to exit before SIGKILL; default 3000 ms. */
  graceMs?: number;
}

/** A running peer process. Disposing it stops it. */
export class Child implements AsyncDisposable {
  /** Label given at spawn time. */
  readonly name: string;
  /** Process id. */
  readonly pid: number;
  /** Resolves with the exit status once the process has exited. */
  readonly exited: Promise<Deno.CommandStatus>;
  /** The process's stdin when spawned with `stdin: "piped"`. */
  readonly stdin: WritableStream<Uint8Array> | undefined;
  /** Where stdout and stderr go. */
  readonly stdoutPath: string;
  readonly stderrPath: string;
  #status: Deno.CommandStatus | undefined;
  #process: Deno.ChildProcess;

  /** Spawns `spec`; the returned child is already running. */
  constructor(spec: ChildSpec) {
    this.name = spec.name;
    this.stdoutPath = spec.stdoutPath;
    this.stderrPath = spec.stderrPath;
    // `exec` keeps the pid of the peer itself; the shell only sets up the redirections, which
    // Deno.Command cannot do to a file.
    const command = new Deno.Command("/bin/sh", {
      args: [
        "-c",
        'exec "$0" "$@" >>"$VUP_CHILD_STDOUT" 2>>"$VUP_CHILD_STDERR"',
        spec.cmd,
        ...spec.args,
      ],
      env: { ...spec.env, VUP_CHILD_STDOUT: spec.stdoutPath, VUP_CHILD_STDERR: spec.stderrPath },
      stdin: spec.stdin ?? "null",
      stdout: "null",
      stderr: "null",
    });
    this.#process = command.spawn();
    this.pid = this.#process.pid;
    this.stdin = spec.stdin === "piped" ? this.#process.stdin : undefined;
    this.exited = this.#process.status.then((status) => {
      this.#status = status;
      return status;
    });
  }

  /** The exit status, or `undefined` while the process runs. */
  get status(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  /** Current content of the stderr log. */
  stderrText(): Promise<string> {
    return readTextOrEmpty(this.stderrPath);
  }

  /** Current content of the stdout log. */
  stdoutText(): Promise<string> {
    return readTextOrEmpty(this.stdoutPath);
  }

  /**
   * Stops the process: `signal` (default SIGTERM), then SIGKILL after `graceMs`. Descendants
   * (e.g. virtiofsd's sandboxed child) that outlive it are killed too. Idempotent.
   */
  async stop(options: StopOptions = {}): Promise<Deno.CommandStatus> {
    if (this.#status) return this.#status;
    const family = descendantsOf(this.pid);
    trySignal(this.pid, options.signal ?? "SIGTERM");
    const exitedInTime = await settlesWithin(this.exited, options.graceMs ?? 3000);
    if (!exitedInTime) trySignal(this.pid, "SIGKILL");
    const status = await this.exited;
    for (const pid of family) trySignal(pid, "SIGKILL");
    if (this.stdin) await this.stdin.close().catch(() => {});
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Content of `path`, or `""` if it does not exist (yet). */
export async function readTextOrEmpty(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "";
    throw error;
  }
}

/** The last `lines` lines of `text`, for error messages. */
export function tail(text: string, lines = 20): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Resolves true if `promise` settles within `ms`, false otherwise. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function trySignal(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch {
    // Already gone: nothing to stop.
  }
}

/** All live descendants of `pid`, read from /proc (children of every thread). */
function descendantsOf(pid: number): number[] {
  const found: number[] = [];
  const pending = [pid];
  while (pending.length > 0) {
    const current = pending.pop()!;
    let tasks: Deno.DirEntry[] = [];
    try {
      tasks = [...Deno.readDirSync(`/proc/${current}/task`)];
    } catch {
      continue;
    }
    for (const task of tasks) {
      let children = "";
      try {
        children = Deno.readTextFileSync(`/proc/${current}/task/${task.name}/children`);
      } catch {
        continue;
      }
      for (const child of children.trim().split(/\s+/).filter(Boolean)) {
        const childPid = Number(child);
        found.push(childPid);
        pending.push(childPid);
      }
    }
  }
  return found;
}
