/* state_client: the QEMU side of one device-state transfer, for the state-stream bench.
 *
 * usage: state_client [--mib M] [--load] <socket-path>
 *
 * Connects, negotiates like QEMU (GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES
 * with REPLY_ACK|DEVICE_STATE, SET_OWNER), then does what vhost_save_backend_state does
 * (protocol.md §2.4): makes a pipe, sends SET_DEVICE_STATE_FD(SAVE, STOPPED) with the write
 * end, closes its copy, reads the reply (taking the back-end's fd instead if it returned one),
 * reads the pipe to EOF checking the state_pattern.h pattern, and sends CHECK_DEVICE_STATE.
 * With --load it plays the destination instead: sends the read end and writes M MiB (default
 * 256). Prints one JSON line {"direction","bytes","secs","mib_s","ok","check"} where secs runs
 * from sending SET_DEVICE_STATE_FD to CHECK's reply: the whole transfer as QEMU waits for it.
 * Exit 0 if the transfer and CHECK succeeded, 3 if not, 1 on an I/O or protocol error.
 */
#include "vu_msg.h" /* first: it defines _GNU_SOURCE for pipe2 */
#include "state_pattern.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>

#define VU_GET_FEATURES 1u
#define VU_SET_OWNER 3u
#define VU_GET_PROTOCOL_FEATURES 15u
#define VU_SET_PROTOCOL_FEATURES 16u
#define VU_SET_DEVICE_STATE_FD 42u
#define VU_CHECK_DEVICE_STATE 43u
#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PROTOCOL_F_REPLY_ACK (1ull << 3)
#define VU_PROTOCOL_F_DEVICE_STATE (1ull << 19)
#define VU_STATE_NO_FD 0x100ull
#define CHUNK (1u << 20)

static int die(const char *what) {
  perror(what);
  exit(1);
}

static void send_u64(int sock, uint32_t request, uint32_t flags, const void *payload,
                     uint32_t size, int fd) {
  static struct vu_msg m;
  m.request = request;
  m.flags = VU_FLAG_VERSION | flags;
  m.size = size;
  memcpy(m.payload, payload, size);
  m.nfds = fd >= 0 ? 1 : 0;
  m.fds[0] = fd;
  if (vu_send(sock, &m) < 0) die("state_client: send");
}

/* Reads the reply to `request`; returns its u64 and hands out an fd it carried (or -1). */
static uint64_t read_reply(int sock, uint32_t request, int *fd) {
  static struct vu_msg r;
  if (vu_recv(sock, &r) <= 0) die("state_client: recv reply");
  if (r.request != request || r.flags != (VU_FLAG_VERSION | VU_FLAG_REPLY) || r.size != 8) {
    fprintf(stderr, "state_client: bad reply to %u: request %u flags 0x%x size %u\n", request,
            r.request, r.flags, r.size);
    exit(1);
  }
  uint64_t value;
  memcpy(&value, r.payload, 8);
  if (fd) *fd = r.nfds > 0 ? r.fds[0] : -1;
  for (int i = fd && r.nfds > 0 ? 1 : 0; i < r.nfds; i++) close(r.fds[i]);
  return value;
}

static void negotiate(int sock) {
  uint64_t wanted = VU_PROTOCOL_F_REPLY_ACK | VU_PROTOCOL_F_DEVICE_STATE;
  send_u64(sock, VU_GET_FEATURES, 0, NULL, 0, -1);
  if (!(read_reply(sock, VU_GET_FEATURES, NULL) & VU_F_PROTOCOL_FEATURES)) {
    fprintf(stderr, "state_client: back-end lacks VHOST_USER_F_PROTOCOL_FEATURES\n");
    exit(1);
  }
  send_u64(sock, VU_GET_PROTOCOL_FEATURES, 0, NULL, 0, -1);
  uint64_t offered = read_reply(sock, VU_GET_PROTOCOL_FEATURES, NULL);
  if ((offered & wanted) != wanted) {
    fprintf(stderr, "state_client: back-end offers protocol features 0x%llx, lacks 0x%llx\n",
            (unsigned long long)offered, (unsigned long long)(wanted & ~offered));
    exit(1);
  }
  send_u64(sock, VU_SET_PROTOCOL_FEATURES, 0, &wanted, 8, -1);
  /* SET_OWNER with NEED_REPLY doubles as a barrier: negotiation is done when it is acked. */
  send_u64(sock, VU_SET_OWNER, VU_FLAG_NEED_REPLY, NULL, 0, -1);
  if (read_reply(sock, VU_SET_OWNER, NULL) != 0) {
    fprintf(stderr, "state_client: SET_OWNER failed\n");
    exit(1);
  }
}

/* Reads fd to EOF checking the pattern; returns the byte count, *ok cleared on a mismatch. */
static uint64_t drain(int fd, int *ok) {
  uint8_t *buf = malloc(CHUNK), *scratch = malloc(CHUNK + 16);
  uint64_t total = 0;
  if (!buf || !scratch) die("state_client: malloc");
  for (;;) {
    ssize_t n = read(fd, buf, CHUNK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("state_client: read state");
    if (n == 0) break;
    if (*ok && !pattern_check(buf, (size_t)n, total, scratch)) *ok = 0;
    total += (uint64_t)n;
  }
  free(buf);
  free(scratch);
  return total;
}

/* Writes `bytes` of the pattern to fd; returns the count written (short if the reader left). */
static uint64_t fill_fd(int fd, uint64_t bytes) {
  uint8_t *buf = malloc(CHUNK);
  uint64_t off = 0;
  if (!buf) die("state_client: malloc");
  while (off < bytes) {
    size_t len = bytes - off < CHUNK ? (size_t)(bytes - off) : CHUNK;
    pattern_fill(buf, len, off);
    for (size_t done = 0; done < len;) {
      ssize_t n = write(fd, buf + done, len - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        free(buf);
        return off + done;
      }
      done += (size_t)n;
    }
    off += len;
  }
  free(buf);
  return off;
}

int main(int argc, char **argv) {
  uint64_t mib = 256;
  int load = 0;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--load")) load = 1;
    else if (!path && argv[i][0] != '-') path = argv[i];
    else {
      fprintf(stderr, "usage: %s [--mib M] [--load] <socket-path>\n", argv[0]);
      return 2;
    }
  }
  if (!path) {
    fprintf(stderr, "usage: %s [--mib M] [--load] <socket-path>\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  uint64_t expect = mib * 1024 * 1024;
  int sock = vu_connect(path);
  if (sock < 0) die("state_client: connect");
  negotiate(sock);

  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) die("state_client: pipe2");
  int mine = load ? pipe_fds[1] : pipe_fds[0], theirs = load ? pipe_fds[0] : pipe_fds[1];
  uint32_t params[2] = {(uint32_t)load, 0};
  double t0 = now_s();
  send_u64(sock, VU_SET_DEVICE_STATE_FD, 0, params, sizeof params, theirs);
  close(theirs); /* like QEMU: only the back-end's copy may keep the channel open */
  int returned_fd;
  uint64_t reply = read_reply(sock, VU_SET_DEVICE_STATE_FD, &returned_fd);
  if (reply & 0xff) {
    fprintf(stderr, "state_client: back-end refused the transfer (reply 0x%llx)\n",
            (unsigned long long)reply);
    return 3;
  }
  if (!(reply & VU_STATE_NO_FD)) {
    if (returned_fd < 0) {
      fprintf(stderr, "state_client: reply promises an fd but carries none\n");
      return 1;
    }
    close(mine);
    mine = returned_fd;
  } else if (returned_fd >= 0) {
    close(returned_fd);
  }

  int ok = 1;
  uint64_t bytes = load ? fill_fd(mine, expect) : drain(mine, &ok);
  close(mine);
  send_u64(sock, VU_CHECK_DEVICE_STATE, 0, NULL, 0, -1);
  uint64_t check = read_reply(sock, VU_CHECK_DEVICE_STATE, NULL);
  double secs = now_s() - t0;
  if (bytes != expect || check != 0) ok = 0;
  printf("{\"direction\":\"%s\",\"bytes\":%llu,\"secs\":%.4f,\"mib_s\":%.1f,\"ok\":%s,"
         "\"check\":%llu}\n",
         load ? "LOAD" : "SAVE", (unsigned long long)bytes, secs,
         secs > 0 ? (double)bytes / 1048576.0 / secs : 0.0, ok ? "true" : "false",
         (unsigned long long)check);
  close(sock);
  return ok ? 0 : 3;
}
