/*
** tls.c
** TLS on OpenSSL: contexts (loom.tls.context) and the TLS layer between
** a stream transport of stream.c and the application's protocol, after
** asyncio's sslproto.py.
**
** The layer is two objects. The TLS protocol (loom.TLSProtocol) is the
** protocol of the plain transport: stream.c calls its connection_made,
** data_received, eof_received, connection_lost, pause_writing and
** resume_writing as it calls any protocol's. The TLS transport
** (loom.TLSTransport) is what the application's protocol sees: the
** transport API, with plain text in and out. Between them one SSL object
** works on two memory BIOs of this file's own: what the plain transport
** reads is handed to the read BIO, SSL_read takes the plain text out of
** it; SSL_write puts records into the write BIO, which is emptied at the
** end of each operation, into the socket when it takes them and into the
** plain transport's write otherwise. So there is no event loop here and no
** socket: the plain transport does all the I/O, its write queue is the
** only queue, and its flow control is the TLS transport's.
**
** Memory. The TLS transport userdata holds the tls struct and the SSL
** object (freed by __gc); its user values anchor the plain transport,
** the application's protocol, the loop, the context, the waiter of the
** handshake and the timer of a handshake or shutdown timeout. The TLS
** protocol userdata holds only its TLS transport. The plain transport
** anchors its protocol while open (stream.c), so the chain lives as long
** as the connection, and is collected with it afterwards. Nothing here
** owns a libuv handle: timeouts are loop:call_later handles, so a loop
** that closes drops them with its other callbacks.
**
** Lua is called from the protocol methods (which stream.c runs under a
** protected call inside the loop), from the loop's callbacks (timeouts,
** resumed reading) and from the transport's methods, never from a libuv
** callback directly. OpenSSL calls back (SNI, new sessions, info) only
** from inside SSL_do_handshake / SSL_read of a method running here, with
** the state in t->L and t->tidx.
*/

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <pthread.h>

#if defined(__has_include)
#if !__has_include(<openssl/ssl.h>)
#include "openssl/ssl.h (OpenSSL's headers) is missing: install libssl-dev (Debian, Ubuntu), openssl-devel (Fedora), openssl-dev (Alpine) or openssl (Homebrew), or pass OPENSSL_DIR=prefix to luarocks"
#endif
#endif
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "stream.h"   /* loom__protocol_report */

#define CTX_MT   "loom.tls.Context"
#define TLST_MT  "loom.TLSTransport"
#define TLSP_MT  "loom.TLSProtocol"

#define DEFAULT_HANDSHAKE_TIMEOUT 60.0   /* as asyncio */
#define DEFAULT_SHUTDOWN_TIMEOUT  30.0
#define READ_CHUNK (256 * 1024)          /* plain text per data_received */
#define MAX_SESSIONS 64                  /* client session cache entries */


/*
** {======================================================
** Errors
** =======================================================
*/

/*
** Pushes errors[cls](msg, fields) with the fields table on top (popped),
** or the message alone when the classes are not there. [-1, +1, m]
*/
static void push_errclass (lua_State *L, const char *cls, const char *msg) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  if (!lua_istable(L, -1) || lua_getfield(L, -1, cls) == LUA_TNIL) {
    lua_pop(L, lua_istable(L, -1) ? 3 : 2);
    lua_pushfstring(L, "%s: %s", cls, msg);
    return;
  }
  lua_remove(L, -2);          /* fields, class */
  lua_pushstring(L, msg);
  lua_rotate(L, -3, -1);      /* class, msg, fields */
  lua_call(L, 2, 1);
}

/* OpenSSL's reason text as Python names it: "CERTIFICATE_VERIFY_FAILED". */
static void push_reason (lua_State *L, const char *r) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (; *r; r++)
    luaL_addchar(&b, *r == ' ' ? '_' : (char)toupper((unsigned char)*r));
  luaL_pushresult(&b);
}

/*
** Pushes the SSLError (or SSLCertVerificationError) of the failure that
** ssl_err (SSL_get_error's answer, 0 for a call that is not SSL_*) and
** OpenSSL's error queue describe, then empties the queue. what: the
** operation, for the message. [-0, +1, m]
*/
static void push_sslerror (lua_State *L, SSL *ssl, int ssl_err,
                           const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  const char *lib = e ? ERR_lib_error_string(e) : NULL;
  long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
  int verify = e != 0 && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED;
  lua_createtable(L, 0, 4);
  if (verify && vr != X509_V_OK) {
    const char *vm = X509_verify_cert_error_string(vr);
    char host[256];
    if (vr == X509_V_ERR_HOSTNAME_MISMATCH && ssl != NULL
        && SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) != NULL) {
      snprintf(host, sizeof host, "Hostname mismatch, certificate is not "
               "valid for '%s'.",
               SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
      vm = host;
    }
    lua_pushstring(L, vm);
    lua_setfield(L, -2, "verify_message");
    lua_pushinteger(L, vr);
    lua_setfield(L, -2, "verify_code");
    lua_pushliteral(L, "CERTIFICATE_VERIFY_FAILED");
    lua_setfield(L, -2, "reason");
    lua_pushliteral(L, "SSL");
    lua_setfield(L, -2, "library");
    lua_pushfstring(L, "[SSL: CERTIFICATE_VERIFY_FAILED] %s: certificate "
                    "verify failed: %s", what, vm);
    lua_pushliteral(L, "SSLCertVerificationError");
  }
  else if (reason != NULL) {
    push_reason(L, reason);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "reason");
    lua_pushstring(L, lib ? lib : "SSL");
    lua_setfield(L, -3, "library");
    lua_pushfstring(L, "[SSL: %s] %s: %s", lua_tostring(L, -1), what,
                    reason);
    lua_remove(L, -2);
    lua_pushliteral(L, "SSLError");
  }
  else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
    lua_pushliteral(L, "UNEXPECTED_EOF_WHILE_READING");
    lua_setfield(L, -2, "reason");
    lua_pushfstring(L, "[SSL: UNEXPECTED_EOF_WHILE_READING] %s: EOF "
                    "occurred in violation of protocol", what);
    lua_pushliteral(L, "SSLError");
  }
  else {
    lua_pushfstring(L, "%s: TLS error %d", what, ssl_err);
    lua_pushliteral(L, "SSLError");
  }
  ERR_clear_error();
  {
    const char *cls = lua_tostring(L, -1);
    const char *msg = lua_tostring(L, -2);
    lua_pushvalue(L, -3);  /* fields */
    push_errclass(L, cls, msg);
    lua_replace(L, -4);
    lua_pop(L, 2);
  }
}

/* Pushes SSLError(msg) with .reason. [-0, +1, m] */
static void push_plainerror (lua_State *L, const char *reason,
                             const char *msg) {
  lua_createtable(L, 0, 1);
  lua_pushstring(L, reason);
  lua_setfield(L, -2, "reason");
  push_errclass(L, "SSLError", msg);
}

/* }====================================================== */


/*
** {======================================================
** Contexts
** =======================================================
*/

typedef struct session {
  char *name;
  SSL_SESSION *sess;
} session;

typedef struct tlsctx {
  SSL_CTX *ctx;
  uint8_t server;
  uint8_t check_hostname;
  uint8_t session_cache;     /* client: reuse sessions per server name */
  uint8_t ragged_eof;        /* an EOF without close_notify is an EOF */
  unsigned char *alpn;       /* wire format, for the server's selection */
  unsigned int alpnlen;
  session sessions[MAX_SESSIONS];
  int nsessions;
} tlsctx;

/* User values of a context. */
enum { CUV_SNI = 1, CUV_COUNT = CUV_SNI };

static int ctxidx;  /* SSL_CTX ex_data index of the tlsctx */

static tlsctx *checkctx (lua_State *L, int idx) {
  tlsctx *c = (tlsctx *)luaL_checkudata(L, idx, CTX_MT);
  if (c->ctx == NULL)
    luaL_argerror(L, idx, "context is freed");
  return c;
}

static tlsctx *testctx (lua_State *L, int idx) {
  tlsctx *c = (tlsctx *)luaL_testudata(L, idx, CTX_MT);
  return c != NULL && c->ctx != NULL ? c : NULL;
}

/* Raises "bad argument #1 to 'context' (opt: msg)" with OpenSSL's last
** error appended when there is one. (Named here: the Lua side calls this
** function through loom.tls.context, whose name luaL_argerror cannot
** see from a pcall.) */
static int opterror (lua_State *L, const char *opt, const char *msg) {
  unsigned long e = ERR_peek_last_error();
  char buf[256];
  if (e != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return luaL_error(L, "bad argument #1 to 'context' (%s: %s (%s))", opt,
                      msg, buf);
  }
  return luaL_error(L, "bad argument #1 to 'context' (%s: %s)", opt, msg);
}

/* The string option opt of the table at 1, or NULL when absent; raises
** on a non-string or one with an embedded zero. */
static const char *optstring (lua_State *L, const char *opt, size_t *len) {
  const char *s;
  size_t n;
  int t = lua_getfield(L, 1, opt);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  if (t != LUA_TSTRING)
    opterror(L, opt, lua_pushfstring(L, "string expected, got %s",
                                     luaL_typename(L, -1)));
  s = lua_tolstring(L, -1, &n);
  if (memchr(s, '\0', n) != NULL)
    opterror(L, opt, "contains an embedded zero");
  lua_pop(L, 1);  /* the table keeps it */
  if (len != NULL)
    *len = n;
  return s;
}

static int optbool (lua_State *L, const char *opt, int def) {
  int t = lua_getfield(L, 1, opt), v = def;
  if (t == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL)
    opterror(L, opt, lua_pushfstring(L, "boolean expected, got %s",
                                     luaL_typename(L, -1)));
  lua_pop(L, 1);
  return v;
}

/* Whether s is PEM text rather than a path. */
static int ispem (const char *s) {
  return strstr(s, "-----BEGIN") != NULL;
}

static int pwcb (char *buf, int size, int rwflag, void *u) {
  const char *pw = (const char *)u;
  size_t n;
  (void)rwflag;
  if (pw == NULL)
    return 0;
  n = strlen(pw);
  if (n > (size_t)size)
    n = (size_t)size;
  memcpy(buf, pw, n);
  return (int)n;
}

/* cert: a certificate chain, PEM text or a PEM file. */
static void loadcert (lua_State *L, SSL_CTX *ctx, const char *cert,
                      size_t len) {
  if (!ispem(cert)) {
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
      opterror(L, "cert", lua_pushfstring(L, "cannot load '%s'", cert));
    return;
  }
  {
    BIO *b = BIO_new_mem_buf(cert, (int)len);
    X509 *x;
    int ok;
    if (b == NULL)
      luaL_error(L, "context: not enough memory");
    x = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    ok = x != NULL && SSL_CTX_use_certificate(ctx, x) == 1;
    X509_free(x);
    while (ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
      ok = SSL_CTX_add0_chain_cert(ctx, x) == 1;
      if (!ok)
        X509_free(x);
    }
    BIO_free(b);
    if (!ok)
      opterror(L, "cert", "not a valid PEM certificate");
    ERR_clear_error();  /* the end of the chain */
  }
}

/* key: a private key, PEM text or a PEM file, maybe encrypted. */
static void loadkey (lua_State *L, SSL_CTX *ctx, const char *key, size_t len,
                     const char *pw) {
  BIO *b = ispem(key) ? BIO_new_mem_buf(key, (int)len)
                      : BIO_new_file(key, "r");
  EVP_PKEY *k;
  int ok;
  if (b == NULL)
    opterror(L, "key", lua_pushfstring(L, "cannot open '%s'", key));
  k = PEM_read_bio_PrivateKey(b, NULL, pwcb, (void *)pw);
  BIO_free(b);
  if (k == NULL)
    opterror(L, "key", pw ? "not a valid PEM private key, or wrong password"
                          : "not a valid PEM private key");
  ok = SSL_CTX_use_PrivateKey(ctx, k) == 1;
  EVP_PKEY_free(k);
  if (!ok)
    opterror(L, "key", "does not match the certificate, or cannot be used");
  if (SSL_CTX_check_private_key(ctx) != 1)
    opterror(L, "key", "does not match the certificate");
}

/* cadata: PEM text of trusted certificates. */
static void loadcadata (lua_State *L, SSL_CTX *ctx, const char *s,
                        size_t len) {
  BIO *b = BIO_new_mem_buf(s, (int)len);
  X509_STORE *st = SSL_CTX_get_cert_store(ctx);
  X509 *x;
  int n = 0;
  if (b == NULL)
    luaL_error(L, "context: not enough memory");
  while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
    X509_STORE_add_cert(st, x);
    X509_free(x);
    n++;
  }
  BIO_free(b);
  ERR_clear_error();
  if (n == 0)
    opterror(L, "cadata", "no PEM certificate in it");
}

static int checkversion (lua_State *L, const char *opt) {
  static const char *const names[] = {"TLSv1", "TLSv1.1", "TLSv1.2",
                                      "TLSv1.3", NULL};
  static const int versions[] = {TLS1_VERSION, TLS1_1_VERSION,
                                 TLS1_2_VERSION, TLS1_3_VERSION};
  const char *s = optstring(L, opt, NULL);
  int i;
  if (s == NULL)
    return 0;
  for (i = 0; names[i] != NULL; i++)
    if (strcmp(s, names[i]) == 0)
      return versions[i];
  opterror(L, opt, lua_pushfstring(L, "'%s' is not one of \"TLSv1\", "
           "\"TLSv1.1\", \"TLSv1.2\", \"TLSv1.3\"", s));
  return 0;
}

/* alpn: a list of protocol names, made into the wire format. */
static void loadalpn (lua_State *L, tlsctx *c) {
  luaL_Buffer b;
  lua_Integer i, n;
  size_t len;
  int lidx;
  const char *w;
  if (lua_getfield(L, 1, "alpn") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lidx = lua_gettop(L);
  if (!lua_istable(L, lidx))
    opterror(L, "alpn", "list of protocol names expected");
  n = luaL_len(L, lidx);
  for (i = 1; i <= n; i++) {  /* checked first: the buffer uses the stack */
    if (lua_geti(L, lidx, i) != LUA_TSTRING)
      opterror(L, "alpn", lua_pushfstring(L, "item %I is not a string", i));
    lua_tolstring(L, -1, &len);
    if (len == 0 || len > 255)
      opterror(L, "alpn", lua_pushfstring(L, "item %I must be 1..255 bytes",
                                          i));
    lua_pop(L, 1);
  }
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    lua_geti(L, lidx, i);
    lua_tolstring(L, -1, &len);
    luaL_addchar(&b, (char)len);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  w = lua_tolstring(L, -1, &len);
  if (len > 0) {
    c->alpn = (unsigned char *)malloc(len);
    if (c->alpn == NULL)
      luaL_error(L, "context: not enough memory");
    memcpy(c->alpn, w, len);
    c->alpnlen = (unsigned int)len;
    if (!c->server && SSL_CTX_set_alpn_protos(c->ctx, c->alpn,
                                              c->alpnlen) != 0)
      opterror(L, "alpn", "refused");
  }
  lua_settop(L, lidx - 1);
}

static int alpn_select (SSL *ssl, const unsigned char **out,
                        unsigned char *outlen, const unsigned char *in,
                        unsigned int inlen, void *arg) {
  tlsctx *c = (tlsctx *)arg;
  unsigned char *o;
  (void)ssl;
  if (c->alpn == NULL)
    return SSL_TLSEXT_ERR_NOACK;
  if (SSL_select_next_proto(&o, outlen, c->alpn, c->alpnlen, in, inlen)
      != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

static int sni_cb (SSL *ssl, int *al, void *arg);
static int newsession_cb (SSL *ssl, SSL_SESSION *sess);

static int ctx_gc (lua_State *L) {
  tlsctx *c = (tlsctx *)luaL_checkudata(L, 1, CTX_MT);
  int i;
  for (i = 0; i < c->nsessions; i++) {
    free(c->sessions[i].name);
    SSL_SESSION_free(c->sessions[i].sess);
  }
  c->nsessions = 0;
  if (c->ctx != NULL) {
    SSL_CTX_set_ex_data(c->ctx, ctxidx, NULL);
    SSL_CTX_free(c->ctx);
    c->ctx = NULL;
  }
  free(c->alpn);
  c->alpn = NULL;
  return 0;
}

static const char *const options[] = {
  "server", "cert", "key", "password", "cafile", "capath", "cadata",
  "verify", "check_hostname", "min_version", "max_version", "ciphers",
  "ciphersuites", "alpn", "sni", "session_cache", "ragged_eof", NULL
};

/*
** tls.context{...} -> a context for clients (server = false, the
** default) or servers. See docs/tls.md for the options.
*/
static int tls_context (lua_State *L) {
  tlsctx *c;
  const char *cert, *key, *pw, *cafile, *capath, *cadata, *s;
  size_t certlen = 0, keylen = 0, cadatalen = 0;
  int verify, minv, maxv;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  if (!lua_istable(L, 1))
    return luaL_error(L, "bad argument #1 to 'context' (table expected, got "
                      "%s)", luaL_typename(L, 1));
  lua_settop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int i, known = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (i = 0; options[i] != NULL && !known; i++)
        known = strcmp(lua_tostring(L, -1), options[i]) == 0;
    if (!known)
      return luaL_error(L, "bad argument #1 to 'context' (unknown option "
                        "'%s')", luaL_tolstring(L, -1, NULL));
  }
  c = (tlsctx *)lua_newuserdatauv(L, sizeof *c, CUV_COUNT);  /* 2 */
  memset(c, 0, sizeof *c);
  luaL_setmetatable(L, CTX_MT);
  c->server = (uint8_t)optbool(L, "server", 0);
  c->ctx = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
  if (c->ctx == NULL)
    return luaL_error(L, "context: cannot make an SSL_CTX");
  SSL_CTX_set_ex_data(c->ctx, ctxidx, c);
  /* the same defaults as Python's create_default_context */
  SSL_CTX_set_options(c->ctx, SSL_OP_NO_COMPRESSION
                      | SSL_OP_CIPHER_SERVER_PREFERENCE
                      | SSL_OP_SINGLE_DH_USE | SSL_OP_SINGLE_ECDH_USE);
  SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                   | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                   | SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
  /* verification */
  s = optstring(L, "verify", NULL);
  if (s == NULL)
    verify = c->server ? 0 : 2;
  else if (strcmp(s, "none") == 0)
    verify = 0;
  else if (strcmp(s, "optional") == 0)
    verify = 1;
  else if (strcmp(s, "required") == 0)
    verify = 2;
  else
    return opterror(L, "verify", lua_pushfstring(L, "'%s' is not one of "
                    "\"none\", \"optional\", \"required\"", s));
  c->check_hostname = (uint8_t)optbool(L, "check_hostname",
                                       !c->server && verify != 0);
  if (c->check_hostname && c->server)
    return opterror(L, "check_hostname", "is for clients");
  if (c->check_hostname && verify == 0)
    return opterror(L, "check_hostname", "needs verify (\"optional\" or "
                    "\"required\"), not \"none\"");
  SSL_CTX_set_verify(c->ctx, verify == 0 ? SSL_VERIFY_NONE
                     : verify == 1 || !c->server ? SSL_VERIFY_PEER
                     : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                     NULL);
  /* certificate and key */
  pw = optstring(L, "password", NULL);   /* the options table keeps it */
  cert = optstring(L, "cert", &certlen);
  key = optstring(L, "key", &keylen);
  if (cert != NULL)
    loadcert(L, c->ctx, cert, certlen);
  if (key != NULL || cert != NULL)
    loadkey(L, c->ctx, key != NULL ? key : cert,
            key != NULL ? keylen : certlen, pw);
  else if (c->server)
    return opterror(L, "cert", "a server needs a certificate and its key");
  /* trust */
  cafile = optstring(L, "cafile", NULL);
  capath = optstring(L, "capath", NULL);
  cadata = optstring(L, "cadata", &cadatalen);
  if ((cafile != NULL || capath != NULL)
      && SSL_CTX_load_verify_locations(c->ctx, cafile, capath) != 1)
    return opterror(L, cafile != NULL ? "cafile" : "capath",
                    lua_pushfstring(L, "cannot load '%s'",
                                    cafile != NULL ? cafile : capath));
  if (cadata != NULL)
    loadcadata(L, c->ctx, cadata, cadatalen);
  if (cafile == NULL && capath == NULL && cadata == NULL && verify != 0
      && SSL_CTX_set_default_verify_paths(c->ctx) != 1)
    ERR_clear_error();  /* no system store: nothing will verify */
  /* protocol versions and ciphers */
  minv = checkversion(L, "min_version");
  maxv = checkversion(L, "max_version");
  if (minv != 0 && SSL_CTX_set_min_proto_version(c->ctx, minv) != 1)
    return opterror(L, "min_version", "refused");
  if (maxv != 0 && SSL_CTX_set_max_proto_version(c->ctx, maxv) != 1)
    return opterror(L, "max_version", "refused");
  if (minv != 0 && maxv != 0 && maxv < minv)
    return opterror(L, "max_version", "is below min_version");
  s = optstring(L, "ciphers", NULL);
  if (s != NULL && SSL_CTX_set_cipher_list(c->ctx, s) != 1)
    return opterror(L, "ciphers", lua_pushfstring(L, "no cipher matches "
                    "'%s'", s));
  s = optstring(L, "ciphersuites", NULL);
  if (s != NULL && SSL_CTX_set_ciphersuites(c->ctx, s) != 1)
    return opterror(L, "ciphersuites", lua_pushfstring(L, "no cipher suite "
                    "matches '%s'", s));
  loadalpn(L, c);
  if (c->server)
    SSL_CTX_set_alpn_select_cb(c->ctx, alpn_select, c);
  /* server name indication */
  if (lua_getfield(L, 1, "sni") != LUA_TNIL) {
    if (!c->server)
      return opterror(L, "sni", "is for servers");
    if (lua_type(L, -1) != LUA_TFUNCTION)
      return opterror(L, "sni", lua_pushfstring(L, "function expected, got "
                      "%s", luaL_typename(L, -1)));
    SSL_CTX_set_tlsext_servername_callback(c->ctx, sni_cb);
  }
  lua_setiuservalue(L, 2, CUV_SNI);
  /* sessions */
  c->session_cache = (uint8_t)optbool(L, "session_cache", 1);
  if (c->server) {
    static const unsigned char sid[] = "loom";
    SSL_CTX_set_session_id_context(c->ctx, sid, sizeof sid - 1);
    if (!c->session_cache)
      SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
  }
  else if (c->session_cache) {
    SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_CLIENT
                                   | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c->ctx, newsession_cb);
  }
  c->ragged_eof = (uint8_t)optbool(L, "ragged_eof", 0);
  ERR_clear_error();
  return 1;
}

static int ctx_tostring (lua_State *L) {
  tlsctx *c = (tlsctx *)luaL_checkudata(L, 1, CTX_MT);
  lua_pushfstring(L, "%s (%s) %p", CTX_MT, c->server ? "server" : "client",
                  (void *)c);
  return 1;
}

/* ctx:is_server() */
static int ctx_is_server (lua_State *L) {
  lua_pushboolean(L, checkctx(L, 1)->server);
  return 1;
}

/* ctx:check_hostname() */
static int ctx_check_hostname (lua_State *L) {
  lua_pushboolean(L, checkctx(L, 1)->check_hostname);
  return 1;
}

/* The cached session for name, or NULL. */
static SSL_SESSION *findsession (tlsctx *c, const char *name) {
  int i;
  for (i = 0; i < c->nsessions; i++)
    if (strcmp(c->sessions[i].name, name) == 0)
      return c->sessions[i].sess;
  return NULL;
}

/* A client got a session ticket: keep the newest one per server name. */
static int newsession_cb (SSL *ssl, SSL_SESSION *sess) {
  tlsctx *c = (tlsctx *)SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctxidx);
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  int i;
  char *copy;
  if (c == NULL || name == NULL || !c->session_cache)
    return 0;
  for (i = 0; i < c->nsessions; i++)
    if (strcmp(c->sessions[i].name, name) == 0) {
      SSL_SESSION_free(c->sessions[i].sess);
      c->sessions[i].sess = sess;
      return 1;
    }
  copy = strdup(name);
  if (copy == NULL)
    return 0;
  if (c->nsessions == MAX_SESSIONS) {  /* drop the oldest */
    free(c->sessions[0].name);
    SSL_SESSION_free(c->sessions[0].sess);
    memmove(&c->sessions[0], &c->sessions[1],
            sizeof(session) * (MAX_SESSIONS - 1));
    c->nsessions--;
  }
  c->sessions[c->nsessions].name = copy;
  c->sessions[c->nsessions].sess = sess;
  c->nsessions++;
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** The TLS layer
** =======================================================
*/

enum { ST_HANDSHAKE, ST_WRAPPED, ST_SHUTDOWN, ST_CLOSED };

/* Bytes owned by the layer: p[off .. off+len) are waiting. */
typedef struct bbuf {
  char *p;
  size_t off, len, cap;
} bbuf;

typedef struct tls {
  SSL *ssl;                 /* owns both BIOs */
  bbuf in;                  /* records read, not yet taken by OpenSSL */
  bbuf out;                 /* records OpenSSL wrote, not yet sent */
  const char *feed;         /* records of the read being handed over, */
  size_t feedlen;           /* taken after those in 'in' */
  loom_tcp_ud *raw;         /* the plain transport, when stream.c's */
  lua_State *L;             /* while OpenSSL may call back */
  int tidx;                 /* the transport's index on L meanwhile */
  size_t backlog;           /* bytes written before the handshake ended */
  double hs_timeout, sd_timeout;
  uint8_t state;
  uint8_t server;
  uint8_t made;             /* the application's connection_made ran */
  uint8_t closing;          /* close() or abort() was called */
  uint8_t app_paused;       /* pause_reading() */
  uint8_t renego;           /* the peer started a renegotiation */
  uint8_t ragged_eof;
  uint8_t lost;             /* the plain transport's connection_lost came */
  uint8_t pump_queued;      /* a resumed read is scheduled */
  uint8_t call_made;        /* call the application's connection_made
                               (not after start_tls) */
} tls;

/* User values of a TLS transport. */
enum { TLSUV_RAW = 1, TLSUV_APP, TLSUV_LOOP, TLSUV_CTX, TLSUV_WAITER, TLSUV_TIMER,
       TLSUV_ERR, TLSUV_PENDING, TLSUV_SNICTX, TLSUV_NUV = TLSUV_SNICTX };

static int tlsidx;  /* SSL ex_data index of the tls struct */


/*
** The BIOs. OpenSSL's memory BIO copies what comes in, grows by
** reallocating and clearing, and copies again what goes out; these do
** neither. The read BIO serves the bytes kept in t->in and then those of
** the read being handed over (t->feed, pointing into the plain
** transport's read buffer or a string): only what OpenSSL leaves of a
** read while the application does not read is copied, into t->in. The
** write BIO gathers the records of an operation in t->out, and flush
** gives them to the socket in one write (a write per 16 KiB record
** would cost the kernel twice as much).
*/

#define BBUF_KEEP (256 * 1024)   /* an empty buffer larger is freed */

/* Appends n bytes to b; 0 when memory runs out. */
static int bb_append (bbuf *b, const char *p, size_t n) {
  if (b->off + b->len + n > b->cap) {
    if (b->off > 0) {
      memmove(b->p, b->p + b->off, b->len);
      b->off = 0;
    }
    if (b->len + n > b->cap) {
      size_t cap = b->cap > 0 ? b->cap : 4096;
      char *q;
      while (cap < b->len + n)
        cap *= 2;
      q = (char *)realloc(b->p, cap);
      if (q == NULL)
        return 0;
      b->p = q;
      b->cap = cap;
    }
  }
  memcpy(b->p + b->off + b->len, p, n);
  b->len += n;
  return 1;
}

/* Drops the first n waiting bytes of b. */
static void bb_take (bbuf *b, size_t n) {
  b->off += n;
  b->len -= n;
  if (b->len == 0) {
    b->off = 0;
    if (b->cap > BBUF_KEEP) {
      free(b->p);
      b->p = NULL;
      b->cap = 0;
    }
  }
}

/* The plain transport's conn when records may go to its socket now:
** a stream.c transport, open, with no write queued before them. */
static loom_conn *direct (tls *t) {
  loom_conn *c = t->raw != NULL ? t->raw->c : NULL;
  if (c == NULL || c->nwrites != 0 || c->closing || c->closed
      || c->sending != NULL || c->eof_out)
    return NULL;
  return c;
}

static int rbio_read (BIO *b, char *buf, int size) {
  tls *t = (tls *)BIO_get_data(b);
  size_t want = size > 0 ? (size_t)size : 0, n = 0, k;
  BIO_clear_retry_flags(b);
  if (t->in.len > 0 && want > 0) {
    k = t->in.len < want ? t->in.len : want;
    memcpy(buf, t->in.p + t->in.off, k);
    bb_take(&t->in, k);
    n = k;
  }
  if (n < want && t->feedlen > 0) {
    k = t->feedlen < want - n ? t->feedlen : want - n;
    memcpy(buf + n, t->feed, k);
    t->feed += k;
    t->feedlen -= k;
    n += k;
  }
  if (n == 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  return (int)n;
}

static int wbio_write (BIO *b, const char *p, int size) {
  tls *t = (tls *)BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (size <= 0)
    return 0;
  return bb_append(&t->out, p, (size_t)size) ? size : -1;
}

static long rbio_ctrl (BIO *b, int cmd, long num, void *ptr) {
  tls *t = (tls *)BIO_get_data(b);
  (void)num; (void)ptr;
  switch (cmd) {
    case BIO_CTRL_PENDING: return (long)(t->in.len + t->feedlen);
    case BIO_CTRL_FLUSH: return 1;
    default: return 0;
  }
}

static long wbio_ctrl (BIO *b, int cmd, long num, void *ptr) {
  tls *t = (tls *)BIO_get_data(b);
  (void)num; (void)ptr;
  switch (cmd) {
    case BIO_CTRL_WPENDING: return (long)t->out.len;
    case BIO_CTRL_FLUSH: return 1;
    default: return 0;
  }
}

static int bio_create (BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *rmeth, *wmeth;  /* made once per process */

static BIO_METHOD *newmeth (const char *name, int isread) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               name);
  if (m == NULL)
    return NULL;
  BIO_meth_set_create(m, bio_create);
  if (isread) {
    BIO_meth_set_read(m, rbio_read);
    BIO_meth_set_ctrl(m, rbio_ctrl);
  }
  else {
    BIO_meth_set_write(m, wbio_write);
    BIO_meth_set_ctrl(m, wbio_ctrl);
  }
  return m;
}

/*
** Empties the thread's OpenSSL error queue before an SSL call, whose
** SSL_get_error looks at it. Looking first is much cheaper than
** clearing, and the queue is nearly always empty: this is on the path
** of every read and write.
*/
static void clear_errors (void) {
  if (ERR_peek_error() != 0)
    ERR_clear_error();
}

static tls *checkt (lua_State *L, int idx) {
  return (tls *)luaL_checkudata(L, idx, TLST_MT);
}

/* The TLS transport of the TLS protocol at 1, at 3 (above the one
** argument a protocol method takes). */
static tls *prototls (lua_State *L) {
  luaL_checkudata(L, 1, TLSP_MT);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1);
  return (tls *)lua_touserdata(L, -1);
}

/* Calls obj:method(args...) with the nargs values on top; nres results.
** [-nargs, +nres, e] */
static void method (lua_State *L, int oidx, const char *name, int nargs,
                    int nres) {
  oidx = lua_absindex(L, oidx);
  lua_getfield(L, oidx, name);
  lua_insert(L, -nargs - 1);
  lua_pushvalue(L, oidx);
  lua_insert(L, -nargs - 1);
  lua_call(L, nargs + 1, nres);
}

/* Calls uservalue uv of the transport at tidx: :method(args). Nothing
** when the user value is nil. */
static void uvmethod (lua_State *L, int tidx, int uv, const char *name,
                      int nargs) {
  if (lua_getiuservalue(L, tidx, uv) == LUA_TNIL) {
    lua_pop(L, nargs + 1);
    return;
  }
  lua_insert(L, -nargs - 1);
  method(L, -nargs - 1, name, nargs, 0);
  lua_pop(L, 1);
}

static void fatal (lua_State *L, struct tls *t, int tidx, int eidx);
static void appfail (lua_State *L, int tidx, int base, const char *name);

/*
** The application's protocol method name(proto, args) with the nargs
** values on top, when it has one; its first result is left on top (nil
** when missing). Protected: an error goes to the exception handler
** ("Fatal error: protocol.<name>() call failed.", with this transport
** and the application's protocol), and the connection is aborted,
** connection_lost getting the error. [-nargs, +1, e]
*/
static void appcall (lua_State *L, int tidx, const char *name, int nargs) {
  int base = lua_gettop(L) - nargs;
  lua_getiuservalue(L, tidx, TLSUV_APP);       /* proto */
  if (lua_isnil(L, -1) || lua_getfield(L, -1, name) == LUA_TNIL) {
    lua_settop(L, base);
    lua_pushnil(L);
    return;
  }
  lua_insert(L, base + 1);                   /* fn, args, proto */
  lua_insert(L, base + 2);                   /* fn, proto, args */
  lua_pushcfunction(L, loom__traceback);
  lua_insert(L, base + 1);                   /* msgh, fn, proto, args */
  if (lua_pcall(L, nargs + 1, 1, base + 1) == LUA_OK) {
    lua_remove(L, base + 1);
    return;
  }
  appfail(L, tidx, base, name);
}

/*
** The application's protocol method name failed with the error at
** base + 2: to the exception handler, and the connection aborted. Leaves
** nil at base + 1. [-?, +0, e]
*/
static void appfail (lua_State *L, int tidx, int base, const char *name) {
  lua_pushcfunction(L, loom__protocol_report);   /* base + 3 */
  lua_getiuservalue(L, tidx, TLSUV_LOOP);
  lua_pushvalue(L, base + 2);
  lua_pushvalue(L, tidx);
  lua_getiuservalue(L, tidx, TLSUV_APP);
  lua_pushlightuserdata(L, (void *)name);
  lua_pushfstring(L, "Fatal error: protocol.%s() call failed.", name);
  lua_pcall(L, 6, 0, 0);
  lua_settop(L, base + 2);
  if (lua_istable(L, -1) && !lua_getmetatable(L, -1)) {  /* the error */
    lua_getfield(L, -1, "exception");
    lua_replace(L, -2);
  }
  else if (lua_istable(L, -1))
    lua_pop(L, 1);
  fatal(L, (struct tls *)lua_touserdata(L, tidx), tidx, -1);
  lua_settop(L, base);
  lua_pushnil(L);
}

static void cancel_timer (lua_State *L, int tidx) {
  if (lua_getiuservalue(L, tidx, TLSUV_TIMER) != LUA_TNIL) {
    method(L, -1, "cancel", 0, 0);
    lua_pushnil(L);
    lua_setiuservalue(L, tidx, TLSUV_TIMER);
  }
  lua_pop(L, 1);
}

static int on_timeout (lua_State *L);

/* Starts the handshake or shutdown timer of the transport at tidx. */
static void start_timer (lua_State *L, int tidx, double secs) {
  cancel_timer(L, tidx);
  if (secs <= 0)
    return;
  lua_getiuservalue(L, tidx, TLSUV_LOOP);
  lua_pushnumber(L, secs);
  lua_pushcfunction(L, on_timeout);
  lua_pushvalue(L, tidx);
  method(L, -4, "call_later", 3, 1);
  lua_setiuservalue(L, tidx, TLSUV_TIMER);
  lua_pop(L, 1);
}

/* Completes the handshake's waiter, if pending: with the error at eidx,
** or (eidx 0) with no value. */
static void wake_waiter (lua_State *L, int tidx, int eidx) {
  loom_future *f;
  eidx = eidx ? lua_absindex(L, eidx) : 0;
  if (lua_getiuservalue(L, tidx, TLSUV_WAITER) == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  lua_setiuservalue(L, tidx, TLSUV_WAITER);
  f = (loom_future *)lua_touserdata(L, -1);
  if (f != NULL && f->state == LOOM_PENDING) {
    if (eidx) {
      lua_pushvalue(L, eidx);
      method(L, -2, "set_exception", 1, 0);
    }
    else
      method(L, -1, "set_result", 0, 0);
  }
  lua_pop(L, 1);
}

/* Moves the records OpenSSL wrote and the socket did not take to the
** plain transport's write (dropped once it is gone). */
static void flush (lua_State *L, tls *t, int tidx) {
  loom_conn *c;
  if (t->out.len == 0)
    return;
  if (t->lost || lua_getiuservalue(L, tidx, TLSUV_RAW) == LUA_TNIL) {
    bb_take(&t->out, t->out.len);
    if (!t->lost)
      lua_pop(L, 1);
    return;
  }
  if ((c = direct(t)) != NULL) {
    size_t n = t->out.len < (1u << 30) ? t->out.len : (1u << 30);
    uv_buf_t ub = uv_buf_init(t->out.p + t->out.off, (unsigned int)n);
    int r = uv_try_write((uv_stream_t *)&c->h, &ub, 1);
    if (r > 0)
      bb_take(&t->out, (size_t)r);
  }
  if (t->out.len > 0) {
    lua_pushlstring(L, t->out.p + t->out.off, t->out.len);
    bb_take(&t->out, t->out.len);
    method(L, -2, "write", 1, 0);
  }
  lua_pop(L, 1);
}

/*
** A fatal error (at eidx) of the connection: the handshake waiter gets
** it, connection_lost will, and the plain transport is aborted.
*/
static void fatal (lua_State *L, struct tls *t, int tidx, int eidx) {
  eidx = lua_absindex(L, eidx);
  if (t->state == ST_CLOSED)
    return;
  t->state = ST_CLOSED;
  t->closing = 1;
  cancel_timer(L, tidx);
  lua_pushvalue(L, eidx);
  lua_setiuservalue(L, tidx, TLSUV_ERR);
  if (!t->made && lua_getiuservalue(L, tidx, TLSUV_WAITER) == LUA_TNIL) {
    /* a server's connection failed before the application saw it:
    ** reported in debug mode, as asyncio does */
    lua_getiuservalue(L, tidx, TLSUV_LOOP);
    method(L, -1, "get_debug", 0, 1);
    if (lua_toboolean(L, -1)) {
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "TLS handshake failed on an incoming connection");
      lua_setfield(L, -2, "message");
      lua_pushvalue(L, eidx);
      lua_setfield(L, -2, "exception");
      lua_pushvalue(L, tidx);
      lua_setfield(L, -2, "transport");
      method(L, -3, "call_exception_handler", 1, 0);
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  wake_waiter(L, tidx, eidx);
  uvmethod(L, tidx, TLSUV_RAW, "abort", 0);
}

/* Pushes the error for an SSL call that failed with r. */
static void push_callerror (lua_State *L, tls *t, int r, const char *what) {
  push_sslerror(L, t->ssl, SSL_get_error(t->ssl, r), what);
}

/* Writes the string at sidx through the SSL object. */
static int sslwrite (lua_State *L, tls *t, int tidx, int sidx) {
  size_t len, off = 0;
  const char *s = lua_tolstring(L, sidx, &len);
  while (off < len) {
    size_t chunk = len - off > (1u << 30) ? (1u << 30) : len - off;
    int r;
    clear_errors();
    r = SSL_write(t->ssl, s + off, (int)chunk);
    if (r <= 0) {
      push_callerror(L, t, r, "write");
      fatal(L, t, tidx, -1);
      lua_pop(L, 1);
      return 0;
    }
    off += (size_t)r;
  }
  return 1;
}

static void shutdown_tls (lua_State *L, tls *t, int tidx);

/* The handshake ended well: writes what was written meanwhile, calls
** the application's connection_made, wakes the waiter. */
static void handshake_done (lua_State *L, tls *t, int tidx) {
  t->state = ST_WRAPPED;
  cancel_timer(L, tidx);
  if (lua_getiuservalue(L, tidx, TLSUV_PENDING) == LUA_TTABLE) {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
    lua_pushnil(L);
    lua_setiuservalue(L, tidx, TLSUV_PENDING);
    for (i = 1; i <= n && t->state == ST_WRAPPED; i++) {
      lua_rawgeti(L, -1, i);
      sslwrite(L, t, tidx, -1);
      lua_pop(L, 1);
    }
    t->backlog = 0;
  }
  lua_pop(L, 1);
  flush(L, t, tidx);
  if (t->state != ST_WRAPPED)
    return;
  if (!t->made) {
    t->made = 1;
    if (t->call_made) {
      lua_pushvalue(L, tidx);
      appcall(L, tidx, "connection_made", 1);
      lua_pop(L, 1);
    }
  }
  wake_waiter(L, tidx, 0);
  if (t->closing && t->state == ST_WRAPPED)
    shutdown_tls(L, t, tidx);  /* close() came during the handshake */
}

/* The peer's close_notify came: asyncio's rule, eof_received of the
** application (whatever it answers, TLS has no half-close), then our
** own close_notify and the close. */
static void got_close_notify (lua_State *L, tls *t, int tidx) {
  if (t->state == ST_WRAPPED) {
    appcall(L, tidx, "eof_received", 0);
    lua_pop(L, 1);
  }
  if (t->state == ST_CLOSED)
    return;
  ERR_clear_error();
  SSL_shutdown(t->ssl);
  ERR_clear_error();
  t->state = ST_CLOSED;
  t->closing = 1;
  cancel_timer(L, tidx);
  flush(L, t, tidx);
  uvmethod(L, tidx, TLSUV_RAW, "close", 0);
}

/*
** appgetbuf(proto, hint): proto:get_buffer(hint), checked; returns the
** Buffer and its room (light userdata, length). Under pcall.
*/
static int appgetbuf (lua_State *L) {
  lua_settop(L, 2);
  lua_getfield(L, 1, "get_buffer");
  lua_insert(L, 1);
  lua_call(L, 2, 2);
  loom__bufroom(L, 1);
  lua_remove(L, 2);
  return 3;
}

/*
** When the application's protocol is buffered (has get_buffer), asks it
** for the room to read into: pushes the Buffer (which the stack anchors
** while OpenSSL writes into it), sets *dst and *cap, returns 1. Returns
** 0 (nothing pushed) for an ordinary protocol; -1 when get_buffer
** failed, which aborted the connection as a failed protocol call does;
** 2 (nothing pushed, nothing read) when get_buffer set another protocol.
*/
static int appbuffer (lua_State *L, tls *t, int tidx, char **dst,
                      size_t *cap) {
  int base = lua_gettop(L), buffered;
  lua_getiuservalue(L, tidx, TLSUV_APP);   /* base + 1 */
  buffered = lua_istable(L, -1) || lua_isuserdata(L, -1);
  if (buffered)
    buffered = lua_getfield(L, -1, "get_buffer") != LUA_TNIL;
  lua_settop(L, base + 1);
  if (!buffered) {
    lua_settop(L, base);
    return 0;
  }
  lua_pushcfunction(L, loom__traceback);   /* base + 2 */
  lua_pushcfunction(L, appgetbuf);
  lua_pushvalue(L, base + 1);
  lua_pushinteger(L, 65536);               /* as a plain transport's */
  if (lua_pcall(L, 2, 3, base + 2) != LUA_OK) {
    appfail(L, tidx, base + 1, "get_buffer");
    lua_settop(L, base);
    return -1;
  }
  if (t->state != ST_WRAPPED) {  /* get_buffer closed it */
    lua_settop(L, base);
    return -1;
  }
  lua_getiuservalue(L, tidx, TLSUV_APP);
  if (!lua_rawequal(L, -1, base + 1)) {  /* get_buffer set a new protocol */
    lua_settop(L, base);
    return 2;
  }
  *dst = (char *)lua_touserdata(L, base + 4);
  *cap = (size_t)lua_tointeger(L, base + 5);
  lua_settop(L, base + 3);                 /* base + 3: the Buffer */
  lua_remove(L, base + 1);
  lua_remove(L, base + 1);                 /* base + 1: the Buffer */
  return 1;
}

static void pump (lua_State *L, tls *t, int tidx);

/* resumed(transport): reads what the SSL object holds (called soon after
** resume_reading, as asyncio does). */
static int resumed (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_settop(L, 1);
  t->pump_queued = 0;
  if (!t->app_paused && (t->state == ST_WRAPPED || t->state == ST_SHUTDOWN))
    pump(L, t, 1);
  return 0;
}

/* Has the transport at tidx read what the SSL object holds soon, in a
** callback of its own. [-0, +0, e] */
static void queue_pump (lua_State *L, tls *t, int tidx) {
  if (!t->pump_queued && t->state != ST_CLOSED) {
    t->pump_queued = 1;
    lua_getiuservalue(L, tidx, TLSUV_LOOP);
    lua_pushcfunction(L, resumed);
    lua_pushvalue(L, tidx);
    method(L, -3, "call_soon", 2, 0);
  }
}

/*
** Reads plain text out of the SSL object and gives it to the
** application, while it reads; handles the handshake first. The heart of
** the layer: called whenever records came in.
*/
static void pump (lua_State *L, tls *t, int tidx) {
  static _Thread_local char buf[READ_CHUNK];
  int r;
  if (t->state == ST_HANDSHAKE) {
    ERR_clear_error();
    t->L = L;
    t->tidx = tidx;
    r = SSL_do_handshake(t->ssl);
    t->L = NULL;
    if (r != 1) {
      int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        flush(L, t, tidx);
        return;
      }
      flush(L, t, tidx);  /* the alert, if any */
      if (lua_getiuservalue(L, tidx, TLSUV_ERR) == LUA_TNIL) {
        lua_pop(L, 1);
        push_sslerror(L, t->ssl, e, "handshake");
      }
      fatal(L, t, tidx, -1);
      lua_pop(L, 1);
      return;
    }
    handshake_done(L, t, tidx);
  }
  while ((t->state == ST_WRAPPED || t->state == ST_SHUTDOWN)
         && !t->app_paused) {
    size_t len = 0, cap = sizeof buf;
    char *dst = buf;
    int e = SSL_ERROR_NONE, top = lua_gettop(L);
    int buffered = t->state == ST_WRAPPED ? appbuffer(L, t, tidx, &dst, &cap)
                                          : 0;
    if (buffered < 0)
      break;  /* get_buffer failed (the connection is aborted) or closed
                 the transport */
    if (buffered == 2) {  /* get_buffer set another protocol: its turn */
      queue_pump(L, t, tidx);
      break;
    }
    while (len < cap) {
      size_t got;
      clear_errors();
      r = SSL_read_ex(t->ssl, dst + len, cap - len, &got);
      if (r != 1) {
        e = SSL_get_error(t->ssl, 0);
        break;
      }
      len += got;
      if (t->in.len + t->feedlen == 0 && !SSL_has_pending(t->ssl)) {
        e = SSL_ERROR_WANT_READ;  /* what another SSL_read would say */
        break;
      }
    }
    if (t->renego) {
      lua_settop(L, top);
      flush(L, t, tidx);
      push_plainerror(L, "RENEGOTIATION_REFUSED", "[SSL: "
                      "RENEGOTIATION_REFUSED] read: the peer started a "
                      "renegotiation, which loom does not allow");
      fatal(L, t, tidx, -1);
      lua_pop(L, 1);
      return;
    }
    if (len > 0 && t->state == ST_WRAPPED && buffered) {
      lua_pushinteger(L, (lua_Integer)len);
      appcall(L, tidx, "buffer_updated", 1);
    }
    else if (len > 0 && t->state == ST_WRAPPED) {
      lua_pushlstring(L, buf, len);
      appcall(L, tidx, "data_received", 1);
    }
    lua_settop(L, top);  /* the Buffer, if any, is let go */
    if (e == SSL_ERROR_NONE)
      continue;   /* the buffer filled: more may wait */
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      got_close_notify(L, t, tidx);
      return;
    }
    flush(L, t, tidx);
    push_sslerror(L, t->ssl, e, "read");
    fatal(L, t, tidx, -1);
    lua_pop(L, 1);
    return;
  }
  if (t->state != ST_CLOSED)
    flush(L, t, tidx);  /* tickets, key updates, alerts */
}

/* Sends close_notify; the connection closes when the peer answers with
** its own (or its EOF), or after the shutdown timeout. */
static void shutdown_tls (lua_State *L, tls *t, int tidx) {
  int r;
  t->state = ST_SHUTDOWN;
  start_timer(L, tidx, t->sd_timeout);
  ERR_clear_error();
  r = SSL_shutdown(t->ssl);
  ERR_clear_error();
  flush(L, t, tidx);
  if (r == 1) {   /* both close_notify done */
    t->state = ST_CLOSED;
    cancel_timer(L, tidx);
    uvmethod(L, tidx, TLSUV_RAW, "close", 0);
  }
}

/* on_timeout(transport): the handshake or shutdown took too long. */
static int on_timeout (lua_State *L) {
  tls *t = checkt(L, 1);
  int hs = t->state == ST_HANDSHAKE;
  lua_settop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, TLSUV_TIMER);
  if (!hs && t->state != ST_SHUTDOWN)
    return 0;
  lua_pushfstring(L, "TLS %s is taking longer than %f seconds: aborting "
                  "the connection", hs ? "handshake" : "shutdown",
                  hs ? t->hs_timeout : t->sd_timeout);   /* 2 */
  lua_createtable(L, 0, 0);
  push_errclass(L, "TimeoutError", lua_tostring(L, 2));
  fatal(L, t, 1, -1);
  return 0;
}

/* SSL info callback: notes a renegotiation (a handshake that starts after
** the first one, before TLS 1.3, where later handshake messages are
** tickets and key updates). */
static void info_cb (const SSL *ssl, int where, int ret) {
  tls *t = (tls *)SSL_get_ex_data(ssl, tlsidx);
  (void)ret;
  if (t != NULL && (where & SSL_CB_HANDSHAKE_START)
      && t->state != ST_HANDSHAKE && SSL_version(ssl) < TLS1_3_VERSION)
    t->renego = 1;
}

/* sni_call(fn, name) -> context or nil, under pcall. */
static int sni_call (lua_State *L) {
  lua_call(L, 1, 1);
  if (!lua_isnil(L, -1) && testctx(L, -1) == NULL)
    return luaL_error(L, "sni callback returned a %s (loom.tls.Context or "
                      "nil expected)", luaL_typename(L, -1));
  return 1;
}

/* The server got a name: the context's sni function may pick another
** context for it. */
static int sni_cb (SSL *ssl, int *al, void *arg) {
  tls *t = (tls *)SSL_get_ex_data(ssl, tlsidx);
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  lua_State *L;
  int top, r = SSL_TLSEXT_ERR_OK;
  (void)arg;
  if (t == NULL || (L = t->L) == NULL || name == NULL
      || !lua_checkstack(L, 8))
    return SSL_TLSEXT_ERR_OK;
  top = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, sni_call);
  lua_getiuservalue(L, t->tidx, TLSUV_CTX);
  lua_getiuservalue(L, -1, CUV_SNI);
  lua_remove(L, -2);
  lua_pushstring(L, name);
  if (lua_pcall(L, 2, 1, top + 1) != LUA_OK) {
    if (lua_istable(L, -1) && !lua_getmetatable(L, -1))
      lua_getfield(L, -1, "exception");
    lua_setiuservalue(L, t->tidx, TLSUV_ERR);
    *al = SSL_AD_INTERNAL_ERROR;
    r = SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  else if (!lua_isnil(L, -1)) {
    tlsctx *c = (tlsctx *)lua_touserdata(L, -1);
    SSL_set_SSL_CTX(ssl, c->ctx);
    lua_setiuservalue(L, t->tidx, TLSUV_SNICTX);
  }
  lua_settop(L, top);
  return r;
}

/*
** _tls_wrap(loop, ctx, app_protocol, server, server_hostname,
** waiter, handshake_timeout, shutdown_timeout, call_made) -> protocol,
** transport:
** the TLS protocol to give the plain transport, and the TLS transport
** the application will see. waiter: a future completed when the
** handshake ends (with its error if it fails), or nil. call_made:
** whether the application's connection_made is called after the
** handshake (false for start_tls, whose protocol is connected already).
*/
static int tls_wrap (lua_State *L) {
  tlsctx *c = checkctx(L, 2);
  int server = lua_toboolean(L, 4);
  size_t hostlen = 0;
  const char *host = lua_isnil(L, 5) ? NULL : luaL_checklstring(L, 5, &hostlen);
  tls *t;
  int call_made = lua_toboolean(L, 9);
  if (host != NULL && strlen(host) != hostlen)  /* OpenSSL would cut it */
    luaL_argerror(L, 5, "server_hostname must be a string without zeros");
  lua_settop(L, 8);
  if (server != c->server)
    return luaL_error(L, server ? "a client context cannot serve TLS "
                      "(make it with server = true)"
                      : "a server context cannot connect (make it without "
                      "server = true)");
  t = (tls *)lua_newuserdatauv(L, sizeof *t, TLSUV_NUV);  /* 9 */
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, TLST_MT);
  t->server = (uint8_t)server;
  t->call_made = (uint8_t)call_made;
  t->ragged_eof = c->ragged_eof;
  t->hs_timeout = luaL_optnumber(L, 7, DEFAULT_HANDSHAKE_TIMEOUT);
  t->sd_timeout = luaL_optnumber(L, 8, DEFAULT_SHUTDOWN_TIMEOUT);
  t->ssl = SSL_new(c->ctx);
  if (t->ssl == NULL)
    return luaL_error(L, "cannot make an SSL object");
  {
    BIO *rbio = rmeth != NULL ? BIO_new(rmeth) : NULL;
    BIO *wbio = wmeth != NULL ? BIO_new(wmeth) : NULL;
    if (rbio == NULL || wbio == NULL) {
      BIO_free(rbio);
      BIO_free(wbio);
      return luaL_error(L, "not enough memory");
    }
    BIO_set_data(rbio, t);
    BIO_set_data(wbio, t);
    SSL_set_bio(t->ssl, rbio, wbio);
  }
  SSL_set_ex_data(t->ssl, tlsidx, t);
  SSL_set_info_callback(t->ssl, info_cb);
  if (server)
    SSL_set_accept_state(t->ssl);
  else {
    unsigned char ip[16];
    int isip = host != NULL && (inet_pton(AF_INET, host, ip) == 1
                                || inet_pton(AF_INET6, host, ip) == 1);
    SSL_set_connect_state(t->ssl);
    if (host != NULL && !isip)
      SSL_set_tlsext_host_name(t->ssl, host);
    if (c->check_hostname) {
      if (host == NULL)
        return luaL_error(L, "server_hostname is needed: the context checks "
                          "host names");
      if (isip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host)
                 != 1
               : SSL_set1_host(t->ssl, host) != 1)
        return luaL_error(L, "cannot check the host name '%s'", host);
    }
    if (host != NULL && !isip && c->session_cache) {
      SSL_SESSION *s = findsession(c, host);
      if (s != NULL)
        SSL_set_session(t->ssl, s);
    }
  }
  ERR_clear_error();
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 9, TLSUV_LOOP);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 9, TLSUV_CTX);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 9, TLSUV_APP);
  lua_pushvalue(L, 6);
  lua_setiuservalue(L, 9, TLSUV_WAITER);
  lua_newuserdatauv(L, 0, 1);  /* 10: the protocol */
  luaL_setmetatable(L, TLSP_MT);
  lua_pushvalue(L, 9);
  lua_setiuservalue(L, 10, 1);
  lua_pushvalue(L, 9);
  return 2;
}

/* protocol:connection_made(plain transport): the handshake starts. */
static int proto_connection_made (lua_State *L) {
  tls *t = prototls(L);  /* 3 */
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 3, TLSUV_RAW);
  t->raw = (loom_tcp_ud *)luaL_testudata(L, 2, TRANSPORT_MT);
  start_timer(L, 3, t->hs_timeout);
  pump(L, t, 3);
  return 0;
}

/* pump(L, t, 1) for feed, under its protected call. */
static int feedpump (lua_State *L) {
  pump(L, (tls *)lua_touserdata(L, 1), 1);
  return 0;
}

/*
** The n bytes of records at p came in: pumps them through the SSL object
** (the transport at tidx) without copying them first; what OpenSSL has
** not taken when the pump ends (a record's start, or all while the
** application does not read) is kept in t->in. The pump runs protected
** so that p is never left behind in t->feed. [-0, +0, e]
*/
static void feed (lua_State *L, tls *t, int tidx, const char *p, size_t n) {
  int status;
  if (t->state == ST_CLOSED || n == 0)
    return;
  t->feed = p;
  t->feedlen = n;
  lua_pushcfunction(L, feedpump);
  lua_pushvalue(L, tidx);
  status = lua_pcall(L, 1, 0, 0);
  if (t->feedlen > 0 && t->state != ST_CLOSED
      && !bb_append(&t->in, t->feed, t->feedlen)) {
    t->feed = NULL;
    t->feedlen = 0;
    luaL_error(L, "data_received: not enough memory");
  }
  t->feed = NULL;
  t->feedlen = 0;
  if (status != LUA_OK)
    lua_error(L);
}

/* protocol:data_received(records) */
int loom__tls_data_received (lua_State *L) {
  tls *t = prototls(L);  /* 3 */
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  feed(L, t, 3, s, len);
  return 0;
}

/*
** data_received of the TLS protocol at pidx, with the n bytes at p as
** the records and no string made of them: stream.c's read path calls it
** when the protocol's data_received is loom__tls_data_received. Returns
** 0, doing nothing, when pidx is not a TLS protocol.
*/
int loom__tls_feed (lua_State *L, int pidx, const char *p, size_t n) {
  if (luaL_testudata(L, pidx, TLSP_MT) == NULL)
    return 0;  /* the method on another object: its ordinary call raises */
  lua_getiuservalue(L, pidx, 1);
  feed(L, (tls *)lua_touserdata(L, -1), lua_gettop(L), p, n);
  lua_pop(L, 1);
  return 1;
}

/* protocol:eof_received(): the peer closed its side of the plain
** connection. Returns false: the plain transport closes. */
static int proto_eof_received (lua_State *L) {
  tls *t = prototls(L);  /* 3 */
  lua_pushboolean(L, 0);
  if (t->state == ST_HANDSHAKE) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "ECONNRESET");
    lua_setfield(L, -2, "code");
    push_errclass(L, "OSError", "ECONNRESET: the connection was lost during "
                  "the TLS handshake");
    fatal(L, t, 3, -1);
  }
  else if (t->state == ST_WRAPPED && t->ragged_eof) {
    t->state = ST_CLOSED;
    cancel_timer(L, 3);
    appcall(L, 3, "eof_received", 0);
  }
  else if (t->state == ST_WRAPPED) {
    push_plainerror(L, "UNEXPECTED_EOF_WHILE_READING", "[SSL: "
                    "UNEXPECTED_EOF_WHILE_READING] read: EOF occurred in "
                    "violation of protocol (the peer closed the connection "
                    "without close_notify)");
    fatal(L, t, 3, -1);
  }
  else if (t->state == ST_SHUTDOWN) {
    t->state = ST_CLOSED;
    cancel_timer(L, 3);
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* protocol:connection_lost(err) */
static int proto_connection_lost (lua_State *L) {
  tls *t = prototls(L);  /* 3 */
  lua_settop(L, 3);
  t->lost = 1;
  t->state = ST_CLOSED;
  t->closing = 1;
  cancel_timer(L, 3);
  if (lua_getiuservalue(L, 3, TLSUV_ERR) == LUA_TNIL) {  /* 4 */
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
  }
  if (lua_isnil(L, 4) && !t->made) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "ECONNRESET");
    lua_setfield(L, -2, "code");
    push_errclass(L, "OSError", "ECONNRESET: the connection was lost during "
                  "the TLS handshake");
  }
  wake_waiter(L, 3, 4);
  if (t->made) {
    t->made = 0;
    lua_pushvalue(L, 4);
    appcall(L, 3, "connection_lost", 1);
  }
  lua_pushnil(L);
  lua_setiuservalue(L, 3, TLSUV_RAW);
  t->raw = NULL;
  return 0;
}

static int proto_pause_writing (lua_State *L) {
  tls *t = prototls(L);
  if (t->made)
    appcall(L, 3, "pause_writing", 0);
  return 0;
}

static int proto_resume_writing (lua_State *L) {
  tls *t = prototls(L);
  if (t->made)
    appcall(L, 3, "resume_writing", 0);
  return 0;
}

static int proto_tostring (lua_State *L) {
  luaL_checkudata(L, 1, TLSP_MT);
  lua_pushfstring(L, "%s %p", TLSP_MT, lua_topointer(L, 1));
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** The TLS transport's methods
** =======================================================
*/

/* transport:write(data) */
static int t_write (lua_State *L) {
  tls *t = checkt(L, 1);
  loom_buffer *b = loom__testbuffer(L, 2);
  size_t len;
  if (b != NULL) {  /* bytes of a Buffer: a string of them (encrypted
                       anyway, so never written in place) */
    const char *p = loom__range(L, 3, b->data, b->size, &len);
    lua_pushlstring(L, p, len);
    lua_replace(L, 2);
  }
  luaL_checklstring(L, 2, &len);
  lua_settop(L, 2);
  if (len == 0 || t->closing || t->state == ST_CLOSED
      || t->state == ST_SHUTDOWN)
    return 0;
  if (t->state == ST_HANDSHAKE) {  /* written once the handshake ends */
    if (lua_getiuservalue(L, 1, TLSUV_PENDING) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, 1, TLSUV_PENDING);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    t->backlog += len;
    return 0;
  }
  if (sslwrite(L, t, 1, 2))
    flush(L, t, 1);
  return 0;
}

/* transport:writelines(list) */
static int t_writelines (lua_State *L) {
  luaL_Buffer b;
  lua_Integer i, n;
  checkt(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  n = luaL_len(L, 2);
  lua_settop(L, 2);
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    if (lua_geti(L, 2, i) != LUA_TSTRING)
      return luaL_error(L, "bad argument #1 to 'writelines' (item %I is a "
                        "%s, string expected)", i, luaL_typename(L, -1));
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  lua_replace(L, 2);
  return t_write(L);
}

/* transport:write_eof(): TLS has no half-close (asyncio raises too). */
static int t_write_eof (lua_State *L) {
  checkt(L, 1);
  return luaL_error(L, "write_eof: TLS transports do not support "
                    "half-close (can_write_eof() is false)");
}

static int t_can_write_eof (lua_State *L) {
  checkt(L, 1);
  lua_pushboolean(L, 0);
  return 1;
}

/* transport:close(): close_notify, then the plain transport closes;
** connection_lost(nil) follows. */
static int t_close (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_settop(L, 1);
  if (t->closing || t->state == ST_CLOSED)
    return 0;
  t->closing = 1;
  if (t->state == ST_WRAPPED)
    shutdown_tls(L, t, 1);
  else if (t->state == ST_HANDSHAKE && !t->made
           && lua_getiuservalue(L, 1, TLSUV_RAW) != LUA_TNIL) {
    lua_pop(L, 1);  /* as asyncio: a close during the handshake aborts */
    t->state = ST_CLOSED;
    cancel_timer(L, 1);
    uvmethod(L, 1, TLSUV_RAW, "abort", 0);
  }
  return 0;
}

/* transport:abort(): closes the plain transport now. */
static int t_abort (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_settop(L, 1);
  t->closing = 1;
  if (t->state != ST_CLOSED) {
    t->state = ST_CLOSED;
    cancel_timer(L, 1);
  }
  uvmethod(L, 1, TLSUV_RAW, "abort", 0);
  return 0;
}

static int t_is_closing (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_pushboolean(L, t->closing || t->state == ST_CLOSED);
  return 1;
}

static int t_pause_reading (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_settop(L, 1);
  if (t->app_paused || t->closing)
    return 0;
  t->app_paused = 1;
  uvmethod(L, 1, TLSUV_RAW, "pause_reading", 0);
  return 0;
}

static int t_resume_reading (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_settop(L, 1);
  if (!t->app_paused || t->closing)
    return 0;
  t->app_paused = 0;
  uvmethod(L, 1, TLSUV_RAW, "resume_reading", 0);
  queue_pump(L, t, 1);
  return 0;
}

static int t_is_reading (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_pushboolean(L, !t->app_paused && !t->closing && t->state != ST_CLOSED);
  return 1;
}

/* A certificate's name as one line ("CN=localhost,O=loom"). */
static void push_name (lua_State *L, X509_NAME *n) {
  BIO *b = BIO_new(BIO_s_mem());
  char *p;
  long len;
  if (b == NULL)
    luaL_error(L, "not enough memory");
  X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  len = BIO_get_mem_data(b, &p);
  lua_pushlstring(L, p, (size_t)len);
  BIO_free(b);
}

static void push_time (lua_State *L, const ASN1_TIME *tm) {
  BIO *b = BIO_new(BIO_s_mem());
  char *p;
  long len;
  if (b == NULL)
    luaL_error(L, "not enough memory");
  ASN1_TIME_print(b, tm);
  len = BIO_get_mem_data(b, &p);
  lua_pushlstring(L, p, (size_t)len);
  BIO_free(b);
}

/* The peer's certificate as a table (see docs/tls.md), or nothing. */
static int push_peercert (lua_State *L, tls *t) {
  X509 *x = SSL_get1_peer_certificate(t->ssl);
  GENERAL_NAMES *names;
  ASN1_INTEGER *serial;
  BIGNUM *bn;
  if (x == NULL)
    return 0;
  lua_createtable(L, 0, 7);
  push_name(L, X509_get_subject_name(x));
  lua_setfield(L, -2, "subject");
  push_name(L, X509_get_issuer_name(x));
  lua_setfield(L, -2, "issuer");
  push_time(L, X509_get0_notBefore(x));
  lua_setfield(L, -2, "not_before");
  push_time(L, X509_get0_notAfter(x));
  lua_setfield(L, -2, "not_after");
  serial = X509_get_serialNumber(x);
  bn = ASN1_INTEGER_to_BN(serial, NULL);
  if (bn != NULL) {
    char *hex = BN_bn2hex(bn);
    if (hex != NULL) {
      lua_pushstring(L, hex);
      lua_setfield(L, -2, "serial");
      OPENSSL_free(hex);
    }
    BN_free(bn);
  }
  lua_newtable(L);
  names = (GENERAL_NAMES *)X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
                                            NULL);
  if (names != NULL) {
    int i, k = 0;
    for (i = 0; i < sk_GENERAL_NAME_num(names); i++) {
      GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
      if (g->type == GEN_DNS) {
        lua_pushfstring(L, "DNS:%s",
                        (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        lua_rawseti(L, -2, ++k);
      }
      else if (g->type == GEN_IPADD) {
        char s[64];
        int n = ASN1_STRING_length(g->d.iPAddress);
        const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
        if (inet_ntop(n == 4 ? AF_INET : AF_INET6, p, s, sizeof s) != NULL
            && (n == 4 || n == 16)) {
          lua_pushfstring(L, "IP:%s", s);
          lua_rawseti(L, -2, ++k);
        }
      }
    }
    GENERAL_NAMES_free(names);
  }
  lua_setfield(L, -2, "subject_alt_names");
  {
    BIO *b = BIO_new(BIO_s_mem());
    char *p;
    long len;
    if (b != NULL) {
      PEM_write_bio_X509(b, x);
      len = BIO_get_mem_data(b, &p);
      lua_pushlstring(L, p, (size_t)len);
      lua_setfield(L, -2, "pem");
      BIO_free(b);
    }
  }
  X509_free(x);
  ERR_clear_error();
  return 1;
}

static int push_cipher (lua_State *L, tls *t) {
  const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);
  if (c == NULL)
    return 0;
  lua_createtable(L, 0, 3);
  lua_pushstring(L, SSL_CIPHER_get_name(c));
  lua_setfield(L, -2, "name");
  lua_pushstring(L, SSL_get_version(t->ssl));
  lua_setfield(L, -2, "protocol");
  lua_pushinteger(L, SSL_CIPHER_get_bits(c, NULL));
  lua_setfield(L, -2, "bits");
  return 1;
}

static int push_alpn (lua_State *L, tls *t) {
  const unsigned char *p;
  unsigned int n;
  SSL_get0_alpn_selected(t->ssl, &p, &n);
  if (n == 0)
    return 0;
  lua_pushlstring(L, (const char *)p, n);
  return 1;
}

/* The facts of the TLS session, a table (asyncio's SSLObject, read
** once). */
static int push_sslobject (lua_State *L, tls *t) {
  const char *host = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  lua_createtable(L, 0, 7);
  lua_pushstring(L, SSL_get_version(t->ssl));
  lua_setfield(L, -2, "version");
  if (push_cipher(L, t))
    lua_setfield(L, -2, "cipher");
  if (push_alpn(L, t))
    lua_setfield(L, -2, "alpn_protocol");
  lua_pushboolean(L, t->server);
  lua_setfield(L, -2, "server_side");
  if (host != NULL) {
    lua_pushstring(L, host);
    lua_setfield(L, -2, "server_hostname");
  }
  lua_pushboolean(L, SSL_session_reused(t->ssl));
  lua_setfield(L, -2, "session_reused");
  if (push_peercert(L, t))
    lua_setfield(L, -2, "peercert");
  return 1;
}

/*
** transport:get_extra_info(name [, default]): "peercert", "cipher",
** "ssl_object", "alpn_protocol", "sslcontext", "compression"; anything
** else comes from the plain transport (peername, sockname, socket).
*/
static int t_get_extra_info (lua_State *L) {
  tls *t = checkt(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int done = t->state != ST_HANDSHAKE;
  lua_settop(L, 3);
  if (strcmp(name, "peercert") == 0)
    return done && push_peercert(L, t) ? 1 : (lua_settop(L, 3), 1);
  if (strcmp(name, "cipher") == 0)
    return done && push_cipher(L, t) ? 1 : 1;
  if (strcmp(name, "alpn_protocol") == 0)
    return done && push_alpn(L, t) ? 1 : 1;
  if (strcmp(name, "ssl_object") == 0)
    return done ? push_sslobject(L, t) : 1;
  if (strcmp(name, "sslcontext") == 0) {
    if (lua_getiuservalue(L, 1, TLSUV_SNICTX) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_getiuservalue(L, 1, TLSUV_CTX);
    }
    return 1;
  }
  if (strcmp(name, "compression") == 0)
    return 1;
  if (lua_getiuservalue(L, 1, TLSUV_RAW) == LUA_TNIL) {
    lua_pop(L, 1);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  method(L, 4, "get_extra_info", 2, 1);
  return 1;
}

static int t_set_write_buffer_limits (lua_State *L) {
  checkt(L, 1);
  lua_settop(L, 3);
  if (lua_getiuservalue(L, 1, TLSUV_RAW) != LUA_TNIL) {
    lua_insert(L, 2);
    method(L, 2, "set_write_buffer_limits", 2, 0);
  }
  return 0;
}

static int t_get_write_buffer_limits (lua_State *L) {
  checkt(L, 1);
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, TLSUV_RAW) == LUA_TNIL) {
    lua_pushinteger(L, 16 * 1024);
    lua_pushinteger(L, 64 * 1024);
    return 2;
  }
  method(L, 2, "get_write_buffer_limits", 0, 2);
  return 2;
}

static int t_get_write_buffer_size (lua_State *L) {
  tls *t = checkt(L, 1);
  lua_Integer n = (lua_Integer)t->backlog;
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, TLSUV_RAW) != LUA_TNIL) {
    method(L, 2, "get_write_buffer_size", 0, 1);
    n += lua_tointeger(L, -1);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int t_get_protocol (lua_State *L) {
  checkt(L, 1);
  lua_getiuservalue(L, 1, TLSUV_APP);
  return 1;
}

static int t_set_protocol (lua_State *L) {
  checkt(L, 1);
  loom__checkprotocol(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, TLSUV_APP);
  return 0;
}

static int t_get_loop (lua_State *L) {
  checkt(L, 1);
  lua_getiuservalue(L, 1, TLSUV_LOOP);
  return 1;
}

/* transport:_raw(): the plain transport under it, while it is open. */
static int t_raw (lua_State *L) {
  checkt(L, 1);
  lua_getiuservalue(L, 1, TLSUV_RAW);
  return 1;
}

static int t_gc (lua_State *L) {
  tls *t = (tls *)lua_touserdata(L, 1);
  if (t->ssl != NULL) {
    SSL_free(t->ssl);
    t->ssl = NULL;
  }
  free(t->in.p);
  free(t->out.p);
  t->in.p = t->out.p = NULL;
  t->in.len = t->out.len = t->in.cap = t->out.cap = 0;
  return 0;
}

static int t_tostring (lua_State *L) {
  static const char *const states[] = {"handshake", "open", "closing",
                                       "closed"};
  tls *t = checkt(L, 1);
  lua_pushfstring(L, "%s (%s) %p", TLST_MT, states[t->state], (void *)t);
  return 1;
}

/* }====================================================== */


static const luaL_Reg ctx_methods[] = {
  {"is_server", ctx_is_server},
  {"check_hostname", ctx_check_hostname},
  {NULL, NULL}
};

static const luaL_Reg ctx_metamethods[] = {
  {"__gc", ctx_gc},
  {"__tostring", ctx_tostring},
  {NULL, NULL}
};

static const luaL_Reg proto_methods[] = {
  {"connection_made", proto_connection_made},
  {"data_received", loom__tls_data_received},
  {"eof_received", proto_eof_received},
  {"connection_lost", proto_connection_lost},
  {"pause_writing", proto_pause_writing},
  {"resume_writing", proto_resume_writing},
  {NULL, NULL}
};

static const luaL_Reg proto_metamethods[] = {
  {"__tostring", proto_tostring},
  {NULL, NULL}
};

static const luaL_Reg tlst_methods[] = {
  {"write", t_write},
  {"writelines", t_writelines},
  {"write_eof", t_write_eof},
  {"can_write_eof", t_can_write_eof},
  {"close", t_close},
  {"abort", t_abort},
  {"is_closing", t_is_closing},
  {"pause_reading", t_pause_reading},
  {"resume_reading", t_resume_reading},
  {"is_reading", t_is_reading},
  {"get_extra_info", t_get_extra_info},
  {"set_write_buffer_limits", t_set_write_buffer_limits},
  {"get_write_buffer_limits", t_get_write_buffer_limits},
  {"get_write_buffer_size", t_get_write_buffer_size},
  {"get_protocol", t_get_protocol},
  {"set_protocol", t_set_protocol},
  {"get_loop", t_get_loop},
  {"_raw", t_raw},
  {NULL, NULL}
};

static const luaL_Reg tlst_metamethods[] = {
  {"__gc", t_gc},
  {"__close", t_close},
  {"__tostring", t_tostring},
  {NULL, NULL}
};

/* _tls_is_context(v): whether v is a context. */
static int tls_is_context (lua_State *L) {
  lua_pushboolean(L, testctx(L, 1) != NULL);
  return 1;
}

static const luaL_Reg tls_functions[] = {
  {"_tls_context", tls_context},
  {"_tls_is_context", tls_is_context},
  {"_tls_wrap", tls_wrap},
  {NULL, NULL}
};

static void newclass (lua_State *L, const char *name, const luaL_Reg *m,
                      const luaL_Reg *mm) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, mm, 0);
  lua_newtable(L);
  luaL_setfuncs(L, m, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* Once per process (every thread's state opens the module): the ex_data
** indexes are global. */
static void init_once (void) {
  OPENSSL_init_ssl(0, NULL);
  tlsidx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  ctxidx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  rmeth = newmeth("loom records in", 1);
  wmeth = newmeth("loom records out", 0);
}

int loom__open_tls (lua_State *L) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_once);
  newclass(L, CTX_MT, ctx_methods, ctx_metamethods);
  newclass(L, TLSP_MT, proto_methods, proto_metamethods);
  newclass(L, TLST_MT, tlst_methods, tlst_metamethods);
  luaL_setfuncs(L, tls_functions, 0);
  return 0;
}
