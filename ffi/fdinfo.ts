/**
 * What an fd is, for logs: memfd, eventfd, pipe, socket, file. Read from /proc/self/fd links.
 *
 * @module
 */

import { C, libc } from "./libc.ts";

/** The kind of an fd as seen through /proc. */
export type FdKind = "memfd" | "eventfd" | "pipe" | "socket" | "file" | "anon" | "unknown";

/** Classifies an open fd of this process; "unknown" when /proc cannot say. */
export function fdKind(fd: number): FdKind {
  let target: string;
  try {
    target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return "unknown";
  }
  return classifyLink(target);
}

/**
 * Whether `fd` is a pipe: F_GETPIPE_SZ answers only for one. A single fcntl where
 * {@linkcode fdKind} resolves a /proc link (measured cold, after 150 ms idle: ~35 µs a readlink),
 * for the device-state path, which asks it twice per transfer with the VM stopped.
 */
export function isPipe(fd: number): boolean {
  return libc.fcntl(fd, C.F_GETPIPE_SZ, 0n) >= 0;
}

/** Classifies a /proc/<pid>/fd link target. */
export function classifyLink(target: string): FdKind {
  if (target.startsWith("/memfd:")) return "memfd";
  if (target.startsWith("socket:")) return "socket";
  if (target.startsWith("pipe:")) return "pipe";
  if (target === "anon_inode:[eventfd]") return "eventfd";
  if (target.startsWith("anon_inode:")) return "anon";
  if (target.startsWith("/")) return "file";
  return "unknown";
}

/** Number of open fds of a process (default: this one). */
export function countOpenFds(pid: number | "self" = "self"): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** The open fds of a process with their link targets, for leak reports. */
export function listOpenFds(pid: number | "self" = "self"): Map<number, string> {
  const out = new Map<number, string>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    const fd = Number(e.name);
    try {
      out.set(fd, Deno.readLinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed between readdir and readlink
    }
  }
  return out;
}
