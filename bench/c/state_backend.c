/* state_backend: a synthetic vhost-user back-end with device state, for the state-stream bench.
 *
 * usage: state_backend [--mib M] <socket-path>
 *
 * Offers VHOST_USER_F_PROTOCOL_FEATURES and the protocol features REPLY_ACK and DEVICE_STATE
 * (bit 19), so a front-end (or a relay that checks negotiation) may send SET_DEVICE_STATE_FD.
 * Like virtiofsd it answers SET_DEVICE_STATE_FD at once with u64 0x100 (ok, no fd of its own)
 * and moves the state on a thread: SAVE writes M MiB (default 256) of the state_pattern.h
 * pattern into the fd and closes it; LOAD reads the fd to EOF and checks pattern and size.
 * CHECK_DEVICE_STATE waits for that thread and answers 0 (success) or 1. Every NEED_REPLY
 * request is acked with 0. Serves connections one after another; runs until killed.
 */
#include "vu_msg.h" /* first: it defines _GNU_SOURCE for accept4 */
#include "state_pattern.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#define VU_GET_FEATURES 1u
#define VU_GET_PROTOCOL_FEATURES 15u
#define VU_SET_DEVICE_STATE_FD 42u
#define VU_CHECK_DEVICE_STATE 43u
#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PROTOCOL_F_REPLY_ACK (1ull << 3)
#define VU_PROTOCOL_F_DEVICE_STATE (1ull << 19)
#define VU_STATE_NO_FD 0x100ull
#define CHUNK (1u << 20)

static uint64_t state_bytes;

struct transfer {
  pthread_t thread;
  int running;
  int fd;
  int load; /* 0 SAVE (we write), 1 LOAD (we read) */
  int ok;
  uint64_t bytes;
};

static void *save_thread(void *arg) {
  struct transfer *t = arg;
  uint8_t *buf = malloc(CHUNK);
  t->ok = buf != NULL;
  for (uint64_t off = 0; t->ok && off < state_bytes;) {
    size_t len = state_bytes - off < CHUNK ? (size_t)(state_bytes - off) : CHUNK;
    pattern_fill(buf, len, off);
    for (size_t done = 0; done < len;) {
      ssize_t n = write(t->fd, buf + done, len - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        perror("state_backend: write state");
        t->ok = 0;
        break;
      }
      done += (size_t)n;
      t->bytes += (uint64_t)n;
    }
    off += len;
  }
  close(t->fd); /* EOF for the reader: the end of the state */
  free(buf);
  return NULL;
}

static void *load_thread(void *arg) {
  struct transfer *t = arg;
  uint8_t *buf = malloc(CHUNK), *scratch = malloc(CHUNK + 16);
  t->ok = buf && scratch;
  while (buf && scratch) {
    ssize_t n = read(t->fd, buf, CHUNK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      perror("state_backend: read state");
      t->ok = 0;
      break;
    }
    if (n == 0) break;
    if (t->ok && !pattern_check(buf, (size_t)n, t->bytes, scratch)) t->ok = 0;
    t->bytes += (uint64_t)n;
  }
  if (t->bytes != state_bytes) t->ok = 0;
  close(t->fd);
  free(buf);
  free(scratch);
  return NULL;
}

static int reply_u64(int conn, uint32_t request, uint64_t value) {
  static struct vu_msg r;
  r.request = request;
  r.flags = VU_FLAG_VERSION | VU_FLAG_REPLY;
  r.size = sizeof value;
  memcpy(r.payload, &value, sizeof value);
  r.nfds = 0;
  return vu_send(conn, &r);
}

/* Waits for a running transfer; returns its success. */
static int finish(struct transfer *t) {
  if (!t->running) return 0;
  pthread_join(t->thread, NULL);
  t->running = 0;
  if (!t->ok) {
    fprintf(stderr, "state_backend: %s failed after %llu bytes\n", t->load ? "LOAD" : "SAVE",
            (unsigned long long)t->bytes);
  }
  return t->ok;
}

/* SET_DEVICE_STATE_FD: start the thread, then answer "ok, no fd" at once (as virtiofsd does:
 * the front-end reads the reply before it reads the pipe). */
static uint64_t start_transfer(struct transfer *t, struct vu_msg *m) {
  uint32_t direction = 0, phase = 0;
  if (m->size != 8 || m->nfds != 1) return 1 | VU_STATE_NO_FD;
  memcpy(&direction, m->payload, 4);
  memcpy(&phase, m->payload + 4, 4);
  if (direction > 1 || phase != 0) return 1 | VU_STATE_NO_FD;
  finish(t);
  *t = (struct transfer){.fd = m->fds[0], .load = (int)direction};
  m->nfds = 0; /* the thread owns the fd now */
  if (pthread_create(&t->thread, NULL, t->load ? load_thread : save_thread, t) != 0) {
    close(t->fd);
    return 1 | VU_STATE_NO_FD;
  }
  t->running = 1;
  return VU_STATE_NO_FD;
}

static void serve(int conn) {
  static struct vu_msg m;
  struct transfer t = {0};
  for (;;) {
    int rc = vu_recv(conn, &m);
    if (rc <= 0) {
      if (rc < 0) perror("state_backend: recv");
      break;
    }
    int sent = 0;
    switch (m.request) {
    case VU_GET_FEATURES:
      sent = reply_u64(conn, m.request, VU_F_PROTOCOL_FEATURES);
      break;
    case VU_GET_PROTOCOL_FEATURES:
      sent = reply_u64(conn, m.request, VU_PROTOCOL_F_REPLY_ACK | VU_PROTOCOL_F_DEVICE_STATE);
      break;
    case VU_SET_DEVICE_STATE_FD:
      sent = reply_u64(conn, m.request, start_transfer(&t, &m));
      break;
    case VU_CHECK_DEVICE_STATE:
      sent = reply_u64(conn, m.request, finish(&t) ? 0 : 1);
      break;
    default:
      if (m.flags & VU_FLAG_NEED_REPLY) sent = reply_u64(conn, m.request, 0);
    }
    vu_close_fds(&m);
    if (sent < 0) {
      perror("state_backend: send");
      break;
    }
  }
  finish(&t);
  close(conn);
}

int main(int argc, char **argv) {
  uint64_t mib = 256;
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoull(argv[++i], NULL, 10);
    else if (!path && argv[i][0] != '-') path = argv[i];
    else {
      fprintf(stderr, "usage: %s [--mib M] <socket-path>\n", argv[0]);
      return 2;
    }
  }
  if (!path) {
    fprintf(stderr, "usage: %s [--mib M] <socket-path>\n", argv[0]);
    return 2;
  }
  state_bytes = mib * 1024 * 1024;
  signal(SIGPIPE, SIG_IGN);
  int ls = vu_listen(path);
  if (ls < 0) {
    perror("state_backend: listen");
    return 1;
  }
  for (;;) {
    int conn = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("state_backend: accept");
      return 1;
    }
    serve(conn);
  }
}
