/**
 * Test harness for vhost-user-proxy: real QEMU 10, virtiofsd (rust and C), dpdk-testpmd and a
 * busybox guest, installed by `scripts/setup_peers.sh`.
 *
 * @example
 * ```ts
 * await using dir = await TestDir.create("demo");
 * await using vfsd = await startVirtiofsd({
 *   socketPath: dir.join("vfs.sock"),
 *   sharedDir: await dir.mkdir("share"),
 *   logDir: dir.path,
 * });
 * await using vm = await startVm({ dir: dir.path, fs: [{ socketPath: vfsd.socketPath, tag: "myfs" }] });
 * await vm.agent.check("echo hi > /mnt/hi.txt");
 * ```
 *
 * @module
 */

export * from "./child.ts";
export * from "./guest_agent.ts";
export * from "./guest_scripts.ts";
export * from "./migration.ts";
export * from "./peers.ts";
export * from "./qemu.ts";
export * from "./qmp.ts";
export * from "./testpmd.ts";
export * from "./tmp.ts";
export * from "./vhost_user_trace.ts";
export * from "./virtiofsd.ts";
export * from "./wait.ts";
