/* state_stream: pushes or drains a large byte stream, for the device-state transfer bench.
 *
 * usage: state_stream write [--fd N] [--mib M] [--chunk KIB]
 *        state_stream read  [--fd N] [--mib M] [--chunk KIB]
 *
 * SET_DEVICE_STATE_FD hands the back-end one end of a pipe and the state streams through it
 * until EOF (protocol.md §2). This program is either end of such a stream: `write` sends M MiB
 * (default 256) of a position-dependent pattern to fd N (default 1) and closes it; `read`
 * drains fd N (default 0) until EOF, checks the pattern and byte count and prints
 * {"mode","bytes","secs","mib_s","ok"} as JSON on stdout. Timing starts at the first byte for
 * the reader, so process start-up is not counted. Direct: `state_stream write | state_stream
 * read`. Relayed: put the relay between the two (or pass the fds through SET_DEVICE_STATE_FD)
 * and compare mib_s.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The pattern is the little-endian 64-bit byte offset of each 8-byte word: cheap to produce,
 * and it catches reordered, dropped or duplicated chunks, not just a wrong total. */
static void fill(uint8_t *buf, size_t len, uint64_t off) {
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = off + i;
    memcpy(buf + i, &v, 8);
  }
}

static int do_write(int fd, uint64_t total, size_t chunk, uint8_t *buf) {
  for (uint64_t off = 0; off < total;) {
    size_t len = total - off < chunk ? (size_t)(total - off) : chunk;
    fill(buf, len, off);
    for (size_t done = 0; done < len;) {
      ssize_t n = write(fd, buf + done, len - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        perror("state_stream: write");
        return 1;
      }
      done += (size_t)n;
    }
    off += len;
  }
  close(fd);
  return 0;
}

static int do_read(int fd, uint64_t expect, size_t chunk, uint8_t *buf) {
  uint8_t *want = malloc(chunk + 16); /* fill() may write up to 7 bytes past skew + n */
  uint64_t total = 0;
  int ok = 1;
  double t0 = 0;
  for (;;) {
    ssize_t n = read(fd, buf, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      perror("state_stream: read");
      return 1;
    }
    if (n == 0) break;
    if (total == 0) t0 = now_s();
    /* Compare against the pattern from the aligned word at or before `total`. */
    uint64_t base = total & ~(uint64_t)7;
    size_t skew = (size_t)(total - base);
    fill(want, skew + (size_t)n, base);
    if (ok && memcmp(buf, want + skew, (size_t)n) != 0) ok = 0;
    total += (uint64_t)n;
  }
  double secs = total ? now_s() - t0 : 0;
  if (total != expect) ok = 0;
  printf("{\"mode\":\"read\",\"bytes\":%llu,\"secs\":%.4f,\"mib_s\":%.1f,\"ok\":%s}\n",
         (unsigned long long)total, secs, secs > 0 ? (double)total / 1048576.0 / secs : 0.0,
         ok ? "true" : "false");
  return ok ? 0 : 3;
}

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "write") && strcmp(argv[1], "read"))) {
    fprintf(stderr, "usage: %s write|read [--fd N] [--mib M] [--chunk KIB]\n", argv[0]);
    return 2;
  }
  int writing = !strcmp(argv[1], "write");
  int fd = writing ? 1 : 0;
  uint64_t mib = 256;
  size_t chunk = 1024 * 1024;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--fd") && i + 1 < argc) fd = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) chunk = 1024 * strtoull(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "state_stream: bad argument %s\n", argv[i]);
      return 2;
    }
  }
  if (chunk == 0 || chunk % 8) {
    fprintf(stderr, "state_stream: --chunk must be a positive multiple of 8 bytes\n");
    return 2;
  }
  uint8_t *buf = malloc(chunk + 8);
  if (!buf) return 1;
  uint64_t total = mib * 1024 * 1024;
  return writing ? do_write(fd, total, chunk, buf) : do_read(fd, total, chunk, buf);
}
