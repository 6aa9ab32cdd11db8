/**
 * Request names as the vhost-user spec lists them (protocol.md §1.5 and §1.6), transcribed from
 * the spec rather than taken from the proxy's catalogue: tests and the harness compare the code
 * under test against this, so it must not depend on it.
 *
 * @module
 */

/** Front-end requests, indexed by code (0 is QEMU's NONE; 1..45 the spec's list, 45 from the newest text). */
export const SPEC_FRONT_END_NAMES: readonly string[] = [
  "NONE",
  "GET_FEATURES",
  "SET_FEATURES",
  "SET_OWNER",
  "RESET_OWNER",
  "SET_MEM_TABLE",
  "SET_LOG_BASE",
  "SET_LOG_FD",
  "SET_VRING_NUM",
  "SET_VRING_ADDR",
  "SET_VRING_BASE",
  "GET_VRING_BASE",
  "SET_VRING_KICK",
  "SET_VRING_CALL",
  "SET_VRING_ERR",
  "GET_PROTOCOL_FEATURES",
  "SET_PROTOCOL_FEATURES",
  "GET_QUEUE_NUM",
  "SET_VRING_ENABLE",
  "SEND_RARP",
  "NET_SET_MTU",
  "SET_BACKEND_REQ_FD",
  "IOTLB_MSG",
  "SET_VRING_ENDIAN",
  "GET_CONFIG",
  "SET_CONFIG",
  "CREATE_CRYPTO_SESSION",
  "CLOSE_CRYPTO_SESSION",
  "POSTCOPY_ADVISE",
  "POSTCOPY_LISTEN",
  "POSTCOPY_END",
  "GET_INFLIGHT_FD",
  "SET_INFLIGHT_FD",
  "GPU_SET_SOCKET",
  "RESET_DEVICE",
  "VRING_KICK",
  "GET_MAX_MEM_SLOTS",
  "ADD_MEM_REG",
  "REM_MEM_REG",
  "SET_STATUS",
  "GET_STATUS",
  "GET_SHARED_OBJECT",
  "SET_DEVICE_STATE_FD",
  "CHECK_DEVICE_STATE",
  "GET_SHMEM_CONFIG",
  // The newest text (protocol.md §1.10).
  "GET_VRING_BASE_SKIP_DRAIN",
];

/** Back-end-channel requests, indexed by code (1..10; 0 unused). */
export const SPEC_BACKEND_NAMES: readonly string[] = [
  "NONE",
  "BACKEND_IOTLB_MSG",
  "BACKEND_CONFIG_CHANGE_MSG",
  "BACKEND_VRING_HOST_NOTIFIER_MSG",
  "BACKEND_VRING_CALL",
  "BACKEND_VRING_ERR",
  "BACKEND_SHARED_OBJECT_ADD",
  "BACKEND_SHARED_OBJECT_REMOVE",
  "BACKEND_SHARED_OBJECT_LOOKUP",
  "BACKEND_SHMEM_MAP",
  "BACKEND_SHMEM_UNMAP",
];
