/* echo_backend: a vhost-user-ish back-end for latency benches.
 *
 * usage: echo_backend [--echo-fd] <socket-path>
 *
 * Serves connections one after another (a real back-end such as virtiofsd serves one front-end
 * at a time too). It answers the two getters a front-end starts with, GET_FEATURES (offering
 * only VHOST_USER_F_PROTOCOL_FEATURES) and GET_PROTOCOL_FEATURES (offering only REPLY_ACK), and
 * acks every NEED_REPLY request: flags 0x5, the same request code, an 8-byte payload. That is
 * the protocol-valid minimum, so a relay that checks the protocol (our proxy does) accepts it.
 * With --echo-fd, a reply to a request that carried fds also carries the first of them back,
 * exercising fd passing in both directions as in ffi-notes §3.1; a checking relay rightly
 * rejects that (no ack may carry an fd), so the bench uses it only on request.
 * Every received fd is closed, so a leak in a relay shows up in the relay, not here.
 * Runs until killed.
 */
#include "vu_msg.h"

#include <signal.h>
#include <stdlib.h>

#define VU_GET_FEATURES 1u
#define VU_GET_PROTOCOL_FEATURES 15u
#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PROTOCOL_F_REPLY_ACK (1ull << 3)

static int echo_fd;

/* The u64 a reply carries: the feature masks for the getters, 0 ("success") for acks. */
static uint64_t reply_value(uint32_t request) {
  if (request == VU_GET_FEATURES) return VU_F_PROTOCOL_FEATURES;
  if (request == VU_GET_PROTOCOL_FEATURES) return VU_PROTOCOL_F_REPLY_ACK;
  return 0;
}

static void serve(int conn) {
  static struct vu_msg m, r;
  for (;;) {
    int rc = vu_recv(conn, &m);
    if (rc <= 0) {
      if (rc < 0) perror("echo_backend: recv");
      break;
    }
    if ((m.flags & VU_FLAG_NEED_REPLY) || m.request == VU_GET_FEATURES ||
        m.request == VU_GET_PROTOCOL_FEATURES) {
      uint64_t value = reply_value(m.request);
      r.request = m.request;
      r.flags = VU_FLAG_VERSION | VU_FLAG_REPLY;
      r.size = sizeof value;
      memcpy(r.payload, &value, sizeof value);
      r.nfds = echo_fd && m.nfds > 0 ? 1 : 0;
      r.fds[0] = r.nfds ? m.fds[0] : -1;
      if (vu_send(conn, &r) < 0) {
        perror("echo_backend: send");
        vu_close_fds(&m);
        break;
      }
    }
    vu_close_fds(&m);
  }
  close(conn);
}

int main(int argc, char **argv) {
  echo_fd = argc == 3 && !strcmp(argv[1], "--echo-fd");
  if (argc != 2 + echo_fd) {
    fprintf(stderr, "usage: %s [--echo-fd] <socket-path>\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ls = vu_listen(argv[argc - 1]);
  if (ls < 0) {
    perror("echo_backend: listen");
    return 1;
  }
  for (;;) {
    int conn = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("echo_backend: accept");
      return 1;
    }
    serve(conn);
  }
}
