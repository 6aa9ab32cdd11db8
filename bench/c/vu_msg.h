/* Shared helpers for the bench's C programs: vhost-user message framing with SCM_RIGHTS.
 *
 * Header (protocol.md §1.1): 12 packed little-endian bytes {u32 request, u32 flags, u32 size}.
 * Fds ride SCM_RIGHTS on the recvmsg/sendmsg that carries the first header byte (§1.2), so a
 * reader collects fds only while reading the header and a writer attaches them to the first
 * chunk only. Everything here is blocking I/O: the bench programs are single-purpose and
 * serve one message at a time, which keeps them minimal (the point of a baseline).
 */
#ifndef VU_MSG_H
#define VU_MSG_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define VU_HDR_SIZE 12u
#define VU_MAX_FDS 8
#define VU_MAX_PAYLOAD 4096u /* rust-vmm's MAX_MSG_SIZE; far above anything the bench sends */

#define VU_FLAG_VERSION 0x1u
#define VU_FLAG_REPLY 0x4u
#define VU_FLAG_NEED_REPLY 0x8u

struct vu_msg {
  uint32_t request, flags, size;
  uint8_t payload[VU_MAX_PAYLOAD];
  int fds[VU_MAX_FDS];
  int nfds;
};

/* Reads one whole message. Returns 1 on success, 0 on clean EOF before any byte, -1 on error
 * (errno set; EPROTO for truncated control data or an oversized payload). */
static inline int vu_recv(int sock, struct vu_msg *m) {
  uint8_t hdr[VU_HDR_SIZE];
  size_t got = 0;
  m->nfds = 0;
  while (got < VU_HDR_SIZE) {
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)]; } ctl;
    struct iovec iov = {hdr + got, VU_HDR_SIZE - got};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof ctl.buf;
    ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      if (got == 0 && m->nfds == 0) return 0;
      errno = EPROTO;
      return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < k && m->nfds < VU_MAX_FDS; i++) {
        memcpy(&m->fds[m->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      }
    }
    if (mh.msg_flags & MSG_CTRUNC) {
      errno = EPROTO;
      return -1;
    }
    got += (size_t)n;
  }
  memcpy(&m->request, hdr, 4);
  memcpy(&m->flags, hdr + 4, 4);
  memcpy(&m->size, hdr + 8, 4);
  if (m->size > VU_MAX_PAYLOAD) {
    errno = EPROTO;
    return -1;
  }
  for (got = 0; got < m->size;) {
    ssize_t n = recv(sock, m->payload + got, m->size - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EPROTO;
      return -1;
    }
    got += (size_t)n;
  }
  return 1;
}

/* Sends header+payload in one sendmsg with the fds attached; a partial send continues without
 * fds. Returns 0 or -1 (errno set). */
static inline int vu_send(int sock, const struct vu_msg *m) {
  uint8_t buf[VU_HDR_SIZE + VU_MAX_PAYLOAD];
  size_t len = VU_HDR_SIZE + m->size, sent = 0;
  memcpy(buf, &m->request, 4);
  memcpy(buf + 4, &m->flags, 4);
  memcpy(buf + 8, &m->size, 4);
  memcpy(buf + VU_HDR_SIZE, m->payload, m->size);
  while (sent < len) {
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)]; } ctl;
    struct iovec iov = {buf + sent, len - sent};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (sent == 0 && m->nfds > 0) {
      memset(&ctl, 0, sizeof ctl);
      mh.msg_control = ctl.buf;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)m->nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)m->nfds);
      memcpy(CMSG_DATA(c), m->fds, sizeof(int) * (size_t)m->nfds);
    }
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    sent += (size_t)n;
  }
  return 0;
}

static inline void vu_close_fds(struct vu_msg *m) {
  for (int i = 0; i < m->nfds; i++) close(m->fds[i]);
  m->nfds = 0;
}

static inline int vu_fill_addr(struct sockaddr_un *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a->sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(a->sun_path, path);
  return 0;
}

/* Creates a listening socket at path, replacing a stale socket file. */
static inline int vu_listen(const char *path) {
  struct sockaddr_un a;
  if (vu_fill_addr(&a, path) < 0) return -1;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  unlink(path);
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0) {
    close(s);
    return -1;
  }
  return s;
}

static inline int vu_connect(const char *path) {
  struct sockaddr_un a;
  if (vu_fill_addr(&a, path) < 0) return -1;
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    int e = errno;
    close(s);
    errno = e;
    return -1;
  }
  return s;
}

#endif
