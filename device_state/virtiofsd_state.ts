/**
 * virtiofsd's device-state blob, decoded: what a migrating virtio-fs back-end knows (inodes the
 * guest looked up, open handles, negotiated FUSE options).
 *
 * Format (virtiofsd ≥ 1.11, `src/passthrough/device_state/serialized.rs`): serde + postcard,
 * the whole blob one value of `enum PassthroughFs { V1(PassthroughFsV1), V2(PassthroughFsV2) }`.
 * Postcard writes enum variants and lengths as LEB128 varints, unsigned integers as varints,
 * signed ones zig-zag, bool as one byte, Option as 0/1 then the value, strings as length + UTF-8.
 *
 * @module
 */

/** Where the destination finds an inode. */
export type InodeLocation =
  | { kind: "root" }
  | { kind: "path"; parent: bigint; filename: string }
  | { kind: "invalid" }
  | { kind: "full-path"; filename: string }
  | { kind: "file-handle"; handle: FileHandle };

/** A `name_to_handle_at` handle as virtiofsd serialises it. */
export interface FileHandle {
  mntId: bigint;
  handleType: number;
  handle: Uint8Array;
}

/** One inode the guest holds. */
export interface StateInode {
  id: bigint;
  refcount: bigint;
  location: InodeLocation;
  fileHandle?: FileHandle;
}

/** One open file. */
export interface StateHandle {
  id: bigint;
  inode: bigint;
  /** open(2) flags. */
  flags: number;
}

/** FUSE INIT results the destination restores without a guest re-INIT. */
export interface NegotiatedOpts {
  writeback: boolean;
  announceSubmounts: boolean;
  posixAcl: boolean;
  supGroupExtension: boolean;
}

/** The decoded blob. */
export interface VirtiofsdState {
  version: 1 | 2;
  inodes: StateInode[];
  nextInode: bigint;
  handles: StateHandle[];
  nextHandle: bigint;
  negotiatedOpts: NegotiatedOpts;
  /** V2 only: source mount id → path in the shared directory. */
  mountPaths: Map<bigint, string>;
}

/** Decoding outcome: a value, never an exception. */
export type DecodeStateResult =
  | { ok: true; state: VirtiofsdState }
  | { ok: false; error: string };

class Reader {
  #pos = 0;
  constructor(readonly bytes: Uint8Array) {}

  get pos(): number {
    return this.#pos;
  }

  get done(): boolean {
    return this.#pos === this.bytes.length;
  }

  byte(what: string): number {
    if (this.#pos >= this.bytes.length) {
      throw new RangeError(`blob ends at byte ${this.#pos} while reading ${what}`);
    }
    return this.bytes[this.#pos++];
  }

  varint(what: string): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.byte(what);
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
    }
    throw new RangeError(`varint for ${what} at byte ${this.#pos} is too long`);
  }

  u64(what: string): bigint {
    const v = this.varint(what);
    if (v >= 1n << 64n) throw new RangeError(`${what} does not fit in u64`);
    return v;
  }

  i32(what: string): number {
    const z = this.varint(what);
    const v = (z >> 1n) ^ -(z & 1n);
    if (v < -(2n ** 31n) || v >= 2n ** 31n) throw new RangeError(`${what} does not fit in i32`);
    return Number(v);
  }

  length(what: string): number {
    const n = this.varint(what);
    if (n > BigInt(this.bytes.length - this.#pos)) {
      throw new RangeError(
        `${what} claims ${n} elements but only ${this.bytes.length - this.#pos} bytes remain`,
      );
    }
    return Number(n);
  }

  bool(what: string): boolean {
    const b = this.byte(what);
    if (b > 1) throw new RangeError(`${what} is ${b}, not a bool`);
    return b === 1;
  }

  bytesOf(what: string): Uint8Array {
    const n = this.length(what);
    const out = this.bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  string(what: string): string {
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.bytesOf(what));
    } catch (e) {
      if (e instanceof RangeError) throw e;
      throw new RangeError(`${what} is not valid UTF-8`);
    }
  }
}

function fileHandle(r: Reader): FileHandle {
  return {
    mntId: r.u64("file handle mnt_id"),
    handleType: r.i32("file handle type"),
    handle: r.bytesOf("file handle bytes").slice(),
  };
}

function location(r: Reader): InodeLocation {
  const variant = r.varint("inode location variant");
  switch (variant) {
    case 0n:
      return { kind: "root" };
    case 1n:
      return { kind: "path", parent: r.u64("location parent"), filename: r.string("filename") };
    case 2n:
      return { kind: "invalid" };
    case 3n:
      return { kind: "full-path", filename: r.string("filename") };
    case 4n:
      return { kind: "file-handle", handle: fileHandle(r) };
    default:
      throw new RangeError(`inode location variant ${variant} is unknown`);
  }
}

function v1(r: Reader): Omit<VirtiofsdState, "version" | "mountPaths"> {
  const inodes: StateInode[] = [];
  const nInodes = r.length("inode count");
  for (let i = 0; i < nInodes; i++) {
    const inode: StateInode = {
      id: r.u64("inode id"),
      refcount: r.u64("inode refcount"),
      location: location(r),
    };
    if (r.bool("file handle option")) inode.fileHandle = fileHandle(r);
    inodes.push(inode);
  }
  const nextInode = r.u64("next_inode");
  const handles: StateHandle[] = [];
  const nHandles = r.length("handle count");
  for (let i = 0; i < nHandles; i++) {
    const id = r.u64("handle id");
    const inode = r.u64("handle inode");
    const source = r.varint("handle source variant");
    if (source !== 0n) throw new RangeError(`handle source variant ${source} is unknown`);
    handles.push({ id, inode, flags: r.i32("open flags") });
  }
  const nextHandle = r.u64("next_handle");
  const negotiatedOpts: NegotiatedOpts = {
    writeback: r.bool("writeback"),
    announceSubmounts: r.bool("announce_submounts"),
    posixAcl: r.bool("posix_acl"),
    supGroupExtension: r.bool("sup_group_extension"),
  };
  return { inodes, nextInode, handles, nextHandle, negotiatedOpts };
}

/** Decodes a whole blob; trailing bytes are an error (postcard blobs are exact). */
export function decodeVirtiofsdState(blob: Uint8Array): DecodeStateResult {
  const r = new Reader(blob);
  try {
    const variant = r.varint("version variant");
    let state: VirtiofsdState;
    if (variant === 0n) {
      state = { version: 1, ...v1(r), mountPaths: new Map() };
    } else if (variant === 1n) {
      const base = v1(r);
      const mountPaths = new Map<bigint, string>();
      const n = r.length("mount path count");
      for (let i = 0; i < n; i++) mountPaths.set(r.u64("mount id"), r.string("mount path"));
      state = { version: 2, ...base, mountPaths };
    } else {
      return {
        ok: false,
        error: `version variant ${variant} is unknown (expected 0 = V1 or 1 = V2)`,
      };
    }
    if (!r.done) {
      return { ok: false, error: `${blob.length - r.pos} bytes follow the state at byte ${r.pos}` };
    }
    const problem = checkReferences(state);
    if (problem) return { ok: false, error: problem };
    return { ok: true, state };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

function checkReferences(state: VirtiofsdState): string | undefined {
  const ids = new Set(state.inodes.map((i) => i.id));
  for (const i of state.inodes) {
    if (i.location.kind === "path" && !ids.has(i.location.parent)) {
      return `inode ${i.id} names parent ${i.location.parent}, which is not in the state`;
    }
  }
  for (const h of state.handles) {
    if (!ids.has(h.inode)) {
      return `handle ${h.id} refers to inode ${h.inode}, which is not in the state`;
    }
  }
  return undefined;
}

/** Paths of the inodes, rebuilt from parent links (root = "/"). */
export function inodePaths(state: VirtiofsdState): Map<bigint, string> {
  const byId = new Map(state.inodes.map((i) => [i.id, i]));
  const memo = new Map<bigint, string>();
  const pathOf = (id: bigint, depth: number): string => {
    const cached = memo.get(id);
    if (cached !== undefined) return cached;
    const inode = byId.get(id);
    let p: string;
    if (!inode || depth > 4096) p = `<inode ${id}>`;
    else {
      const loc = inode.location;
      switch (loc.kind) {
        case "root":
          p = "/";
          break;
        case "path": {
          const parent = pathOf(loc.parent, depth + 1);
          p = parent.endsWith("/") ? parent + loc.filename : `${parent}/${loc.filename}`;
          break;
        }
        case "full-path":
          p = "/" + loc.filename;
          break;
        case "invalid":
          p = `<invalid inode ${id}>`;
          break;
        case "file-handle":
          p = `<file handle of inode ${id}>`;
          break;
      }
    }
    memo.set(id, p);
    return p;
  };
  for (const i of state.inodes) pathOf(i.id, 0);
  return memo;
}

/** A JSON-safe summary for logs and `state show`. */
export interface VirtiofsdStateSummary {
  format: "virtiofsd";
  version: number;
  inodes: number;
  handles: number;
  nextInode: string;
  nextHandle: string;
  negotiatedOpts: NegotiatedOpts;
  mountPaths: number;
  /** The first paths the guest holds, in inode order. */
  paths: string[];
  /** Open handles as "path (flags)". */
  openFiles: string[];
}

/** Summarises a decoded state, listing at most `maxPaths` paths. */
export function summarizeVirtiofsdState(
  state: VirtiofsdState,
  maxPaths = 20,
): VirtiofsdStateSummary {
  const paths = inodePaths(state);
  return {
    format: "virtiofsd",
    version: state.version,
    inodes: state.inodes.length,
    handles: state.handles.length,
    nextInode: state.nextInode.toString(),
    nextHandle: state.nextHandle.toString(),
    negotiatedOpts: state.negotiatedOpts,
    mountPaths: state.mountPaths.size,
    paths: state.inodes.slice(0, maxPaths).map((i) => paths.get(i.id) ?? `<inode ${i.id}>`),
    openFiles: state.handles.slice(0, maxPaths).map((h) =>
      `${paths.get(h.inode) ?? `<inode ${h.inode}>`} (flags 0x${(h.flags >>> 0).toString(16)})`
    ),
  };
}

/** Encodes a state (the inverse of decode; used by tests and the synthetic back-end). */
export function encodeVirtiofsdState(state: VirtiofsdState): Uint8Array {
  const out: number[] = [];
  const varint = (v: bigint) => {
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) b |= 0x80;
      out.push(b);
    } while (v > 0n);
  };
  const i32 = (v: number) => varint(BigInt((v << 1) ^ (v >> 31)) & 0xffffffffn);
  const bytes = (b: Uint8Array) => {
    varint(BigInt(b.length));
    out.push(...b);
  };
  const str = (s: string) => bytes(new TextEncoder().encode(s));
  const fh = (h: FileHandle) => {
    varint(h.mntId);
    i32(h.handleType);
    bytes(h.handle);
  };
  varint(state.version === 1 ? 0n : 1n);
  varint(BigInt(state.inodes.length));
  for (const i of state.inodes) {
    varint(i.id);
    varint(i.refcount);
    const l = i.location;
    switch (l.kind) {
      case "root":
        varint(0n);
        break;
      case "path":
        varint(1n);
        varint(l.parent);
        str(l.filename);
        break;
      case "invalid":
        varint(2n);
        break;
      case "full-path":
        varint(3n);
        str(l.filename);
        break;
      case "file-handle":
        varint(4n);
        fh(l.handle);
        break;
    }
    if (i.fileHandle) {
      out.push(1);
      fh(i.fileHandle);
    } else out.push(0);
  }
  varint(state.nextInode);
  varint(BigInt(state.handles.length));
  for (const h of state.handles) {
    varint(h.id);
    varint(h.inode);
    varint(0n);
    i32(h.flags);
  }
  varint(state.nextHandle);
  const o = state.negotiatedOpts;
  for (const b of [o.writeback, o.announceSubmounts, o.posixAcl, o.supGroupExtension]) {
    out.push(b ? 1 : 0);
  }
  if (state.version === 2) {
    varint(BigInt(state.mountPaths.size));
    for (const [id, p] of state.mountPaths) {
      varint(id);
      str(p);
    }
  }
  return new Uint8Array(out);
}
