/**
 * Host side of the guest's serial command agent (`tests/harness/guest/agent.sh`), reached
 * through QEMU's unix-socket chardev on the guest's ttyS1. Every line of the protocol carries
 * the marker `@@VUP` and a command id, so echoes and noise are ignored.
 *
 * @module
 */

import { LineSocket } from "./line_socket.ts";
import { WaitTimeoutError } from "./wait.ts";

/** The outcome of a guest command. */
export interface GuestResult {
  stdout: string;
  stderr: string;
  /** Exit code of the guest shell; 137 when the guest-side timeout killed it. */
  code: number;
}

/** A guest command exited non-zero where success was required. */
export class GuestCommandError extends Error {
  readonly command: string;
  readonly result: GuestResult;

  constructor(command: string, result: GuestResult) {
    super(
      `Guest command failed with code ${result.code}: ${JSON.stringify(command)}: ${
        result.stderr.trim() || result.stdout.trim()
      }`,
    );
    this.name = "GuestCommandError";
    this.command = command;
    this.result = result;
  }
}

/** Options for {@linkcode GuestAgent.run}. */
export interface RunOptions {
  /** Guest-side kill timeout; the host gives up 5 s later. Default 30000 ms. */
  timeoutMs?: number;
}

interface Collecting {
  stdout: string[];
  stderr: string[];
  resolve: (result: GuestResult) => void;
  reject: (error: Error) => void;
}

const MARKER = "@@VUP";

/** A session with the guest agent. */
export class GuestAgent {
  readonly what: string;
  #socket!: LineSocket;
  #nextId = 1;
  #running = new Map<string, Collecting>();
  #pongs = new Set<string>();
  #pongWaiters = new Map<string, () => void>();
  #queue: Promise<unknown> = Promise.resolve();
  #closedError: Error | undefined;

  private constructor(what: string) {
    this.what = what;
  }

  /** Connects to the agent chardev socket (QEMU listens there). */
  static async connect(
    path: string,
    options: { what?: string; timeoutMs?: number; abortReason?: () => string | undefined } = {},
  ): Promise<GuestAgent> {
    const agent = new GuestAgent(options.what ?? "guest agent");
    agent.#socket = await LineSocket.connect(path, {
      what: agent.what,
      timeoutMs: options.timeoutMs,
      abortReason: options.abortReason,
      onLine: (line) => agent.#onLine(line),
      onClose: (error) => agent.#onClose(error),
    });
    return agent;
  }

  /**
   * Pings until the agent answers: the guest's agent loop is up and the serial line works.
   * Pings sent before the guest listens are lost, hence the retries.
   */
  async waitReady(options: { timeoutMs?: number } = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    let attempt = 0;
    while (Date.now() < deadline) {
      if (this.#closedError) throw this.#closedError;
      const token = `${Date.now().toString(36)}-${attempt++}`;
      const answered = new Promise<void>((resolve) => this.#pongWaiters.set(token, resolve));
      await this.#socket.send(`${MARKER} PING ${token}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const gotPong = await Promise.race([
        answered.then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), 500);
        }),
      ]);
      clearTimeout(timer);
      // A late pong for an older token also proves the agent is alive.
      if (gotPong || this.#pongs.size > 0) return;
    }
    throw new WaitTimeoutError(`a pong from ${this.what}`, timeoutMs);
  }

  /**
   * Runs `script` with `sh` in the guest (cwd `/`, stdin `/dev/null`) and returns its output
   * and exit code. Commands run one at a time in call order.
   *
   * @example
   * ```ts
   * const { stdout, code } = await vm.agent.run("cat /mnt/hello.txt");
   * ```
   */
  run(script: string, options: RunOptions = {}): Promise<GuestResult> {
    const result = this.#queue.then(() => this.#runNow(script, options));
    this.#queue = result.catch(() => {});
    return result;
  }

  /** Like {@linkcode run} but throws {@linkcode GuestCommandError} unless the code is 0. */
  async check(script: string, options: RunOptions = {}): Promise<string> {
    const result = await this.run(script, options);
    if (result.code !== 0) throw new GuestCommandError(script, result);
    return result.stdout;
  }

  /** Closes the connection to the chardev (the guest agent keeps running). */
  async close(): Promise<void> {
    await this.#socket?.close();
  }

  async #runNow(script: string, options: RunOptions): Promise<GuestResult> {
    if (this.#closedError) throw this.#closedError;
    const timeoutMs = options.timeoutMs ?? 30_000;
    const id = `c${this.#nextId++}`;
    const encoded = encodeBase64(new TextEncoder().encode(script));
    const guestTimeoutS = Math.max(1, Math.ceil(timeoutMs / 1000));
    const done = new Promise<GuestResult>((resolve, reject) => {
      this.#running.set(id, { stdout: [], stderr: [], resolve, reject });
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new WaitTimeoutError(
              `${this.what} to finish ${JSON.stringify(script)}`,
              timeoutMs + 5000,
            ),
          ),
        timeoutMs + 5000,
      );
    });
    try {
      await this.#socket.send(`${MARKER} RUN ${id} ${guestTimeoutS} ${encoded}`);
      return await Promise.race([done, timeout]);
    } finally {
      clearTimeout(timer);
      this.#running.delete(id);
    }
  }

  #onLine(line: string): void {
    const at = line.indexOf(`${MARKER} `);
    if (at < 0) return;
    const [, kind, id, rest] = line.slice(at).split(" ");
    if (kind === "PONG") {
      this.#pongs.add(id);
      this.#pongWaiters.get(id)?.();
      this.#pongWaiters.delete(id);
      return;
    }
    const command = this.#running.get(id);
    if (!command) return;
    if (kind === "O" && rest) command.stdout.push(rest);
    else if (kind === "E" && rest) command.stderr.push(rest);
    else if (kind === "END") {
      command.resolve({
        stdout: decodeBase64Lines(command.stdout),
        stderr: decodeBase64Lines(command.stderr),
        code: Number(rest),
      });
    }
  }

  #onClose(error?: Error): void {
    this.#closedError = new Error(
      `Connection to ${this.what} closed${error ? `: ${error.message}` : ""}`,
    );
    for (const command of this.#running.values()) command.reject(this.#closedError);
    this.#running.clear();
  }
}

function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** Decodes busybox's line-wrapped base64 output into text. */
function decodeBase64Lines(lines: string[]): string {
  const binary = atob(lines.join(""));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
