/* pingpong: a vhost-user front-end that measures request/reply round trips.
 *
 * usage: pingpong --socket PATH [--rounds N] [--warmup W] [--fd] [--request CODE]
 *
 * Sends W warm-up then N timed round trips of a 12+8-byte request with NEED_REPLY (flags 0x9)
 * and waits for the reply (flags 0x5, same request code). With --fd it attaches one eventfd,
 * created once and sent every time, as QEMU does for SET_VRING_CALL. Every round trip is timed
 * with CLOCK_MONOTONIC; the result goes to stdout as one JSON object. Fds coming back in replies
 * are counted and closed. Any protocol mismatch or a reply slower than 5 s is a hard error,
 * so a broken relay fails the bench instead of hanging or reporting nonsense.
 */
#include "vu_msg.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>

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

int main(int argc, char **argv) {
  const char *path = NULL;
  long rounds = 20000, warmup = 2000;
  int with_fd = 0;
  uint32_t request = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--socket") && i + 1 < argc) path = argv[++i];
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atol(argv[++i]);
    else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atol(argv[++i]);
    else if (!strcmp(argv[i], "--request") && i + 1 < argc) request = (uint32_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "--fd")) with_fd = 1;
    else {
      fprintf(stderr, "pingpong: bad argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!path || rounds < 1 || warmup < 0) {
    fprintf(stderr, "usage: pingpong --socket PATH [--rounds N] [--warmup W] [--fd] [--request CODE]\n");
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
  int efd = with_fd ? eventfd(0, EFD_CLOEXEC) : -1;
  if (with_fd && efd < 0) {
    perror("pingpong: eventfd");
    return 1;
  }

  static struct vu_msg req, rep;
  req.request = request;
  req.flags = VU_FLAG_VERSION | VU_FLAG_NEED_REPLY;
  req.size = 8;
  memset(req.payload, 0, 8);
  req.nfds = with_fd;
  req.fds[0] = efd;

  uint64_t *rtt = malloc(sizeof(uint64_t) * (size_t)rounds);
  if (!rtt) return 1;
  long fds_back = 0;
  for (long i = 0; i < warmup + rounds; i++) {
    uint64_t t0 = now_ns();
    if (vu_send(s, &req) < 0) {
      perror("pingpong: send");
      return 1;
    }
    int rc = vu_recv(s, &rep);
    uint64_t t1 = now_ns();
    if (rc <= 0) {
      if (rc == 0) fprintf(stderr, "pingpong: EOF after %ld round trips\n", i);
      else if (errno == EAGAIN) fprintf(stderr, "pingpong: no reply within 5 s (round trip %ld)\n", i);
      else perror("pingpong: recv");
      return 1;
    }
    if (rep.request != request || rep.flags != (VU_FLAG_VERSION | VU_FLAG_REPLY) || rep.size != 8) {
      fprintf(stderr, "pingpong: bad reply request=%u flags=0x%x size=%u\n", rep.request, rep.flags,
              rep.size);
      return 1;
    }
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
