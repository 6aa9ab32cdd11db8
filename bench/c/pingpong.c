/* pingpong: a vhost-user front-end that measures request/reply round trips.
 *
 * usage: pingpong --socket PATH [--rounds N] [--warmup W] [--fd] [--request CODE] [--gap-ms G]
 *
 * Opens the session the way QEMU does (GET_FEATURES, GET_PROTOCOL_FEATURES,
 * SET_PROTOCOL_FEATURES with REPLY_ACK, SET_OWNER): only with REPLY_ACK negotiated does a
 * NEED_REPLY request get an ack, and a protocol-checking relay treats any other ack as
 * unsolicited. Then it sends W warm-up and N timed round trips of a 12+8-byte request with
 * NEED_REPLY (flags 0x9) and waits for the reply (flags 0x5, same request code). With --fd it
 * attaches one eventfd, created once and sent every time, as QEMU does for SET_VRING_CALL.
 * Every round trip is timed with CLOCK_MONOTONIC; the result goes to stdout as one JSON object.
 * Fds coming back in replies are counted and closed. Any protocol mismatch or a reply slower
 * than 5 s is a hard error, so a broken relay fails the bench instead of hanging or reporting
 * nonsense.
 */
#include "vu_msg.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>

#define VU_GET_FEATURES 1u
#define VU_SET_OWNER 3u
#define VU_GET_PROTOCOL_FEATURES 15u
#define VU_SET_PROTOCOL_FEATURES 16u
#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PROTOCOL_F_REPLY_ACK (1ull << 3)

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array, in µs. */
static double pct_us(const uint64_t *sorted, long n, double p) {
  long rank = (long)((p / 100.0) * (double)n + 0.999999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return (double)sorted[rank - 1] / 1000.0;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The relay may need a moment to create its socket: retry ENOENT/ECONNREFUSED for up to 10 s. */
static int connect_retry(const char *path) {
  for (int i = 0; i < 1000; i++) {
    int s = vu_connect(path);
    if (s >= 0 || (errno != ENOENT && errno != ECONNREFUSED)) return s;
    usleep(10000);
  }
  return -1;
}

/* Receives the reply to `request` into rep; prints why and returns -1 if it is not one. */
static int expect_reply(int s, uint32_t request, struct vu_msg *rep, long round) {
  int rc = vu_recv(s, rep);
  if (rc <= 0) {
    if (rc == 0) fprintf(stderr, "pingpong: EOF after %ld round trips\n", round);
    else if (errno == EAGAIN) fprintf(stderr, "pingpong: no reply within 5 s (round trip %ld)\n", round);
    else perror("pingpong: recv");
    return -1;
  }
  if (rep->request != request || rep->flags != (VU_FLAG_VERSION | VU_FLAG_REPLY) || rep->size != 8) {
    fprintf(stderr, "pingpong: bad reply to request %u: request=%u flags=0x%x size=%u\n", request,
            rep->request, rep->flags, rep->size);
    vu_close_fds(rep);
    return -1;
  }
  return 0;
}

/* Sends a request without fds; with a reply expected, returns its u64 in *value. */
static int simple_request(int s, uint32_t request, const uint64_t *arg, uint64_t *value) {
  static struct vu_msg m;
  m.request = request;
  m.flags = VU_FLAG_VERSION;
  m.size = arg ? 8 : 0;
  if (arg) memcpy(m.payload, arg, 8);
  m.nfds = 0;
  if (vu_send(s, &m) < 0) {
    perror("pingpong: send");
    return -1;
  }
  if (!value) return 0;
  if (expect_reply(s, request, &m, 0) < 0) return -1;
  memcpy(value, m.payload, 8);
  vu_close_fds(&m);
  return 0;
}

static int negotiate(int s) {
  uint64_t features, protocol, ack = VU_PROTOCOL_F_REPLY_ACK;
  if (simple_request(s, VU_GET_FEATURES, NULL, &features) < 0) return -1;
  if (!(features & VU_F_PROTOCOL_FEATURES)) {
    fprintf(stderr, "pingpong: back-end lacks VHOST_USER_F_PROTOCOL_FEATURES\n");
    return -1;
  }
  if (simple_request(s, VU_GET_PROTOCOL_FEATURES, NULL, &protocol) < 0) return -1;
  if (!(protocol & VU_PROTOCOL_F_REPLY_ACK)) {
    fprintf(stderr, "pingpong: back-end lacks protocol feature REPLY_ACK\n");
    return -1;
  }
  if (simple_request(s, VU_SET_PROTOCOL_FEATURES, &ack, NULL) < 0) return -1;
  return simple_request(s, VU_SET_OWNER, NULL, NULL);
}

int main(int argc, char **argv) {
  const char *path = NULL;
  long rounds = 20000, warmup = 2000;
  int with_fd = 0;
  uint32_t request = 0;
  long gap_ms = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--socket") && i + 1 < argc) path = argv[++i];
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atol(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atol(argv[++i]);
    else if (!strcmp(argv[i], "--request") && i + 1 < argc) request = (uint32_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "--fd")) with_fd = 1;
    else if (!strcmp(argv[i], "--gap-ms") && i + 1 < argc) gap_ms = atol(argv[++i]);
    else {
      fprintf(stderr, "pingpong: bad argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!path || rounds < 1 || warmup < 0 || gap_ms < 0) {
    fprintf(stderr, "usage: pingpong --socket PATH [--rounds N] [--warmup W] [--fd] [--request CODE] [--gap-ms G]\n");
    return 2;
  }
  /* Default codes are real requests whose 8-byte payload and fd usage match what we send:
   * SET_VRING_NUM (8) without fd, SET_VRING_CALL (13) with one; NEED_REPLY makes them acked. */
  if (request == 0) request = with_fd ? 13 : 8;

  int s = connect_retry(path);
  if (s < 0) {
    perror("pingpong: connect");
    return 1;
  }
  struct timeval tv = {5, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (negotiate(s) < 0) return 1;
  int efd = with_fd ? eventfd(0, EFD_CLOEXEC) : -1;
  if (with_fd && efd < 0) {
    perror("pingpong: eventfd");
    return 1;
  }

  static struct vu_msg req, rep;
  req.request = request;
  req.flags = VU_FLAG_VERSION | VU_FLAG_NEED_REPLY;
  req.size = 8;
  /* SET_VRING_NUM: ring 0, 256 entries. SET_VRING_CALL: ring 0, NOFD bit clear (fd attached). */
  uint32_t ring_state[2] = {0, with_fd ? 0 : 256};
  memcpy(req.payload, ring_state, 8);
  req.nfds = with_fd;
  req.fds[0] = efd;

  uint64_t *rtt = malloc(sizeof(uint64_t) * (size_t)rounds);
  if (!rtt) return 1;
  long fds_back = 0;
  for (long i = 0; i < warmup + rounds; i++) {
    /* --gap-ms: the relay idles between requests, as during a migration's switch-over, where
     * each request comes after the relay has slept (its wake-up is then part of the trip). */
    if (gap_ms > 0) {
      struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
      nanosleep(&gap, NULL);
    }
    uint64_t t0 = now_ns();
    if (vu_send(s, &req) < 0) {
      perror("pingpong: send");
      return 1;
    }
    int rc = expect_reply(s, request, &rep, i);
    uint64_t t1 = now_ns();
    if (rc < 0) return 1;
    if (i >= warmup) {
      rtt[i - warmup] = t1 - t0;
      fds_back += rep.nfds;
    }
    vu_close_fds(&rep);
  }
  close(s);

  double sum = 0;
  for (long i = 0; i < rounds; i++) sum += (double)rtt[i];
  qsort(rtt, (size_t)rounds, sizeof *rtt, cmp_u64);
  printf("{\"n\":%ld,\"fd\":%s,\"request\":%u,\"fds_back\":%ld,\"p50_us\":%.2f,\"p90_us\":%.2f,"
         "\"p99_us\":%.2f,\"p999_us\":%.2f,\"mean_us\":%.2f,\"max_us\":%.2f}\n",
         rounds, with_fd ? "true" : "false", request, fds_back, pct_us(rtt, rounds, 50),
         pct_us(rtt, rounds, 90), pct_us(rtt, rounds, 99), pct_us(rtt, rounds, 99.9),
         sum / (double)rounds / 1000.0, (double)rtt[rounds - 1] / 1000.0);
  return 0;
}
