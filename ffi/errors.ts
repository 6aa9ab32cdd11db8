/**
 * errno as typed errors. EAGAIN and EINTR never become errors: callers see them as values
 * (`wouldBlock`), because they are the normal flow of a nonblocking relay.
 *
 * @module
 */

/** errno numbers (Linux x86_64) the proxy distinguishes. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EEXIST: 17,
  ENOTDIR: 20,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  ESPIPE: 29,
  EPIPE: 32,
  ENAMETOOLONG: 36,
  ENOTSOCK: 88,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EINPROGRESS: 115,
} as const;

const names = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

/** The symbolic name of an errno value, e.g. `ECONNRESET`, or `errno 123`. */
export function errnoName(value: number): string {
  return names.get(value) ?? `errno ${value}`;
}

/** A failed system call: carries the call, the errno and what it was doing. */
export class SystemError extends Error {
  /** The libc function that failed, e.g. `sendmsg`. */
  readonly syscall: string;
  /** The raw errno value. */
  readonly errno: number;
  /** The symbolic errno, e.g. `EPIPE`. */
  readonly code: string;

  constructor(syscall: string, errno: number, context?: string) {
    const code = errnoName(errno);
    super(`${syscall} failed${context ? ` (${context})` : ""}: ${code}`);
    this.name = "SystemError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }

  /** True when the peer went away: the connection is over, not the proxy. */
  get isDisconnect(): boolean {
    return this.errno === Errno.EPIPE || this.errno === Errno.ECONNRESET ||
      this.errno === Errno.ENOTCONN || this.errno === Errno.ECONNABORTED;
  }
}
