/* The byte pattern of the synthetic device state shared by state_backend and state_client (the
 * same one state_stream.c uses): every 8-byte word holds its own little-endian byte offset, so
 * reordered, dropped or duplicated chunks are caught, not just a wrong total. Cheap enough to
 * produce and check at memory speed, so it does not hide the cost of the path under test. */
#ifndef STATE_PATTERN_H
#define STATE_PATTERN_H

#include <stdint.h>
#include <string.h>
#include <time.h>

static inline void pattern_fill(uint8_t *buf, size_t len, uint64_t off) {
  for (size_t i = 0; i < len; i += 8) {
    uint64_t v = off + i;
    memcpy(buf + i, &v, 8);
  }
}

/* Checks n bytes that sit at stream offset `total`; `scratch` needs n + 16 bytes. */
static inline int pattern_check(const uint8_t *buf, size_t n, uint64_t total, uint8_t *scratch) {
  uint64_t base = total & ~(uint64_t)7;
  size_t skew = (size_t)(total - base);
  pattern_fill(scratch, skew + n, base);
  return memcmp(buf, scratch + skew, n) == 0;
}

static inline double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#endif
