/* echo_backend: a vhost-user-ish back-end for latency benches.
 *
 * usage: echo_backend <socket-path>
 *
 * Serves connections one after another (a real back-end such as virtiofsd serves one front-end
 * at a time too). For every message that has NEED_REPLY or is GET_FEATURES (1) it replies with
 * flags 0x5, the same request code and an 8-byte payload; if the request carried fds, the first
 * one goes back with the reply so that fd passing is exercised in both directions. Every
 * received fd is closed afterwards, so a leak in a relay shows up in the relay, not here.
 * Runs until killed.
 */
#include "vu_msg.h"

#include <signal.h>
#include <stdlib.h>

#define VU_GET_FEATURES 1u

static void serve(int conn) {
  static struct vu_msg m, r;
  for (;;) {
    int rc = vu_recv(conn, &m);
    if (rc <= 0) {
      if (rc < 0) perror("echo_backend: recv");
      break;
    }
    if ((m.flags & VU_FLAG_NEED_REPLY) || m.request == VU_GET_FEATURES) {
      uint64_t value = 0; /* REPLY_ACK "success"; a zero feature mask for GET_FEATURES */
      r.request = m.request;
      r.flags = VU_FLAG_VERSION | VU_FLAG_REPLY;
      r.size = sizeof value;
      memcpy(r.payload, &value, sizeof value);
      r.nfds = m.nfds > 0 ? 1 : 0;
      r.fds[0] = m.nfds > 0 ? m.fds[0] : -1;
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
  if (argc != 2) {
    fprintf(stderr, "usage: %s <socket-path>\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ls = vu_listen(argv[1]);
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
