/*
** socket.c
** loom.TransportSocket: the socket behind a transport, as
** transport:get_extra_info("socket") gives it: its descriptor, family and
** type, its addresses and a few socket options by name.
*/

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>

#include "internal.h"

#define SOCKET_MT "loom.TransportSocket"

/*
** The userdata holds nothing but a user value: the transport. Every
** transport userdata starts with a pointer to a C struct that starts with
** its uv handle, NULL once closed, so the socket is looked up at each
** call and a closed transport gives a clear error, never a stale fd.
*/

/* The descriptor of the transport behind the TransportSocket at 1, or -1
** when it is closed. */
static int sockfd (lua_State *L) {
  uv_handle_t *h;
  uv_os_fd_t fd;
  luaL_checkudata(L, 1, SOCKET_MT);
  lua_getiuservalue(L, 1, 1);
  h = *(uv_handle_t **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (h == NULL || uv_is_closing(h) || uv_fileno(h, &fd) < 0)
    return -1;
  return (int)fd;
}

static int checkfd (lua_State *L, const char *fname) {
  int fd = sockfd(L);
  if (fd < 0)
    luaL_error(L, "%s: the transport is closed", fname);
  return fd;
}

/* socket:fileno() -> the descriptor, -1 once the transport is closed. */
static int sock_fileno (lua_State *L) {
  lua_pushinteger(L, sockfd(L));
  return 1;
}

static int pushname (lua_State *L, int fd, int peer, const char *fname) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int r = peer ? getpeername(fd, (struct sockaddr *)&ss, &len)
               : getsockname(fd, (struct sockaddr *)&ss, &len);
  if (r < 0) {
    loom__push_oserror(L, uv_translate_sys_error(errno), fname);
    return lua_error(L);
  }
  if (ss.ss_family == AF_UNIX) {
    const struct sockaddr_un *su = (const struct sockaddr_un *)&ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path)
               ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && su->sun_path[0] != '\0')
      n = strnlen(su->sun_path, n);
    lua_pushlstring(L, su->sun_path, n);
  }
  else
    loom__pushaddr(L, (const struct sockaddr *)&ss);
  return 1;
}

static int sock_getsockname (lua_State *L) {
  return pushname(L, checkfd(L, "getsockname"), 0, "getsockname");
}

static int sock_getpeername (lua_State *L) {
  return pushname(L, checkfd(L, "getpeername"), 1, "getpeername");
}

/* The options known by name: level, option, whether boolean. */
static const struct sockopt {
  const char *name;
  int level, opt, boolean;
} sockopts[] = {
  {"so_keepalive", SOL_SOCKET, SO_KEEPALIVE, 1},
  {"so_reuseaddr", SOL_SOCKET, SO_REUSEADDR, 1},
#ifdef SO_REUSEPORT
  {"so_reuseport", SOL_SOCKET, SO_REUSEPORT, 1},
#endif
  {"so_broadcast", SOL_SOCKET, SO_BROADCAST, 1},
  {"so_rcvbuf", SOL_SOCKET, SO_RCVBUF, 0},
  {"so_sndbuf", SOL_SOCKET, SO_SNDBUF, 0},
  {"so_error", SOL_SOCKET, SO_ERROR, 0},
  {"tcp_nodelay", IPPROTO_TCP, TCP_NODELAY, 1},
#ifdef TCP_KEEPIDLE
  {"tcp_keepidle", IPPROTO_TCP, TCP_KEEPIDLE, 0},
  {"tcp_keepintvl", IPPROTO_TCP, TCP_KEEPINTVL, 0},
  {"tcp_keepcnt", IPPROTO_TCP, TCP_KEEPCNT, 0},
#endif
  {"ip_ttl", IPPROTO_IP, IP_TTL, 0},
  {"ipv6_v6only", IPPROTO_IPV6, IPV6_V6ONLY, 1},
  {NULL, 0, 0, 0}
};

/* The option named at 2 (lower case, as "tcp_nodelay"). */
static const struct sockopt *checkopt (lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  int i;
  if (strlen(name) != len)
    luaL_argerror(L, 2, "socket option name contains a zero byte");
  for (i = 0; sockopts[i].name != NULL; i++)
    if (strlen(sockopts[i].name) == len && strcmp(sockopts[i].name, name) == 0)
      return &sockopts[i];
  luaL_argerror(L, 2, lua_pushfstring(L, "unknown socket option '%s'",
                name));
  return NULL;
}

/* socket:getsockopt(name) -> a boolean or an integer */
static int sock_getsockopt (lua_State *L) {
  const struct sockopt *o = checkopt(L);
  int fd = checkfd(L, "getsockopt"), v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, o->level, o->opt, &v, &len) < 0) {
    loom__push_oserror(L, uv_translate_sys_error(errno), "getsockopt");
    return lua_error(L);
  }
  if (o->boolean)
    lua_pushboolean(L, v != 0);
  else
    lua_pushinteger(L, v);
  return 1;
}

/* socket:setsockopt(name, value): a boolean option takes a boolean, the
** others an integer. */
static int sock_setsockopt (lua_State *L) {
  const struct sockopt *o = checkopt(L);
  int fd, v;
  if (o->opt == SO_ERROR && o->level == SOL_SOCKET)
    return luaL_argerror(L, 2, "so_error can only be read");
  if (o->boolean) {
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    v = lua_toboolean(L, 3);
  }
  else {
    lua_Integer n = luaL_checkinteger(L, 3);
    if (n < 0 || n > 0x7fffffff)
      return luaL_argerror(L, 3, "value out of range");
    v = (int)n;
  }
  fd = checkfd(L, "setsockopt");
  if (setsockopt(fd, o->level, o->opt, &v, sizeof v) < 0) {
    loom__push_oserror(L, uv_translate_sys_error(errno), "setsockopt");
    return lua_error(L);
  }
  return 0;
}

/* Fields: family ("inet", "inet6", "unix") and type ("stream",
** "dgram"), read from the socket while it is open. */
static int sock_index (lua_State *L) {
  const char *key = luaL_checkstring(L, 2);
  int fd, v = 0;
  socklen_t len = sizeof v;
  if (strcmp(key, "family") == 0 || strcmp(key, "type") == 0) {
    int fam = strcmp(key, "family") == 0;
    fd = checkfd(L, key);
    if (getsockopt(fd, SOL_SOCKET, fam ? SO_DOMAIN : SO_TYPE, &v, &len) < 0)
      v = -1;
    if (fam)
      lua_pushstring(L, v == AF_INET ? "inet" : v == AF_INET6 ? "inet6"
                        : v == AF_UNIX ? "unix" : "unknown");
    else
      lua_pushstring(L, v == SOCK_STREAM ? "stream" : v == SOCK_DGRAM
                        ? "dgram" : "unknown");
    return 1;
  }
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "methods");
  lua_getfield(L, -1, key);
  return 1;
}

static int sock_tostring (lua_State *L) {
  int fd = sockfd(L);
  if (fd < 0)
    lua_pushliteral(L, SOCKET_MT " (closed)");
  else
    lua_pushfstring(L, SOCKET_MT " (fd %d)", fd);
  return 1;
}

/* Pushes a TransportSocket for the transport at tidx. */
void loom__push_transport_socket (lua_State *L, int tidx) {
  tidx = lua_absindex(L, tidx);
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, SOCKET_MT);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, -2, 1);
}

static const luaL_Reg sock_methods[] = {
  {"fileno", sock_fileno},
  {"getsockname", sock_getsockname},
  {"getpeername", sock_getpeername},
  {"getsockopt", sock_getsockopt},
  {"setsockopt", sock_setsockopt},
  {NULL, NULL}
};

int loom__open_socket (lua_State *L) {
  luaL_newmetatable(L, SOCKET_MT);
  lua_pushcfunction(L, sock_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, sock_tostring);
  lua_setfield(L, -2, "__tostring");
  luaL_newlib(L, sock_methods);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
  return 0;
}
