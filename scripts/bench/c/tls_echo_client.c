/*
** tls_echo_client.c - TLS echo load generator (one thread, epoll,
** non-blocking OpenSSL), the same client for every server.
**
** Opens C TLS connections to 127.0.0.1:PORT (no certificate check: the
** servers use a throw-away certificate); once every handshake is done,
** each connection sends a SIZE-byte message, waits until SIZE bytes came
** back, and sends again, for SECONDS. Prints
**   tls-echo-s<SIZE>-c<C> <LABEL> <requests> <seconds> <requests/s> <MiB/s>
** where MiB/s counts payload one way (requests * SIZE).
**
** usage: tls_echo_client PORT CONNS SIZE SECONDS [LABEL]
** build: cc -O2 -o tls_echo_client tls_echo_client.c -lssl -lcrypto
*/

#define _GNU_SOURCE
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
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

typedef struct conn {
  int fd;
  SSL *ssl;
  int ready;                /* handshake done */
  size_t sent, got;
} conn;

static size_t size;
static char *msg;
static char rbuf[1 << 18];
static long reqs;
static int counting;

static double now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die (const char *what) {
  fprintf(stderr, "tls_echo_client: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

/* Drives one connection as far as it can go without blocking: the
** handshake, then writing the rest of the message, reading the echo. */
static void step (conn *c) {
  int r;
  if (!c->ready) {
    r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
      die("handshake failed");
    }
    c->ready = 1;
    return;
  }
  if (!counting)
    return;
  for (;;) {
    while (c->sent < size) {
      size_t w;
      r = SSL_write_ex(c->ssl, msg + c->sent, size - c->sent, &w);
      if (r != 1) {
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
          break;
        die("write failed");
      }
      c->sent += w;
    }
    for (;;) {
      size_t n;
      r = SSL_read_ex(c->ssl, rbuf, sizeof rbuf, &n);
      if (r != 1) {
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
          return;
        die("read failed (server closed?)");
      }
      c->got += n;
      if (c->got > size)
        die("echo longer than sent");
      if (c->got == size && c->sent == size) {
        reqs++;
        c->sent = c->got = 0;
        break;   /* send the next one */
      }
    }
  }
}

int main (int argc, char **argv) {
  int port, nc, i, ep, up = 0;
  double secs, t0, t;
  const char *label;
  SSL_CTX *ctx;
  conn *cs;
  struct sockaddr_in sa;
  struct epoll_event ev, evs[256];
  if (argc < 5) {
    fprintf(stderr, "usage: %s PORT CONNS SIZE SECONDS [LABEL]\n", argv[0]);
    return 2;
  }
  port = atoi(argv[1]);
  nc = atoi(argv[2]);
  size = (size_t)atol(argv[3]);
  secs = atof(argv[4]);
  label = argc > 5 ? argv[5] : "server";
  msg = malloc(size);
  cs = calloc((size_t)nc, sizeof *cs);
  if (msg == NULL || cs == NULL)
    die("out of memory");
  memset(msg, 'x', size);
  ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL)
    die("SSL_CTX_new");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                   | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ep = epoll_create1(0);
  for (i = 0; i < nc; i++) {
    int one = 1;
    conn *c = &cs[i];
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
      die("connect");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
      die("epoll_ctl");
    step(c);
  }
  /* every handshake first */
  while (up < nc) {
    int n = epoll_wait(ep, evs, 256, 10000);
    if (n <= 0)
      die("handshakes timed out");
    for (i = 0; i < n; i++)
      step((conn *)evs[i].data.ptr);
    for (up = 0, i = 0; i < nc; i++)
      up += cs[i].ready;
  }
  counting = 1;
  t0 = now();
  for (i = 0; i < nc; i++)
    step(&cs[i]);
  while ((t = now() - t0) < secs) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (i = 0; i < n; i++) {
      if (evs[i].events & EPOLLERR)
        die("connection error");
      step((conn *)evs[i].data.ptr);
    }
  }
  printf("tls-echo-s%zu-c%d %s %ld %.3f %.1f %.2f\n", size, nc, label, reqs,
         t, (double)reqs / t, (double)reqs * (double)size / t / 1048576.0);
  return 0;
}
