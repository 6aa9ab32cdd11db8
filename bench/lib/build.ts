// Compiles the C helpers in bench/c at run time, so no binaries live in git and they always
// match the sources next to them.

export const HELPERS = [
  "echo_backend",
  "pingpong",
  "poll_relay",
  "state_stream",
  "state_backend",
  "state_client",
] as const;
export type Helper = typeof HELPERS[number];
export type HelperPaths = Record<Helper, string>;

const SRC_DIR = new URL("../c/", import.meta.url).pathname;

/** Builds every helper into outDir with `cc -O2` and returns the binary paths. */
export async function buildHelpers(outDir: string): Promise<HelperPaths> {
  await Deno.mkdir(outDir, { recursive: true });
  const builds = HELPERS.map(async (name): Promise<[Helper, string]> => {
    const bin = `${outDir}/${name}`;
    const { code, stderr } = await new Deno.Command("cc", {
      args: ["-O2", "-Wall", "-Wextra", "-o", bin, `${SRC_DIR}${name}.c`],
      stdout: "null",
      stderr: "piped",
    }).output();
    const diagnostics = new TextDecoder().decode(stderr).trim();
    if (code !== 0) throw new Error(`cc failed for ${name}.c:\n${diagnostics}`);
    // Warnings are bugs waiting to happen in code this small; show them but carry on.
    if (diagnostics !== "") console.error(`warning: cc ${name}.c:\n${diagnostics}`);
    return [name, bin];
  });
  return Object.fromEntries(await Promise.all(builds)) as HelperPaths;
}
