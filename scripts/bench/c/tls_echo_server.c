/*
** tls_echo_server.c - TLS echo server in plain C on libuv and OpenSSL:
** the floor of the tls workload, as the peers' echo/c_libuv.c is the
** floor of echo. It has loom's TLS design without Lua: the records read
** by libuv go to the SSL object from the read buffer itself (no copy
** first); SSL_read's plaintext goes straight back to SSL_write; the
** records SSL_write makes are kept in a buffer of the connection, which
** is written after each read with uv_try_write, and only what the kernel
** did not take is copied into a queued uv_write. Compared with loom, it
** makes no Lua string, calls no protocol, and keeps nothing per write.
**
** usage: tls_echo_server PORT CERT KEY
** build: cc -O2 -o tls_echo_server tls_echo_server.c -luv -lssl -lcrypto
*/

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

typedef struct conn {
  uv_tcp_t h;
  SSL *ssl;
  const char *feed;       /* records of this read not yet taken by SSL */
  size_t feedlen;
  char *in;               /* records kept from earlier reads */
  size_t ilen, ioff, icap;
  char *out;              /* records made, not yet written */
  size_t olen, ocap;
  int closing;
} conn;

typedef struct { uv_write_t req; char data[]; } wreq;

static char rbuf[1 << 18];       /* one read's records */
static char plain[1 << 18];      /* SSL_read's plaintext */
static SSL_CTX *ctx;
static BIO_METHOD *meth;

static void die (const char *what) {
  fprintf(stderr, "tls_echo_server: %s\n", what);
  ERR_print_errors_fp(stderr);
  exit(1);
}

/* Appends n bytes at p to the buffer (*b, *len, *cap). */
static void append (char **b, size_t *len, size_t *cap, const char *p,
                    size_t n) {
  if (*len + n > *cap) {
    size_t c = *cap ? *cap : 64 * 1024;
    while (c < *len + n)
      c *= 2;
    if ((*b = realloc(*b, c)) == NULL)
      die("out of memory");
    *cap = c;
  }
  memcpy(*b + *len, p, n);
  *len += n;
}

static int cbio_write (BIO *b, const char *p, int n) {
  conn *c = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  append(&c->out, &c->olen, &c->ocap, p, (size_t)n);
  return n;
}

static int cbio_read (BIO *b, char *p, int size) {
  conn *c = BIO_get_data(b);
  size_t want = (size_t)size, n = 0, k;
  BIO_clear_retry_flags(b);
  if (c->ioff < c->ilen) {
    k = c->ilen - c->ioff < want ? c->ilen - c->ioff : want;
    memcpy(p, c->in + c->ioff, k);
    c->ioff += k;
    n = k;
    if (c->ioff == c->ilen)
      c->ioff = c->ilen = 0;
  }
  if (n < want && c->feedlen > 0) {
    k = c->feedlen < want - n ? c->feedlen : want - n;
    memcpy(p + n, c->feed, k);
    c->feed += k;
    c->feedlen -= k;
    n += k;
  }
  if (n == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  return (int)n;
}

static long cbio_ctrl (BIO *b, int cmd, long num, void *ptr) {
  conn *c = BIO_get_data(b);
  (void)num; (void)ptr;
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;
    case BIO_CTRL_PENDING: return (long)(c->ilen - c->ioff + c->feedlen);
    case BIO_CTRL_WPENDING: return (long)c->olen;
    default: return 0;
  }
}

static int cbio_create (BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static void on_close (uv_handle_t *h) {
  conn *c = (conn *)h;
  SSL_free(c->ssl);
  free(c->in);
  free(c->out);
  free(c);
}

static void drop (conn *c) {
  if (!c->closing) {
    c->closing = 1;
    uv_close((uv_handle_t *)&c->h, on_close);
  }
}

static void on_write (uv_write_t *req, int status) {
  (void)status;
  free(req);
}

/* Writes the records made: uv_try_write, the rest copied and queued. */
static void flush (conn *c) {
  uv_buf_t b = uv_buf_init(c->out, (unsigned int)c->olen);
  size_t done = 0;
  wreq *w;
  int r;
  if (c->olen == 0)
    return;
  r = uv_try_write((uv_stream_t *)&c->h, &b, 1);
  if (r < 0 && r != UV_EAGAIN) {
    drop(c);
    return;
  }
  done = r > 0 ? (size_t)r : 0;
  if (done < c->olen) {
    size_t left = c->olen - done;
    if ((w = malloc(sizeof *w + left)) == NULL)
      die("out of memory");
    memcpy(w->data, c->out + done, left);
    b = uv_buf_init(w->data, (unsigned int)left);
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, on_write) != 0) {
      free(w);
      drop(c);
    }
  }
  c->olen = 0;
}

static void alloc_cb (uv_handle_t *h, size_t hint, uv_buf_t *b) {
  (void)h; (void)hint;
  *b = uv_buf_init(rbuf, sizeof rbuf);
}

static void read_cb (uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn *c = (conn *)s;
  if (nread < 0) {
    drop(c);
    return;
  }
  c->feed = b->base;
  c->feedlen = (size_t)nread;
  for (;;) {
    size_t got;
    if (SSL_read_ex(c->ssl, plain, sizeof plain, &got) == 1) {
      size_t off = 0;
      while (off < got) {
        size_t put;
        if (SSL_write_ex(c->ssl, plain + off, got - off, &put) != 1) {
          drop(c);
          return;
        }
        off += put;
      }
      continue;
    }
    switch (SSL_get_error(c->ssl, 0)) {
      case SSL_ERROR_WANT_READ: case SSL_ERROR_WANT_WRITE: break;
      default: flush(c); drop(c); return;  /* the peer's close too */
    }
    break;
  }
  if (c->feedlen > 0)  /* a record's start: kept for the next read */
    append(&c->in, &c->ilen, &c->icap, c->feed, c->feedlen);
  c->feed = NULL;
  c->feedlen = 0;
  flush(c);  /* echoes, and the handshake's records */
}

static void on_conn (uv_stream_t *srv, int status) {
  conn *c;
  BIO *rb, *wb;
  if (status < 0 || (c = calloc(1, sizeof *c)) == NULL)
    return;
  uv_tcp_init(srv->loop, &c->h);
  if (uv_accept(srv, (uv_stream_t *)&c->h) != 0) {
    uv_close((uv_handle_t *)&c->h, on_close);
    return;
  }
  uv_tcp_nodelay(&c->h, 1);
  if ((c->ssl = SSL_new(ctx)) == NULL || (rb = BIO_new(meth)) == NULL
      || (wb = BIO_new(meth)) == NULL)
    die("SSL_new");
  BIO_set_data(rb, c);
  BIO_set_data(wb, c);
  SSL_set_bio(c->ssl, rb, wb);
  SSL_set_accept_state(c->ssl);
  uv_read_start((uv_stream_t *)&c->h, alloc_cb, read_cb);
}

int main (int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  struct sockaddr_in a;
  uv_tcp_t srv;
  if (argc < 4) {
    fprintf(stderr, "usage: tls_echo_server PORT CERT KEY\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL
      || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1
      || SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1)
    die("certificate or key");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if ((meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                           "echo")) == NULL)
    die("BIO_meth_new");
  BIO_meth_set_write(meth, cbio_write);
  BIO_meth_set_read(meth, cbio_read);
  BIO_meth_set_ctrl(meth, cbio_ctrl);
  BIO_meth_set_create(meth, cbio_create);
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &a);
  uv_tcp_init(loop, &srv);
  if (uv_tcp_bind(&srv, (const struct sockaddr *)&a, 0) != 0
      || uv_listen((uv_stream_t *)&srv, 1024, on_conn) != 0)
    die("cannot listen");
  fprintf(stderr, "tls_echo_server: listening on 127.0.0.1:%s\n", argv[1]);
  return uv_run(loop, UV_RUN_DEFAULT);
}
