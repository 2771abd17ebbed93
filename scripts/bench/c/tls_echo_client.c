/*
** tls_echo_client.c - TLS echo load generator (one thread, epoll,
** non-blocking OpenSSL), the same client for every server.
**
** Opens C TLS connections to 127.0.0.1:PORT (no certificate check: the
** servers use a throw-away certificate); once every handshake is done,
** each connection sends a SIZE-byte message, waits until the whole echo
** came back, compares it with the message sent, and sends the next, for
** SECONDS. Prints
**   tls-echo-s<SIZE>-c<C> <LABEL> <requests> <seconds> <requests/s> <MiB/s>
**     <user_s> <sys_s> [<server_s>]
** where MiB/s counts payload one way (requests * SIZE) and user_s, sys_s
** are this client's CPU seconds over the measured SECONDS (a client near
** SECONDS of CPU is the bottleneck, not the server). With
** TLS_ECHO_SERVER_PID=<pid of the server>, server_s is the server's CPU
** seconds (user + system, from /proc/<pid>/stat, in clock ticks) over
** the same SECONDS: the server's CPU per request, which the client's
** speed does not limit.
**
** The client must cost as little as a TLS client can, or it, not the
** server, sets the rate. OpenSSL over a socket BIO makes two read(2)
** calls per record (header, then body) and one write(2) per 16 KiB
** record. Here the SSL object talks to a BIO of this file instead:
** - writes go to a per-connection buffer, written to the socket with one
**   write(2) after each SSL call, so a message of any size leaves in one
**   system call when the socket has room (the rest on EPOLLOUT);
** - reads fill a per-connection buffer with one read(2) of up to
**   RBUF_LEN bytes, from which SSL takes header and body; a read(2)
**   shorter than asked means the socket was empty, and the next one
**   waits for epoll's next event on it (edge-triggered epoll reports
**   every arrival) instead of making a read(2) that would fail with
**   EAGAIN.
** SSL's own read-ahead would also make one read(2) for many records, but
** it moves the unread rest of its buffer to the front before each record
** (quadratic in the records per read); a copy out of our buffer is
** linear.
**
** The message is pseudo-random bytes at an offset that changes with each
** request, so an echo of an older message, or of bytes in the wrong
** order, does not compare equal. Each piece of plaintext SSL_read gives
** is compared (memcmp) with the message's bytes at that place while it
** is still in the cache; a request counts once all SIZE bytes came back
** equal. TLS_ECHO_CHECK=0 skips the comparison, to measure its cost.
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#ifndef RBUF_LEN
#define RBUF_LEN (64 * 1024)  /* bytes of one read(2) at most */
#endif
#define NSHIFTS 251            /* message offsets: msg holds SIZE + NSHIFTS */

typedef struct conn {
  int fd;
  SSL *ssl;
  int ready;                /* handshake done */
  int busy;                 /* a message was handed to SSL_write */
  int drained;              /* last read(2) was short: wait for epoll */
  unsigned long nreq;       /* requests done (picks the message's offset) */
  const char *cur;          /* the message in flight */
  size_t got;               /* bytes of the echo received */
  char *out;                /* ciphertext not yet written to the socket */
  size_t olen, ooff, ocap;
  char *in;                 /* ciphertext read, not yet taken by SSL */
  size_t ilen, ioff;
} conn;

static size_t size;
static char *msg;
static long reqs;
static int counting;
static int check = 1;
static char piece[32 * 1024];  /* one SSL_read's plaintext */

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

/* The CPU seconds of process pid so far, or -1. */
static double pidtime (long pid) {
  char path[64], buf[1024], *p;
  unsigned long ut, st;
  size_t n;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  if ((f = fopen(path, "r")) == NULL)
    return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* fields 14 and 15 (utime, stime); the name, field 2, may hold spaces */
  if ((p = strrchr(buf, ')')) == NULL
      || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void cputime (double *user, double *sys) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
  *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}


/* {=============================================================
** The connection's BIO: SSL's records in and out of our buffers
** ============================================================== */

static int cbio_write (BIO *b, const char *data, int len) {
  conn *c = BIO_get_data(b);
  size_t need = c->olen + (size_t)len;
  BIO_clear_retry_flags(b);
  if (need > c->ocap) {
    size_t cap = c->ocap ? c->ocap : 64 * 1024;
    char *p;
    while (cap < need)
      cap *= 2;
    if ((p = realloc(c->out, cap)) == NULL)
      die("out of memory");
    c->out = p;
    c->ocap = cap;
  }
  memcpy(c->out + c->olen, data, (size_t)len);
  c->olen = need;
  return len;
}

static int cbio_read (BIO *b, char *data, int len) {
  conn *c = BIO_get_data(b);
  size_t n;
  BIO_clear_retry_flags(b);
  if (c->ioff == c->ilen) {
    ssize_t r;
    if (c->drained) {
      BIO_set_retry_read(b);
      return -1;
    }
    do
      r = read(c->fd, c->in, RBUF_LEN);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c->drained = 1;
        BIO_set_retry_read(b);
      }
      return -1;
    }
    if (r == 0)
      return 0;  /* the server closed: SSL reports an error */
    c->drained = (size_t)r < RBUF_LEN;
    c->ioff = 0;
    c->ilen = (size_t)r;
  }
  n = c->ilen - c->ioff;
  if (n > (size_t)len)
    n = (size_t)len;
  memcpy(data, c->in + c->ioff, n);
  c->ioff += n;
  return (int)n;
}

static long cbio_ctrl (BIO *b, int cmd, long num, void *ptr) {
  conn *c = BIO_get_data(b);
  (void)num; (void)ptr;
  switch (cmd) {
    case BIO_CTRL_FLUSH:   /* step() writes the buffer after each call */
      return 1;
    case BIO_CTRL_PENDING:
      return (long)(c->ilen - c->ioff);
    case BIO_CTRL_WPENDING:
      return (long)(c->olen - c->ooff);
    default:
      return 0;
  }
}

static BIO_METHOD *cbio_method (void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               "tls_echo_client");
  if (m == NULL || !BIO_meth_set_write(m, cbio_write)
      || !BIO_meth_set_read(m, cbio_read)
      || !BIO_meth_set_ctrl(m, cbio_ctrl))
    die("BIO_meth_new");
  return m;
}

/* Writes what SSL produced; 0 if the socket is full (EPOLLOUT will
** call step() again), 1 once the buffer is empty. */
static int flush (conn *c) {
  while (c->ooff < c->olen) {
    ssize_t r = write(c->fd, c->out + c->ooff, c->olen - c->ooff);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      die("write to the socket failed (server closed?)");
    }
    c->ooff += (size_t)r;
  }
  c->olen = c->ooff = 0;
  return 1;
}

/* }============================================================= */


/* Drives one connection as far as it can go without blocking: the
** handshake, then sending a message and reading its echo, again and
** again. Returns once SSL needs bytes the socket does not have yet. */
static void step (conn *c) {
  int r;
  if (!c->ready) {
    r = SSL_do_handshake(c->ssl);
    flush(c);
    if (r != 1) {
      if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ)
        return;
      die("handshake failed");
    }
    c->ready = 1;
    return;
  }
  if (!counting)
    return;
  for (;;) {
    if (!c->busy) {
      size_t w;
      c->cur = msg + (c->nreq * 7) % NSHIFTS;
      /* the BIO takes every byte: SSL_write never stops half-way */
      if (SSL_write_ex(c->ssl, c->cur, size, &w) != 1 || w != size)
        die("write failed");
      c->busy = 1;
    }
    flush(c);
    while (c->got < size) {
      size_t n;
      size_t want = size + 1 - c->got;  /* + 1: to see an echo too long */
      if (want > sizeof piece)
        want = sizeof piece;
      r = SSL_read_ex(c->ssl, piece, want, &n);
      if (r != 1) {
        flush(c);  /* SSL may have answered something (a key update) */
        if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ)
          return;
        die("read failed (server closed?)");
      }
      if (c->got + n > size)
        die("echo longer than the message");
      if (check && memcmp(piece, c->cur + c->got, n) != 0)
        die("echo differs from the message");
      c->got += n;
    }
    reqs++;
    c->nreq++;
    c->got = 0;
    c->busy = 0;
  }
}

int main (int argc, char **argv) {
  int port, nc, i, ep, up = 0;
  size_t j;
  double secs, t0, t, u0, s0, u1, s1, p0 = -1, p1 = -1;
  long spid = 0;
  const char *label, *env;
  unsigned long x = 88172645463325252ul;
  SSL_CTX *ctx;
  BIO_METHOD *meth;
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
  if (port <= 0 || nc <= 0 || size == 0 || secs <= 0)
    die("PORT, CONNS, SIZE and SECONDS must be positive");
  if ((env = getenv("TLS_ECHO_CHECK")) != NULL && strcmp(env, "0") == 0)
    check = 0;
  if ((env = getenv("TLS_ECHO_SERVER_PID")) != NULL)
    spid = atol(env);
  signal(SIGPIPE, SIG_IGN);  /* a closed server: write(2) fails, we die */
  msg = malloc(size + NSHIFTS);
  cs = calloc((size_t)nc, sizeof *cs);
  if (msg == NULL || cs == NULL)
    die("out of memory");
  for (j = 0; j < size + NSHIFTS; j++) {  /* xorshift64 */
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    msg[j] = (char)(x >> 32);
  }
  ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL)
    die("SSL_CTX_new");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  meth = cbio_method();
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ep = epoll_create1(0);
  if (ep < 0)
    die("epoll_create1");
  for (i = 0; i < nc; i++) {
    int one = 1;
    conn *c = &cs[i];
    BIO *b;
    c->in = malloc(RBUF_LEN);
    if (c->in == NULL)
      die("out of memory");
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
      die("connect");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->ssl = SSL_new(ctx);
    b = BIO_new(meth);
    if (c->ssl == NULL || b == NULL)
      die("SSL_new");
    BIO_set_data(b, c);
    BIO_set_init(b, 1);
    SSL_set_bio(c->ssl, b, b);
    SSL_set_connect_state(c->ssl);
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
    for (i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      c->drained = 0;
      step(c);
    }
    for (up = 0, i = 0; i < nc; i++)
      up += cs[i].ready;
  }
  counting = 1;
  if (spid > 0)
    p0 = pidtime(spid);
  cputime(&u0, &s0);
  t0 = now();
  for (i = 0; i < nc; i++)
    step(&cs[i]);
  while ((t = now() - t0) < secs) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (evs[i].events & EPOLLERR)
        die("connection error");
      c->drained = 0;
      step(c);
    }
  }
  cputime(&u1, &s1);
  if (p0 >= 0)
    p1 = pidtime(spid);
  printf("tls-echo-s%zu-c%d %s %ld %.3f %.1f %.2f %.3f %.3f", size, nc,
         label, reqs, t, (double)reqs / t,
         (double)reqs * (double)size / t / 1048576.0, u1 - u0, s1 - s0);
  if (p1 >= 0)
    printf(" %.2f", p1 - p0);
  printf("\n");
  return 0;
}
