/**
 * An exclusive advisory lock on a file (flock(2), non-blocking), held through its own open file
 * description: two processes that both take it cannot both hold it, whatever else they use to
 * write the file.
 *
 * @module
 */

import { errno, libc } from "./libc.ts";
import { Errno, SystemError } from "./errors.ts";
import { type OwnedFd, ownedOrThrow, retryEintr } from "./fd.ts";

const O_WRONLY = 0o1;
const O_CREAT = 0o100;
const O_APPEND = 0o2000;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;

const encoder = new TextEncoder();

/**
 * Takes the lock on `path` (created when missing, mode 0644 before umask). Returns the fd that
 * holds it (closing it releases the lock), or `undefined` when another open description holds
 * it: in practice, another process.
 */
export function tryLockFile(path: string): OwnedFd | undefined {
  const cPath = encoder.encode(path + "\0");
  const fd = ownedOrThrow(
    retryEintr(() => libc.open(cPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)),
    "open",
    path,
  );
  const r = retryEintr(() => libc.flock(fd.fd, LOCK_EX | LOCK_NB));
  if (r === 0) return fd;
  const code = errno();
  fd.close();
  if (code === Errno.EAGAIN) return undefined; // EWOULDBLOCK
  throw new SystemError("flock", code, path);
}
