// Owns every process the bench starts, so that each one is stopped on every exit path
// (normal end, exception, Ctrl-C) and a stuck peer cannot hang the bench.

const OUTPUT_TAIL_BYTES = 8192;

// Deno colours its error messages even into a pipe; the escapes only garble our report.
// deno-lint-ignore no-control-regex
const ANSI_ESCAPE = /\x1b\[[0-9;]*m/g;

/** A long-running child whose output is drained continuously (a full pipe would block it). */
export class Child {
  readonly status: Promise<Deno.CommandStatus>;
  #proc: Deno.ChildProcess;
  #tails = { stdout: "", stderr: "" };
  #exited = false;
  #drained: Promise<void>;

  constructor(readonly name: string, cmd: string, args: string[]) {
    this.#proc = new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    this.status = this.#proc.status.then((s) => {
      this.#exited = true;
      return s;
    });
    this.#drained = Promise.all([
      this.#drain("stdout", this.#proc.stdout),
      this.#drain("stderr", this.#proc.stderr),
    ]).then(() => {});
  }

  get pid(): number {
    return this.#proc.pid;
  }

  get exited(): boolean {
    return this.#exited;
  }

  /** The last few KiB of stdout. */
  get stdout(): string {
    return this.#tails.stdout;
  }

  /** The last few KiB of stderr. */
  get stderr(): string {
    return this.#tails.stderr;
  }

  /** Both tails, for error messages. */
  get output(): string {
    return [this.#tails.stdout.trim(), this.#tails.stderr.trim()].filter((s) => s).join("\n");
  }

  async #drain(which: "stdout" | "stderr", stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = this.#tails[which] +
        decoder.decode(chunk, { stream: true }).replace(ANSI_ESCAPE, "");
      this.#tails[which] = text.slice(-OUTPUT_TAIL_BYTES);
    }
  }

  /** SIGTERM, then SIGKILL if the child is still there after graceMs. */
  async stop(graceMs = 2000): Promise<void> {
    if (!this.#exited) {
      this.#signal("SIGTERM");
      let id: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((r) => id = setTimeout(() => r("timeout"), graceMs));
      if (await Promise.race([this.status, timeout]) === "timeout") this.#signal("SIGKILL");
      clearTimeout(id);
    }
    await this.status;
    await this.#drained;
  }

  #signal(sig: Deno.Signal): void {
    try {
      this.#proc.kill(sig);
    } catch {
      // Already gone between the check and the kill: nothing to stop.
    }
  }
}

/** Thrown by work that notices the bench is being stopped (Ctrl-C, SIGTERM). */
export class Interrupted extends Error {
  constructor() {
    super("interrupted");
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export class Children {
  #live = new Set<Child>();
  #closed = false;

  /** Starts a long-running helper (back-end, relay, proxy). */
  start(name: string, cmd: string, args: string[]): Child {
    // After stopAll (Ctrl-C) the measurement loop may still be unwinding: a process started
    // now would outlive the bench.
    if (this.#closed) throw new Interrupted();
    const child = new Child(name, cmd, args);
    this.#live.add(child);
    return child;
  }

  /** Runs a short-lived program to completion, killing it after timeoutMs. */
  async run(name: string, cmd: string, args: string[], timeoutMs: number): Promise<RunResult> {
    const child = this.start(name, cmd, args);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      void child.stop(0);
    }, timeoutMs);
    const status = await child.status;
    clearTimeout(timer);
    await child.stop();
    this.#live.delete(child);
    // The tails hold the whole output of the short programs run this way (one JSON line).
    return { code: status.code, stdout: child.stdout, stderr: child.stderr.trim(), timedOut };
  }

  /** True once stopAll has begun: no new process may start. */
  get closed(): boolean {
    return this.#closed;
  }

  async stopAll(): Promise<void> {
    this.#closed = true;
    await Promise.all([...this.#live].map((c) => c.stop()));
    this.#live.clear();
  }
}

/** Waits until path is a socket (the child is listening) or fails with the child's output. */
export async function waitForSocket(path: string, child: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exited) {
      const { code } = await child.status;
      throw new Error(
        `${child.name} exited (code ${code}) before creating ${path}` +
          (child.output.trim() ? `:\n${child.output.trim()}` : ""),
      );
    }
    try {
      if (Deno.statSync(path).isSocket) return;
    } catch {
      // Not there yet.
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(
    `${child.name} did not create ${path} within ${timeoutMs} ms` +
      (child.output.trim() ? `:\n${child.output.trim()}` : ""),
  );
}
