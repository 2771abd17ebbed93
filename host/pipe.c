/*
** pipe.c
** Unix domain sockets for the stream transports of stream.c:
** loop:create_unix_connection, loop:create_unix_server. A path that
** starts with a zero byte names a socket in Linux's abstract namespace
** (no file; the name is gone with the last socket).
*/

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream.h"

/* A checked socket address: sa, its length for bind and connect, and
** whether it is abstract. */
typedef struct unixaddr {
  struct sockaddr_un sa;
  socklen_t salen;
  size_t len;               /* bytes of the path */
  int abstract;
} unixaddr;

/*
** Reads the path of a Unix domain socket at idx into ua. Raises on an
** embedded zero (never truncated) except in an abstract name, which
** starts with one, and on a path too long for sun_path.
*/
static void checkpath (lua_State *L, int idx, unixaddr *ua) {
  size_t len, max = sizeof ua->sa.sun_path - 1;
  const char *path;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_typeerror(L, idx, "string");
  path = lua_tolstring(L, idx, &len);
  if (len == 0)
    luaL_argerror(L, idx, "path is empty");
  memset(ua, 0, sizeof *ua);
  ua->abstract = path[0] == '\0';
#ifndef __linux__
  if (ua->abstract)
    luaL_argerror(L, idx, "abstract socket names (a leading zero byte) "
                  "exist only on Linux");
#endif
  if (ua->abstract)
    max++;  /* no terminating zero */
  else if (memchr(path, '\0', len) != NULL)
    luaL_argerror(L, idx, "path contains an embedded zero");
  if (len > max)
    luaL_argerror(L, idx, lua_pushfstring(L, "path too long (%d bytes, at "
                  "most %d)", (int)len, (int)max));
  ua->sa.sun_family = AF_UNIX;
  memcpy(ua->sa.sun_path, path, len);
  ua->len = len;
  ua->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len
                          + (ua->abstract ? 0 : 1));
}

/* A new non-blocking Unix stream socket, or a libuv error. */
static int newsocket (void) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  return fd < 0 ? uv_translate_sys_error(errno) : fd;
}

/* Pushes the path of the socket (peer != 0: of its peer): "" when it has
** none, as asyncio; 0 on failure (nothing pushed). */
int loom__pipe_name (lua_State *L, uv_pipe_t *h, int peer) {
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  size_t len = sizeof path;
  int r = peer ? uv_pipe_getpeername(h, path, &len)
               : uv_pipe_getsockname(h, path, &len);
  if (r < 0)
    return 0;
  lua_pushlstring(L, path, len);
  return 1;
}

/* Pushes the path a Unix server listens on. */
int loom__pipe_server_name (lua_State *L, loom_srv_ud *su) {
  lua_pushlstring(L, su->path, su->pathlen);
  return 1;
}

/*
** loop:create_unix_connection(protocol_factory, path, [opts]) ->
** transport, protocol. Awaits (inside a task); raises an OSError when
** the connection fails (ENOENT, ECONNREFUSED, ...). opts.timeout:
** seconds for the connect.
*/
static int loop_create_unix_connection (lua_State *L) {
  static const char fname[] = "create_unix_connection";
  static const char *const keys[] = {"timeout", "ssl", "server_hostname",
    "ssl_handshake_timeout", "ssl_shutdown_timeout", NULL};
  loom_loop *loop = loom__stream_checktask(L, fname);
  unixaddr ua;
  loom_conn *c;
  int fd, r = 0;
  loom__stream_checkcallable(L, 2);
  checkpath(L, 3, &ua);
  loom__stream_checkopts(L, 4, keys);
  if (loom__stream_hasssl(L, 4))
    return loom__stream_byname(L, "_tls_unix_connection");
  if (loom__stream_hastimeout(L, 4))
    return loom__stream_byname(L, "_unix_connect_timeout");
  c = loom__stream_begin_connect(L, loop, LOOM_SOCK_UNIX);
  if (!ua.abstract) {
    uv_pipe_connect(&c->creq, &c->h.pipe, ua.sa.sun_path,
                    loom__stream_connect_cb);
    return loom__stream_finish_connect(L, c, 0);
  }
  /* libuv's pipes take only file names: connect here (a Unix socket's
  ** connect completes at once or fails) and hand the socket over. */
  fd = newsocket();
  if (fd < 0)
    r = fd;
  else if (connect(fd, (struct sockaddr *)&ua.sa, ua.salen) < 0) {
    r = uv_translate_sys_error(errno);
    close(fd);
  }
  else if ((r = uv_pipe_open(&c->h.pipe, fd)) < 0)
    close(fd);
  if (r == 0)
    loom__stream_connected(L, c, 0);
  return loom__stream_finish_connect(L, c, r);
}

/* Binds a listener to the unixaddr addr. */
static int pipebind (lua_State *L, loom_lsn *s, const void *addr,
                     int flags) {
  const unixaddr *ua = (const unixaddr *)addr;
  int fd, r;
  (void)L; (void)flags;
  if (!ua->abstract)
    return uv_pipe_bind(&s->h.pipe, ua->sa.sun_path);
  fd = newsocket();
  if (fd < 0)
    return fd;
  if (bind(fd, (const struct sockaddr *)&ua->sa, ua->salen) < 0) {
    r = uv_translate_sys_error(errno);
    close(fd);
    return r;
  }
  r = uv_pipe_open(&s->h.pipe, fd);
  if (r < 0)
    close(fd);
  return r;
}

/*
** loop:create_unix_server(protocol_factory, path, [opts]) -> server.
** Like create_server, on a Unix domain socket at path. As asyncio, an
** existing socket file at path is removed first (a stale one from a dead
** server, or a live one); libuv removes the file again when the
** listener closes (asyncio's cleanup_socket). opts: backlog (100),
** start_serving (true).
*/
static int loop_create_unix_server (lua_State *L) {
  static const char fname[] = "create_unix_server";
  static const char *const keys[] = {"backlog", "start_serving", "ssl",
    "server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout",
    NULL};
  loom_loop *loop = loom__checkopen(L, 1, fname);
  unixaddr ua;
  struct stat st;
  int backlog = 100, r;
  loom_srv_ud *su;
  loom__stream_checkcallable(L, 2);
  checkpath(L, 3, &ua);
  loom__stream_checkopts(L, 4, keys);
  if (loom__stream_hasssl(L, 4))
    return loom__stream_byname(L, "_tls_unix_server");
  lua_settop(L, 4);
  loom__stream_checkbacklog(L, 4, &backlog);
  if (!ua.abstract && stat(ua.sa.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
    unlink(ua.sa.sun_path);
  su = loom__stream_newserver(L, LOOM_SOCK_UNIX);  /* 5 */
  memcpy(su->path, ua.sa.sun_path, ua.len);
  su->pathlen = ua.len;
  su->abstract = (uint8_t)ua.abstract;
  su->closed = 0;
  su->backlog = backlog;
  r = loom__stream_addlistener(L, loop, su, 5, pipebind, &ua, 0);
  if (r < 0) {
    loom__stream_stop(su);
    loom__push_oserror(L, r, fname);
    return lua_error(L);
  }
  if (!lua_istable(L, 4) || lua_getfield(L, 4, "start_serving") == LUA_TNIL
      || lua_toboolean(L, -1))
    loom__stream_listen(L, su, 5, fname);
  lua_settop(L, 5);
  return 1;
}

static const luaL_Reg pipe_loop_methods[] = {
  {"create_unix_connection", loop_create_unix_connection},
  {"create_unix_server", loop_create_unix_server},
  {NULL, NULL}
};

int loom__open_pipe (lua_State *L) {
  loom__loop_methods(L, pipe_loop_methods);
  return 0;
}
