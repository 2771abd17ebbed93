/*
** tcp.c
** TCP sockets for the stream transports of stream.c:
** loop:create_connection, loop:create_server, transport:set_nodelay.
*/

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include "stream.h"

/* libuv before 1.49 has no UV_TCP_REUSEPORT: loom then makes the socket
** itself, with SO_REUSEPORT, and hands it to libuv. */
#ifndef UV_TCP_REUSEPORT
#define LOOM_TCP_REUSEPORT 0x10000
#endif

/*
** Reads host (hidx) and port (pidx) into ss. host: a numeric IPv4 or
** IPv6 address, or nil when passive (all IPv4 interfaces). Returns 1,
** leaving ss unset, when host is a name to resolve; with names = 0, a
** name raises, except "localhost", taken as 127.0.0.1. Raises on bad
** input, never truncates at an embedded zero.
*/
static int checkaddr (lua_State *L, int hidx, int pidx, int passive,
                      int names, struct sockaddr_storage *ss) {
  const char *host;
  size_t len = 0;
  lua_Integer port;
  int isint;
  memset(ss, 0, sizeof *ss);
  port = lua_tointegerx(L, pidx, &isint);
  if (!isint)
    luaL_argerror(L, pidx, lua_pushfstring(L, "port number expected, got %s",
                  luaL_typename(L, pidx)));
  if (port < 0 || port > 65535)
    luaL_argerror(L, pidx, "port out of range 0..65535");
  if (lua_isnoneornil(L, hidx)) {
    if (!passive)
      luaL_argerror(L, hidx, "host expected, got nil");
    host = "0.0.0.0";
  }
  else {
    if (lua_type(L, hidx) != LUA_TSTRING)
      luaL_typeerror(L, hidx, "string");
    host = lua_tolstring(L, hidx, &len);
    if (memchr(host, '\0', len) != NULL)
      luaL_argerror(L, hidx, "host contains an embedded zero");
  }
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  if (names && len > 0)
    return 1;
  if (strcmp(host, "localhost") == 0) {
    uv_ip4_addr("127.0.0.1", (int)port, (struct sockaddr_in *)ss);
    return 0;
  }
  luaL_argerror(L, hidx, lua_pushfstring(L, "'%s' is not a numeric IPv4 or "
                "IPv6 address nor \"localhost\" (names are resolved only "
                "inside a task)", host));
  return 0;
}

/*
** opts.local_addr of create_connection (opts at oidx): a table {host=,
** port=}; *has is 0 when absent. Returns 1 when its host is a name to
** resolve. Raises on bad input.
*/
static int checklocal (lua_State *L, int oidx, struct sockaddr_storage *ss,
                        int *has) {
  const char *host;
  lua_Integer port = 0;
  int isint = 1;
  *has = 0;
  if (!lua_istable(L, oidx))
    return 0;
  if (lua_getfield(L, oidx, "local_addr") == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  if (!lua_istable(L, -1))
    luaL_argerror(L, oidx, "local_addr must be a table {host=, port=}");
  memset(ss, 0, sizeof *ss);
  lua_getfield(L, -1, "host");
  lua_getfield(L, -2, "port");
  if (!lua_isnil(L, -1))
    port = lua_tointegerx(L, -1, &isint);
  if (!isint || port < 0 || port > 65535)
    luaL_argerror(L, oidx, "local_addr.port must be an integer in 0..65535");
  if (lua_isnil(L, -2))
    host = "0.0.0.0";
  else if (lua_type(L, -2) == LUA_TSTRING) {
    size_t len;
    host = lua_tolstring(L, -2, &len);
    if (memchr(host, '\0', len) != NULL)
      host = NULL;
  }
  else
    host = NULL;
  if (host != NULL && *host != '\0'
      && uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0
      && uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0) {
    lua_pop(L, 3);
    return 1;  /* a name */
  }
  if (host == NULL
      || (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) != 0
          && uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) != 0))
    luaL_argerror(L, oidx, "local_addr.host must be a numeric IPv4 or IPv6 "
                  "address");
  lua_pop(L, 3);
  *has = 1;
  return 0;
}

/* Pushes the address table of the socket's (peer != 0: its peer's)
** address; 0 when it has none. */
int loom__tcp_name (lua_State *L, uv_tcp_t *h, int peer) {
  struct sockaddr_storage ss;
  int len = (int)sizeof ss;
  int r = peer ? uv_tcp_getpeername(h, (struct sockaddr *)&ss, &len)
               : uv_tcp_getsockname(h, (struct sockaddr *)&ss, &len);
  if (r < 0)
    return 0;
  loom__pushaddr(L, (struct sockaddr *)&ss);
  return 1;
}

/*
** loop:create_connection(protocol_factory, host, port, [opts]) ->
** transport, protocol. Awaits (inside a task); raises an OSError when
** the connection fails. Host here is numeric or "localhost";
** private methods of lua/loom/streams.lua resolve names and apply
** opts.timeout. opts.local_addr: {host=, port=} to bind to before
** connecting; opts.timeout: seconds for the whole connect. TLS options
** (opts.ssl, ...) go to lua/loom/tls.lua.
*/
static int loop_create_connection (lua_State *L) {
  static const char fname[] = "create_connection";
  static const char *const keys[] = {"local_addr", "timeout", "ssl",
    "server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout",
    NULL};
  loom_loop *loop = loom__stream_checktask(L, fname);
  struct sockaddr_storage ss, local;
  int r, haslocal;
  loom_conn *c;
  loom__stream_checkcallable(L, 2);
  loom__stream_checkopts(L, 5, keys);
  if (loom__stream_hasssl(L, 5))
    return loom__stream_byname(L, "_tls_connection");
  r = checkaddr(L, 3, 4, 0, 1, &ss);
  r |= checklocal(L, 5, &local, &haslocal);
  if (loom__stream_hastimeout(L, 5))
    return loom__stream_byname(L, "_connect_timeout");
  if (r)
    return loom__stream_byname(L, "_connect_by_name");
  c = loom__stream_begin_connect(L, loop, LOOM_SOCK_TCP);
  r = haslocal ? uv_tcp_bind(&c->h.tcp, (struct sockaddr *)&local, 0) : 0;
  if (r == 0)
    r = uv_tcp_connect(&c->creq, &c->h.tcp, (struct sockaddr *)&ss,
                       loom__stream_connect_cb);
  return loom__stream_finish_connect(L, c, r);
}

/* Binds a listener to the sockaddr_in/in6 addr; flags: uv_tcp_bind's.
** libuv sets SO_REUSEADDR on every bound TCP socket on Unix, so
** reuse_address is accepted and always on. */
static int tcpbind (lua_State *L, loom_lsn *s, const void *addr, int flags) {
  (void)L;
#ifdef LOOM_TCP_REUSEPORT
  if (flags & LOOM_TCP_REUSEPORT) {
    int on = 1, r;
    int fd = socket(((const struct sockaddr *)addr)->sa_family,
                    SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) {
      r = uv_translate_sys_error(errno);
      close(fd);
      return r;
    }
    r = uv_tcp_open(&s->h.tcp, fd);
    if (r < 0) {
      close(fd);
      return r;
    }
    flags &= ~LOOM_TCP_REUSEPORT;
  }
#endif
  return uv_tcp_bind(&s->h.tcp, (const struct sockaddr *)addr,
                     (unsigned int)flags);
}

/*
** loop:create_server(protocol_factory, host, port, [opts]) -> server.
** Binds and listens at once (it completes without suspending, so it may
** also be called outside a task); raises an OSError on failure.
** host: a numeric address, "localhost", nil (all IPv4 interfaces) or a
** list of numeric addresses, one listener each (lua/loom/streams.lua
** wraps this method to resolve names into such a list).
** opts: backlog (100), reuse_address, reuse_port, start_serving (true;
** false: bound, listening only from server:start_serving()).
*/
static int loop_create_server (lua_State *L) {
  static const char fname[] = "create_server";
  static const char *const keys[] = {"backlog", "reuse_address",
    "reuse_port", "start_serving", "ssl", "server_hostname",
    "ssl_handshake_timeout", "ssl_shutdown_timeout", NULL};
  loom_loop *loop = loom__checkopen(L, 1, fname);
  struct sockaddr_storage ss[LOOM_MAXLSN];
  int backlog = 100, flags = 0, r = 0, i, n = 1;
  loom_srv_ud *su;
  loom__stream_checkcallable(L, 2);
  loom__stream_checkopts(L, 5, keys);
  if (loom__stream_hasssl(L, 5))
    return loom__stream_byname(L, "_tls_server");
  lua_settop(L, 5);
  if (lua_istable(L, 3)) {  /* a list of hosts: each checked at 6 */
    n = (int)luaL_len(L, 3);
    if (n < 1 || n > LOOM_MAXLSN)
      luaL_argerror(L, 3, lua_pushfstring(L, "list of 1..%d hosts "
                    "expected", LOOM_MAXLSN));
    for (i = 0; i < n; i++) {
      lua_geti(L, 3, i + 1);
      checkaddr(L, 6, 4, 1, 0, &ss[i]);
      lua_pop(L, 1);
    }
  }
  else if (checkaddr(L, 3, 4, 1, loom__stream_intask(L, loop), &ss[0]))
    return loom__stream_byname(L, "_serve_by_name");
  loom__stream_checkbacklog(L, 5, &backlog);
  if (lua_istable(L, 5)) {
    lua_getfield(L, 5, "reuse_port");
    if (lua_toboolean(L, -1)) {
#ifdef UV_TCP_REUSEPORT
      flags |= UV_TCP_REUSEPORT;
#else
      flags |= LOOM_TCP_REUSEPORT;
#endif
    }
    lua_pop(L, 1);
  }
  su = loom__stream_newserver(L, LOOM_SOCK_TCP);  /* 6 */
  su->closed = 0;
  su->backlog = backlog;
  for (i = 0; i < n && r == 0; i++)
    r = loom__stream_addlistener(L, loop, su, 6, tcpbind, &ss[i], flags);
  if (r < 0) {
    loom__stream_stop(su);
    loom__push_oserror(L, r, fname);
    return lua_error(L);
  }
  if (!lua_istable(L, 5) || lua_getfield(L, 5, "start_serving") == LUA_TNIL
      || lua_toboolean(L, -1))
    loom__stream_listen(L, su, 6, fname);
  lua_settop(L, 6);
  return 1;
}

/* transport:set_nodelay(on): TCP_NODELAY on (true, the default of every
** TCP transport) or off (Nagle's algorithm). No-op once closed, and on a
** Unix domain socket. */
static int transport_set_nodelay (lua_State *L) {
  loom_tcp_ud *u = loom__stream_checkt(L);
  int r;
  luaL_checkany(L, 2);
  if (u->c == NULL || u->c->closed || u->c->kind != LOOM_SOCK_TCP)
    return 0;
  r = uv_tcp_nodelay(&u->c->h.tcp, lua_toboolean(L, 2));
  if (r < 0) {
    loom__push_oserror(L, r, "set_nodelay");
    return lua_error(L);
  }
  return 0;
}

static const luaL_Reg tcp_transport_methods[] = {
  {"set_nodelay", transport_set_nodelay},
  {NULL, NULL}
};

static const luaL_Reg tcp_loop_methods[] = {
  {"create_connection", loop_create_connection},
  {"create_server", loop_create_server},
  {NULL, NULL}
};

int loom__open_tcp (lua_State *L) {
  loom__stream_methods(L, tcp_transport_methods);
  loom__loop_methods(L, tcp_loop_methods);
  return 0;
}
