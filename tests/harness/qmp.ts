/**
 * A minimal QMP client: greeting and capabilities handshake, commands matched to replies by
 * id, and an event history that tests can wait on.
 *
 * @module
 */

import { LineSocket } from "./line_socket.ts";
import { WaitTimeoutError } from "./wait.ts";

/** A JSON value as QMP sends it. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object. */
export type JsonObject = { [key: string]: Json };

/** An asynchronous QMP event. */
export interface QmpEvent {
  event: string;
  data: JsonObject;
  timestamp: { seconds: number; microseconds: number };
}

/** QEMU answered a command with an error. */
export class QmpError extends Error {
  /** The command that failed. */
  readonly command: string;
  /** QMP error class, e.g. `GenericError`. */
  readonly errorClass: string;
  /** QEMU's description. */
  readonly desc: string;

  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP command "${command}" failed: ${errorClass}: ${desc}`);
    this.name = "QmpError";
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** The QMP connection is gone (QEMU exited or closed it). */
export class QmpClosedError extends Error {
  constructor(what: string, command?: string) {
    super(`${what} closed${command ? ` before replying to "${command}"` : ""}`);
    this.name = "QmpClosedError";
  }
}

/** Options for {@linkcode QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Label for errors; default `QMP`. */
  what?: string;
  timeoutMs?: number;
  /** Stop retrying when this returns a reason (e.g. "QEMU exited with code 1"). */
  abortReason?: () => string | undefined;
}

interface PendingCommand {
  command: string;
  resolve: (value: Json) => void;
  reject: (error: Error) => void;
}

interface EventWaiter {
  name: string;
  predicate: (event: QmpEvent) => boolean;
  resolve: (event: QmpEvent) => void;
  reject: (error: Error) => void;
}

/** A QMP session on a unix socket. */
export class QmpClient {
  readonly what: string;
  /** Every event received so far, in order. */
  readonly events: QmpEvent[] = [];
  #socket!: LineSocket;
  #nextId = 1;
  #pending = new Map<string, PendingCommand>();
  #waiters: EventWaiter[] = [];
  #consumed = new Set<QmpEvent>();
  #greeting!: { resolve: (value: JsonObject) => void; reject: (error: Error) => void };
  #closed = false;

  private constructor(what: string) {
    this.what = what;
  }

  /**
   * Connects to QEMU's QMP socket and leaves capabilities negotiation mode.
   *
   * @example
   * ```ts
   * const qmp = await QmpClient.connect("/tmp/vup-x/qmp.sock");
   * const status = await qmp.execute("query-status");
   * ```
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(options.what ?? "QMP");
    const greeting = new Promise<JsonObject>((resolve, reject) => {
      client.#greeting = { resolve, reject };
    });
    client.#socket = await LineSocket.connect(path, {
      what: client.what,
      timeoutMs: options.timeoutMs,
      abortReason: options.abortReason,
      onLine: (line) => client.#onLine(line),
      onClose: () => client.#onClose(),
    });
    await greeting;
    await client.execute("qmp_capabilities");
    return client;
  }

  /** Runs `command` and returns its `return` value; throws {@linkcode QmpError} on error. */
  execute<T extends Json = Json>(command: string, args?: JsonObject): Promise<T> {
    if (this.#closed) return Promise.reject(new QmpClosedError(this.what, command));
    const id = `vup-${this.#nextId++}`;
    const reply = new Promise<Json>((resolve, reject) => {
      this.#pending.set(id, { command, resolve, reject });
    });
    const message: JsonObject = { execute: command, id };
    if (args) message.arguments = args;
    this.#socket.send(JSON.stringify(message)).catch((error) => {
      this.#pending.get(id)?.reject(error as Error);
      this.#pending.delete(id);
    });
    return reply as Promise<T>;
  }

  /**
   * Waits for the first not-yet-consumed event called `name` (already received or future) that
   * satisfies `predicate`, and consumes it, so consecutive waits see consecutive events.
   */
  waitEvent(
    name: string,
    options: { timeoutMs?: number; predicate?: (event: QmpEvent) => boolean } = {},
  ): Promise<QmpEvent> {
    const predicate = options.predicate ?? (() => true);
    const past = this.events.find((e) =>
      e.event === name && !this.#consumed.has(e) && predicate(e)
    );
    if (past) {
      this.#consumed.add(past);
      return Promise.resolve(past);
    }
    if (this.#closed) return Promise.reject(new QmpClosedError(this.what, `event ${name}`));
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise<QmpEvent>((resolve, reject) => {
      const waiter: EventWaiter = {
        name,
        predicate,
        resolve: (event) => {
          clearTimeout(timer);
          resolve(event);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new WaitTimeoutError(`QMP event ${name} from ${this.what}`, timeoutMs));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** True once the connection is closed. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Closes the connection. */
  async close(): Promise<void> {
    await this.#socket?.close();
  }

  #onLine(line: string): void {
    let message: JsonObject;
    try {
      message = JSON.parse(line) as JsonObject;
    } catch {
      return; // QMP only sends JSON lines; ignore anything else.
    }
    if ("QMP" in message) {
      this.#greeting.resolve(message);
    } else if ("event" in message) {
      this.#onEvent(message as unknown as QmpEvent);
    } else if (typeof message.id === "string" && this.#pending.has(message.id)) {
      const pending = this.#pending.get(message.id)!;
      this.#pending.delete(message.id);
      if ("error" in message) {
        const error = message.error as JsonObject;
        pending.reject(new QmpError(pending.command, String(error.class), String(error.desc)));
      } else {
        pending.resolve(message.return ?? null);
      }
    }
  }

  #onEvent(event: QmpEvent): void {
    event.data ??= {};
    this.events.push(event);
    const waiter = this.#waiters.find((w) => w.name === event.event && w.predicate(event));
    if (waiter) {
      this.#waiters = this.#waiters.filter((w) => w !== waiter);
      this.#consumed.add(event);
      waiter.resolve(event);
    }
  }

  #onClose(): void {
    this.#closed = true;
    this.#greeting?.reject(new QmpClosedError(this.what, "greeting"));
    for (const pending of this.#pending.values()) {
      pending.reject(new QmpClosedError(this.what, pending.command));
    }
    this.#pending.clear();
    for (const waiter of this.#waiters) {
      waiter.reject(new QmpClosedError(this.what, `event ${waiter.name}`));
    }
    this.#waiters = [];
  }
}
