import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeVirtiofsdState,
  encodeVirtiofsdState,
  summarizeVirtiofsdState,
  type VirtiofsdState,
} from "../../device_state/virtiofsd_state.ts";
import { validateBlob } from "../../device_state/blob_summary.ts";

const opts = {
  writeback: false,
  announceSubmounts: true,
  posixAcl: false,
  supGroupExtension: true,
};

function sample(version: 1 | 2 = 2): VirtiofsdState {
  return {
    version,
    inodes: [
      { id: 1n, refcount: 2n, location: { kind: "root" } },
      { id: 2n, refcount: 1n, location: { kind: "path", parent: 1n, filename: "dir" } },
      { id: 3n, refcount: 1n, location: { kind: "path", parent: 2n, filename: "held.txt" } },
      {
        id: 4n,
        refcount: 1n,
        location: { kind: "full-path", filename: "x/y" },
        fileHandle: { mntId: 7n, handleType: -2, handle: new Uint8Array([1, 2, 3]) },
      },
    ],
    nextInode: 5n,
    handles: [{ id: 0n, inode: 3n, flags: 0o102 }],
    nextHandle: 1n,
    negotiatedOpts: opts,
    mountPaths: version === 2 ? new Map([[7n, "/"]]) : new Map(),
  };
}

Deno.test("virtiofsd state: encode → decode round trip, paths rebuilt from parent links", () => {
  const blob = encodeVirtiofsdState(sample());
  assert.equal(blob[0], 1, "V2 is enum variant 1");
  const d = decodeVirtiofsdState(blob);
  assert.ok(d.ok, d.ok ? "" : d.error);
  const s = summarizeVirtiofsdState(d.state);
  assert.equal(s.version, 2);
  assert.equal(s.inodes, 4);
  assert.deepEqual(s.paths, ["/", "/dir", "/dir/held.txt", "/x/y"]);
  assert.deepEqual(s.openFiles, ["/dir/held.txt (flags 0x42)"]);
  assert.deepEqual(encodeVirtiofsdState(d.state), blob);
});

Deno.test("virtiofsd state: V1 blobs decode too", () => {
  const d = decodeVirtiofsdState(encodeVirtiofsdState(sample(1)));
  assert.ok(d.ok);
  assert.equal(d.state.version, 1);
});

Deno.test("virtiofsd state: truncation, trailing bytes, dangling parents are errors, never exceptions", () => {
  const blob = encodeVirtiofsdState(sample());
  for (let cut = 0; cut < blob.length; cut++) {
    const d = decodeVirtiofsdState(blob.subarray(0, cut));
    assert.equal(d.ok, false, `cut at ${cut}`);
  }
  const longer = new Uint8Array([...blob, 0]);
  assert.match((decodeVirtiofsdState(longer) as { error: string }).error, /follow the state/);
  const bad = sample();
  bad.inodes[2] = { id: 3n, refcount: 1n, location: { kind: "path", parent: 99n, filename: "f" } };
  assert.match(
    (decodeVirtiofsdState(encodeVirtiofsdState(bad)) as { error: string }).error,
    /parent 99/,
  );
});

Deno.test("virtiofsd state: arbitrary bytes never throw", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      decodeVirtiofsdState(bytes);
    }),
    { numRuns: 3000 },
  );
});

Deno.test("--state-buffer validation refuses a corrupted virtiofsd blob and passes unknown formats", () => {
  const blob = encodeVirtiofsdState(sample());
  assert.equal(validateBlob(blob), undefined);
  const corrupt = blob.slice();
  corrupt[1] ^= 0xff;
  assert.match(validateBlob(corrupt) ?? "", /not a valid virtiofsd state/);
  assert.equal(validateBlob(new Uint8Array([0x7f, 1, 2])), undefined);
});
