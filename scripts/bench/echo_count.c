/*
** echo_count.c: a TCP echo client that makes a fixed number of requests,
** for scripts/bench/echo_instr.sh (instructions per request under
** callgrind, where a timed client would make a number of requests that
** depends on the machine's load).
**   usage: echo_count PORT CONNS SIZE REQUESTS
** Opens CONNS connections to 127.0.0.1:PORT; each sends SIZE bytes, waits
** for the whole echo and sends again, REQUESTS / CONNS times; then
** half-closes and waits for the server to close. Exits 1 on any error or
** after 30 s without progress.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  size_t sent, got;
  long left;              /* requests still to make */
} conn;

static size_t size;
static char *msg, rbuf[1 << 18];
static int ndone;

static void die (const char *what) {
  perror(what);
  exit(1);
}

static void pump_out (conn *c) {
  while (c->left > 0 && c->sent < size) {
    ssize_t w = write(c->fd, msg + c->sent, size - c->sent);
    if (w < 0) {
      if (errno == EAGAIN)
        return;
      die("write");
    }
    c->sent += (size_t)w;
  }
}

static void pump_in (conn *c) {
  while (c->left > 0) {
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r < 0) {
      if (errno == EAGAIN)
        return;
      die("read");
    }
    if (r == 0) {
      fprintf(stderr, "echo_count: server closed\n");
      exit(1);
    }
    c->got += (size_t)r;
    if (c->got > size) {
      fprintf(stderr, "echo_count: echo longer than sent\n");
      exit(1);
    }
    if (c->got == size && c->sent == size) {
      c->got = c->sent = 0;
      if (--c->left == 0) {
        ndone++;
        shutdown(c->fd, SHUT_WR);
        return;
      }
      pump_out(c);
    }
  }
}

int main (int argc, char **argv) {
  struct sockaddr_in sa;
  struct epoll_event evs[256];
  conn *cs;
  int i, nc, ep;
  long n;
  if (argc != 5) {
    fprintf(stderr, "usage: echo_count PORT CONNS SIZE REQUESTS\n");
    return 2;
  }
  nc = atoi(argv[2]);
  size = (size_t)atol(argv[3]);
  n = atol(argv[4]);
  if (nc <= 0 || size == 0 || n < nc) {
    fprintf(stderr, "echo_count: need CONNS > 0, SIZE > 0, REQUESTS >= CONNS\n");
    return 2;
  }
  msg = malloc(size);
  cs = calloc((size_t)nc, sizeof *cs);
  if (msg == NULL || cs == NULL)
    die("malloc");
  for (size_t k = 0; k < size; k++)
    msg[k] = (char)('a' + k % 26);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)atoi(argv[1]));
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if ((ep = epoll_create1(0)) < 0)
    die("epoll_create1");
  for (i = 0; i < nc; i++) {
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    struct epoll_event ev;
    if (fd < 0)
      die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
      die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    cs[i].fd = fd;
    cs[i].left = n / nc + (i < n % nc);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = &cs[i];
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
      die("epoll_ctl");
  }
  for (i = 0; i < nc; i++)
    pump_out(&cs[i]);
  while (ndone < nc) {
    int k = epoll_wait(ep, evs, 256, 30000);
    if (k < 0 && errno != EINTR)
      die("epoll_wait");
    if (k == 0) {
      fprintf(stderr, "echo_count: no progress for 30 s\n");
      return 1;
    }
    for (i = 0; i < k; i++) {
      conn *c = evs[i].data.ptr;
      if (evs[i].events & (EPOLLERR | EPOLLHUP) && c->left > 0) {
        fprintf(stderr, "echo_count: connection error\n");
        return 1;
      }
      if (evs[i].events & EPOLLOUT)
        pump_out(c);
      if (evs[i].events & EPOLLIN)
        pump_in(c);
    }
  }
  alarm(30);                  /* the server closes on our EOF */
  for (i = 0; i < nc; i++) {
    fcntl(cs[i].fd, F_SETFL, 0);
    while (read(cs[i].fd, rbuf, sizeof rbuf) > 0)
      ;
    close(cs[i].fd);
  }
  return 0;
}
