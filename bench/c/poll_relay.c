/* poll_relay: the minimal C relay that the proxy's latency target is measured against.
 *
 * usage: poll_relay <listen-path> <backend-path>
 *
 * One process, one thread, one poll() over the listener and every connection pair. For each
 * accepted front-end it connects to the back-end and relays whole messages both ways: recvmsg
 * the header (with up to 8 SCM_RIGHTS fds), recv the payload, one sendmsg of header + payload
 * + fds, then close its own fd copies. That is the same message-aware algorithm as the proxy
 * (ffi-notes §2), stripped of everything else, so "proxy added / C relay added" isolates the
 * proxy's own overhead from the unavoidable extra hop. Reads and writes are blocking once
 * poll() reports readiness: a baseline does not need to survive a peer that stalls mid-message.
 * Runs until killed.
 */
#include "vu_msg.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>

#define MAX_PAIRS 64

/* pfd[0] is the listener; pair i owns pfd[1 + 2i] (front) and pfd[2 + 2i] (back). */
static struct pollfd pfd[1 + 2 * MAX_PAIRS];
static int npairs;

static void drop_pair(int i) {
  close(pfd[1 + 2 * i].fd);
  close(pfd[2 + 2 * i].fd);
  npairs--;
  pfd[1 + 2 * i] = pfd[1 + 2 * npairs];
  pfd[2 + 2 * i] = pfd[2 + 2 * npairs];
}

/* Relays one message from -> to. Returns 0, or -1 when the pair must go (EOF or error). */
static int relay_one(int from, int to) {
  static struct vu_msg m;
  int rc = vu_recv(from, &m);
  if (rc <= 0) {
    if (rc < 0) perror("poll_relay: recv");
    return -1;
  }
  rc = vu_send(to, &m);
  if (rc < 0) perror("poll_relay: send");
  vu_close_fds(&m);
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <listen-path> <backend-path>\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ls = vu_listen(argv[1]);
  if (ls < 0) {
    perror("poll_relay: listen");
    return 1;
  }
  pfd[0] = (struct pollfd){.fd = ls, .events = POLLIN};
  for (;;) {
    if (poll(pfd, (nfds_t)(1 + 2 * npairs), -1) < 0) {
      if (errno == EINTR) continue;
      perror("poll_relay: poll");
      return 1;
    }
    /* Walk pairs from the end so that drop_pair's swap-with-last never skips one. */
    for (int i = npairs - 1; i >= 0; i--) {
      struct pollfd *f = &pfd[1 + 2 * i], *b = &pfd[2 + 2 * i];
      int dead = 0;
      if (f->revents) dead = relay_one(f->fd, b->fd) < 0;
      if (!dead && b->revents) dead = relay_one(b->fd, f->fd) < 0;
      if (dead) drop_pair(i);
    }
    if (pfd[0].revents & POLLIN) {
      int front = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
      if (front < 0) continue;
      int back = vu_connect(argv[2]);
      if (back < 0 || npairs == MAX_PAIRS) {
        perror("poll_relay: backend connect");
        close(front);
        if (back >= 0) close(back);
        continue;
      }
      pfd[1 + 2 * npairs] = (struct pollfd){.fd = front, .events = POLLIN};
      pfd[2 + 2 * npairs] = (struct pollfd){.fd = back, .events = POLLIN};
      npairs++;
    }
  }
}
