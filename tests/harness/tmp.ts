/**
 * One scratch directory per test, short enough for unix socket paths (108 bytes), removed on
 * dispose unless `VUP_KEEP_TMP=1` (for post-mortems).
 *
 * @module
 */

/** A per-test scratch directory. */
export class TestDir implements AsyncDisposable {
  /** Absolute path of the directory. */
  readonly path: string;

  private constructor(path: string) {
    this.path = path;
  }

  /**
   * Creates `/tmp/vup-<label>-XXXXXX`.
   *
   * @example
   * ```ts
   * await using dir = await TestDir.create("direct");
   * const sock = dir.join("vfs.sock");
   * ```
   */
  static async create(label: string): Promise<TestDir> {
    return new TestDir(await Deno.makeTempDir({ dir: "/tmp", prefix: `vup-${label}-` }));
  }

  /** `path` joined with `parts` by `/`. */
  join(...parts: string[]): string {
    return [this.path, ...parts].join("/");
  }

  /** Creates (recursively) and returns a subdirectory. */
  async mkdir(...parts: string[]): Promise<string> {
    const path = this.join(...parts);
    await Deno.mkdir(path, { recursive: true });
    return path;
  }

  /** Removes the directory tree (kept when `VUP_KEEP_TMP=1`). */
  async remove(): Promise<void> {
    if (Deno.env.get("VUP_KEEP_TMP") === "1") {
      console.error(`[harness] keeping ${this.path} (VUP_KEEP_TMP=1)`);
      return;
    }
    await Deno.remove(this.path, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.remove();
  }
}
