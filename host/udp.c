/*
** udp.c
** Datagram endpoints: loop:create_datagram_endpoint and the
** DatagramTransport it returns (asyncio's datagram API).
*/

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "internal.h"

#define UDP_MT "loom.DatagramTransport"

/*
** Memory (STYLE 3, scheme a). The transport userdata (a udp_ud) points to
** a malloc'd udp_ep holding the uv_udp_t; the endpoint is freed only by
** its close callback, which also clears ud->ep. The userdata keeps its
** own copy of the addresses, so get_extra_info works after the close.
** __gc of an open transport only starts the close (ep->ud = NULL tells
** the close callback that no Lua is to be called).
**
** Lua side (STYLE 4). User values of the transport: the protocol, the
** loop, and the value connection_lost will get. While an endpoint is open
** (until its close callback) its transport is anchored in a per-loop
** table, entry [light userdata udp_ud] = transport (keyed by the
** userdata's address, which exists before the endpoint does, so the
** entry is made before anything needs undoing); these tables sit in one
** weak-keyed table in the registry keyed by the loop, as signal.c and
** poll.c do, so a protocol that captures its loop does not keep the loop
** from being collected.
**
** Queued sends (uv_udp_send) hold a registry reference to their string
** until their callback: libuv holds a pointer into it. All endpoints of a
** loop, open or closing, are in the loop's list (loop->udp_state), so the
** shutdown hook can release those references and close them all.
**
** Protocol methods are called straight from the libuv callbacks (inside
** the loop's uv_run, on loop->L), as asyncio calls them from its
** selector callbacks: each under lua_pcall, inside an outer lua_pcall so
** that not even a memory error unwinds into libuv. The datagram is read
** into one 64 KiB buffer per loop; each delivery allocates only its
** string and its address table.
*/

typedef struct udp_ep udp_ep;

typedef struct udp_ud {
  udp_ep *ep;               /* NULL once the close callback ran */
  struct sockaddr_storage sockname, peername;
  uint8_t hassock, haspeer;
  uint8_t closing;          /* close(), abort() or the loop's close */
  uint8_t forcequeue;       /* _force_queue(true): skip uv_udp_try_send */
} udp_ud;

typedef struct udp_req {
  uv_udp_send_t req;        /* first: the callback gets it */
  udp_ep *ep;
  int ref;                  /* registry ref to the string, or LUA_NOREF */
  struct udp_req *prev, *next;
} udp_req;

struct udp_ep {
  uv_udp_t h;               /* first: the close callback frees the ep */
  loom_loop *loop;          /* NULL once detached by the shutdown hook */
  udp_ud *ud;               /* NULL once the transport's __gc ran */
  udp_ep *prev, *next;      /* the loop's list */
  udp_req *reqs;            /* queued sends, waiting for their callback */
  uint8_t closing;          /* no more reads or sends */
  uint8_t flushing;         /* close(): uv_close when the sends are done */
};

typedef struct udp_state {
  udp_ep *head;
  char buf[65536];          /* the read buffer of every endpoint */
} udp_state;

/* User values of a transport. */
enum { UV_PROTOCOL = 1, UV_LOOP, UV_LOSTERR, UV_COUNT = UV_LOSTERR };

/* Registry key of the weak table loop -> {[ep] = transport}. */
static const char anchors_key = 0;

/* What a libuv callback asks fire() to do. */
enum { FIRE_RECV, FIRE_SENDERR, FIRE_LOST };


/*
** {======================================================
** Helpers
** =======================================================
*/

/* Raises "bad argument #argno to 'fname' (msg)" whatever way the function
** was called. Methods number their arguments after self. */
static int argerr (lua_State *L, const char *fname, int argno,
                   const char *msg) {
  return luaL_error(L, "bad argument #%d to '%s' (%s)", argno, fname, msg);
}

/* Whether Lua may be called for the loop now: inside its run. */
static int usable (loom_loop *loop) {
  return loop != NULL && loop->L != NULL && !loop->closed
         && loop->self_ref != LUA_NOREF;
}

/* Whether two socket addresses are the same (family, address, port). */
static int sameaddr (const struct sockaddr_storage *a,
                     const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family)
    return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const struct sockaddr_in *)a;
    const struct sockaddr_in *y = (const struct sockaddr_in *)b;
    return x->sin_port == y->sin_port
           && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  else {
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port
           && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
}

/* The family named by the string at idx ("inet", "inet6"); AF_UNSPEC for
** nil. Raises naming 'what'. */
static int checkfamily (lua_State *L, int idx, const char *fname, int argno,
                        const char *what) {
  size_t len;
  const char *s;
  if (lua_isnil(L, idx))
    return AF_UNSPEC;
  if (lua_type(L, idx) != LUA_TSTRING)
    argerr(L, fname, argno, lua_pushfstring(L, "%s must be \"inet\" or "
           "\"inet6\", got %s", what, luaL_typename(L, idx)));
  s = lua_tolstring(L, idx, &len);
  if (strlen(s) == len && strcmp(s, "inet") == 0)
    return AF_INET;
  if (strlen(s) == len && strcmp(s, "inet6") == 0)
    return AF_INET6;
  return argerr(L, fname, argno, lua_pushfstring(L, "%s must be \"inet\" or "
                "\"inet6\", got '%s'", what, s));
}

/*
** The address table at idx, named 'what' in messages: {host =, port =,
** family =, scope_id =}. host is a numeric IPv4 or IPv6 address, or nil
** for the wildcard address of the family; port an integer 0..65535 (nil:
** 0). The family is the table's, else 'family' (AF_UNSPEC: taken from the
** host; IPv4 for a nil host). Other fields of getaddrinfo's results are
** allowed and ignored. Raises on anything else. [-0, +0, v]
*/
static void checkaddr (lua_State *L, int idx, const char *fname, int argno,
                       const char *what, int family, int dest,
                       struct sockaddr_storage *ss) {
  static const char *const keys[] = {"host", "port", "family", "scope_id",
                                     "socktype", "protocol", "canonname",
                                     NULL};
  const char *host = NULL;
  lua_Integer port = 0;
  int isint, r = UV_EINVAL, fam;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    argerr(L, fname, argno, lua_pushfstring(L, "%s must be an address "
           "table, got %s", what, luaL_typename(L, idx)));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int i, ok = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (i = 0; keys[i] != NULL && !ok; i++)
        ok = strcmp(keys[i], lua_tostring(L, -1)) == 0;
    if (!ok)
      argerr(L, fname, argno, lua_pushfstring(L, "unknown %s field '%s'",
             what, luaL_tolstring(L, -1, NULL)));
  }
  lua_pushfstring(L, "%s family", what);
  lua_getfield(L, idx, "family");
  fam = checkfamily(L, -1, fname, argno, lua_tostring(L, -2));
  lua_pop(L, 2);
  if (fam != AF_UNSPEC && family != AF_UNSPEC && fam != family)
    argerr(L, fname, argno, lua_pushfstring(L, "%s family does not match "
           "the endpoint's family", what));
  if (fam == AF_UNSPEC)
    fam = family;
  switch (lua_getfield(L, idx, "port")) {
    case LUA_TNIL:
      if (dest)  /* a destination: no port 0 to send to */
        argerr(L, fname, argno, lua_pushfstring(L, "%s needs a port", what));
      break;
    case LUA_TNUMBER:
      port = lua_tointegerx(L, -1, &isint);
      if (!isint)
        argerr(L, fname, argno, lua_pushfstring(L, "%s port must be an "
               "integer", what));
      if (port < dest || port > 65535)
        argerr(L, fname, argno, lua_pushfstring(L, "%s port out of range "
               "(%d..65535)", what, dest));
      break;
    default:
      argerr(L, fname, argno, lua_pushfstring(L, "%s port must be a number, "
             "got %s", what, luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  switch (lua_getfield(L, idx, "host")) {
    case LUA_TNIL:
      if (dest)
        argerr(L, fname, argno, lua_pushfstring(L, "%s needs a host", what));
      host = fam == AF_INET6 ? "::" : "0.0.0.0";
      break;
    case LUA_TSTRING: {
      size_t len;
      host = lua_tolstring(L, -1, &len);
      if (memchr(host, '\0', len) != NULL)
        argerr(L, fname, argno, lua_pushfstring(L, "%s host contains a NUL "
               "byte", what));
      break;
    }
    default:
      argerr(L, fname, argno, lua_pushfstring(L, "%s host must be a string, "
             "got %s", what, luaL_typename(L, -1)));
  }
  memset(ss, 0, sizeof *ss);
  if (fam != AF_INET6)
    r = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
  if (r != 0 && fam != AF_INET)
    r = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
  if (r != 0)
    argerr(L, fname, argno, lua_pushfstring(L, "%s host '%s' is not a "
           "numeric %s address (resolve names with loop:getaddrinfo)", what,
           host, fam == AF_INET ? "IPv4" : fam == AF_INET6 ? "IPv6" : "IP"));
  lua_pop(L, 1);  /* host */
  if (ss->ss_family == AF_INET6) {
    if (lua_getfield(L, idx, "scope_id") != LUA_TNIL) {
      lua_Integer sid = lua_tointegerx(L, -1, &isint);
      if (!isint || sid < 0 || sid > (lua_Integer)UINT32_MAX)
        argerr(L, fname, argno, lua_pushfstring(L, "%s scope_id must be an "
               "integer 0..4294967295", what));
      ((struct sockaddr_in6 *)ss)->sin6_scope_id = (uint32_t)sid;
    }
    lua_pop(L, 1);
  }
}

static udp_ud *checkud (lua_State *L) {
  return (udp_ud *)luaL_checkudata(L, 1, UDP_MT);
}

/* }====================================================== */


/*
** {======================================================
** Closing
** =======================================================
*/

static void unlink_ep (udp_ep *ep) {
  udp_state *st = (udp_state *)ep->loop->udp_state;
  if (ep->prev)
    ep->prev->next = ep->next;
  else if (st != NULL && st->head == ep)
    st->head = ep->next;
  if (ep->next)
    ep->next->prev = ep->prev;
  ep->prev = ep->next = NULL;
}

static int fire (lua_State *L);

/*
** The close callback: detaches the endpoint from its transport, and, when
** the loop runs and the transport is alive, calls connection_lost and
** drops the anchor (fire, protected); then frees the endpoint. After the
** shutdown hook (ep->loop NULL) it only frees.
*/
static void close_cb (uv_handle_t *h) {
  udp_ep *ep = (udp_ep *)h;
  loom_loop *loop = ep->loop;
  if (loop != NULL) {
    unlink_ep(ep);
    if (ep->ud != NULL) {
      ep->ud->ep = NULL;
      ep->ud->closing = 1;
      if (usable(loop) && lua_checkstack(loop->L, 16)) {
        lua_State *L = loop->L;
        int top = lua_gettop(L);
        lua_pushcfunction(L, fire);
        lua_pushlightuserdata(L, ep);
        lua_pushinteger(L, FIRE_LOST);
        if (lua_pcall(L, 2, 0, 0) != LUA_OK)
          lua_settop(L, top);
      }
    }
  }
  else if (ep->ud != NULL)
    ep->ud->ep = NULL;
  free(ep);
}

/*
** Starts closing ep: with flush and sends queued, stops reading and lets
** the last send callback close it (close()); else closes it now, which
** cancels the queued sends (abort()).
*/
static void startclose (udp_ep *ep, int flush) {
  if (ep->ud != NULL)
    ep->ud->closing = 1;
  if (uv_is_closing((uv_handle_t *)&ep->h))
    return;
  ep->closing = 1;
  if (flush && ep->reqs != NULL) {
    uv_udp_recv_stop(&ep->h);
    ep->flushing = 1;
    return;
  }
  ep->flushing = 0;
  uv_close((uv_handle_t *)&ep->h, close_cb);
}

/* }====================================================== */


/*
** {======================================================
** Calling the protocol
** =======================================================
*/

/* callmethod(protocol, name, args...): protocol[name](protocol, args...),
** nothing when the method is nil (asyncio's base protocol does nothing). */
static int callmethod (lua_State *L) {
  int n = lua_gettop(L);
  lua_getfield(L, 1, lua_tostring(L, 2));
  if (lua_isnil(L, -1))
    return 0;
  lua_replace(L, 2);        /* method, args after the protocol */
  lua_pushvalue(L, 1);
  lua_copy(L, 2, 1);
  lua_replace(L, 2);        /* method, protocol, args... */
  lua_call(L, n - 1, 0);
  return 0;
}

/*
** Calls protocol:name(args) of the transport at tidx; the nargs arguments
** are on top and are popped. An error is reported to the loop's exception
** handler with {message = msg, exception =, traceback =, transport =,
** protocol =}; with fatal set the transport is then aborted and its
** connection_lost gets the error (as asyncio's _fatal_error). Returns
** whether the method raised. Raises only on memory errors. [-nargs, +0, m]
*/
static int protocall (lua_State *L, int tidx, const char *name, int nargs,
                      const char *msg, int fatal) {
  int base, loopidx, err;
  tidx = lua_absindex(L, tidx);
  base = lua_gettop(L) - nargs;
  luaL_checkstack(L, 12, "protocol call");
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, callmethod);
  lua_getiuservalue(L, tidx, UV_PROTOCOL);
  lua_pushstring(L, name);
  lua_rotate(L, base + 1, 4);  /* msgh, callmethod, protocol, name, args */
  if (lua_pcall(L, nargs + 2, 0, base + 1) == LUA_OK) {
    lua_settop(L, base);
    return 0;
  }
  err = lua_gettop(L);
  lua_getiuservalue(L, tidx, UV_LOOP);
  loopidx = lua_gettop(L);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  if (lua_istable(L, err) && !lua_getmetatable(L, err)) {
    lua_getfield(L, err, "exception");
    lua_setfield(L, -2, "exception");
    lua_getfield(L, err, "traceback");
    lua_setfield(L, -2, "traceback");
  }
  else {
    if (lua_istable(L, err))
      lua_pop(L, 1);  /* the metatable */
    lua_pushvalue(L, err);
    lua_setfield(L, -2, "exception");
  }
  lua_pushvalue(L, tidx);
  lua_setfield(L, -2, "transport");
  lua_getiuservalue(L, tidx, UV_PROTOCOL);
  lua_setfield(L, -2, "protocol");
  if (fatal) {
    udp_ud *u = (udp_ud *)lua_touserdata(L, tidx);
    if (u->ep != NULL && !uv_is_closing((uv_handle_t *)&u->ep->h)) {
      lua_getfield(L, -1, "exception");
      lua_setiuservalue(L, tidx, UV_LOSTERR);
      startclose(u->ep, 0);
    }
  }
  if (lua_type(L, loopidx) == LUA_TUSERDATA)
    loom__report(L, loopidx, loopidx + 1);
  lua_settop(L, base);
  return 1;
}

/* Calls error_received(OSError for err) of the transport at tidx. */
static void error_received (lua_State *L, int tidx, int err,
                            const char *what) {
  loom__push_oserror(L, err, what);
  protocall(L, tidx, "error_received", 1,
            "Fatal error in error_received of a datagram transport", 1);
}

/*
** fire(ep, what, n, addr, base): the protected part of the libuv
** callbacks, on loop->L inside uv_run. Finds the transport of ep and
** delivers: FIRE_RECV a datagram of n bytes at base from addr, or a read
** error n (addr NULL); FIRE_SENDERR the error n of a queued send;
** FIRE_LOST connection_lost, dropping the anchor first.
*/
static int fire (lua_State *L) {
  udp_ep *ep = (udp_ep *)lua_touserdata(L, 1);
  int what = (int)lua_tointeger(L, 2);
  lua_Integer n = lua_tointeger(L, 3);
  const struct sockaddr *addr = (const struct sockaddr *)lua_touserdata(L, 4);
  const char *base = (const char *)lua_touserdata(L, 5);
  lua_settop(L, 5);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ep->loop->self_ref);  /* 6: loop */
  if (!loom__loop_table(L, 6, &anchors_key, 0))                              /* 7 */
    return 0;
  if (ep->ud == NULL
      || lua_rawgetp(L, 7, ep->ud) != LUA_TUSERDATA)      /* 8: transport */
    return 0;
  switch (what) {
    case FIRE_RECV:
      if (n < 0)
        error_received(L, 8, (int)n, "recvfrom");
      else {
        lua_pushlstring(L, base, (size_t)n);
        loom__pushaddr(L, addr);
        protocall(L, 8, "datagram_received", 2,
                  "Fatal read error on datagram transport", 1);
      }
      break;
    case FIRE_SENDERR:
      error_received(L, 8, (int)n, "sendto");
      break;
    case FIRE_LOST:
      lua_pushnil(L);
      lua_rawsetp(L, 7, ep->ud);  /* no longer anchored */
      lua_getiuservalue(L, 8, UV_LOSTERR);
      protocall(L, 8, "connection_lost", 1,
                "Exception in protocol method connection_lost", 0);
      break;
  }
  return 0;
}

static void alloc_cb (uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  udp_ep *ep = (udp_ep *)h;
  udp_state *st = ep->loop ? (udp_state *)ep->loop->udp_state : NULL;
  (void)hint;
  if (st == NULL)
    *buf = uv_buf_init(NULL, 0);  /* libuv reports UV_ENOBUFS */
  else
    *buf = uv_buf_init(st->buf, sizeof st->buf);
}

/*
** libuv's receive callback: nread 0 with no address means "nothing more
** to read" and is ignored; a 0-byte datagram has an address.
*/
static void recv_cb (uv_udp_t *h, ssize_t nread, const uv_buf_t *buf,
                     const struct sockaddr *addr, unsigned flags) {
  udp_ep *ep = (udp_ep *)h;
  loom_loop *loop = ep->loop;
  lua_State *L;
  int top;
  (void)flags;  /* UV_UDP_PARTIAL: delivered truncated, as recvfrom does */
  if ((nread == 0 && addr == NULL) || ep->closing || ep->ud == NULL
      || !usable(loop) || !lua_checkstack(loop->L, 16))
    return;
  if (nread >= 0 && addr == NULL)
    return;
  L = loop->L;
  top = lua_gettop(L);
  lua_pushcfunction(L, fire);
  lua_pushlightuserdata(L, ep);
  lua_pushinteger(L, FIRE_RECV);
  lua_pushinteger(L, (lua_Integer)nread);
  lua_pushlightuserdata(L, (void *)addr);
  lua_pushlightuserdata(L, buf->base);
  if (lua_pcall(L, 5, 0, 0) != LUA_OK)
    lua_settop(L, top);  /* out of memory: the datagram is lost */
}

/*
** The callback of a queued send: releases its string, reports an error
** (not the cancellation of an abort) to error_received, and closes a
** flushing endpoint whose last send this was.
*/
static void send_cb (uv_udp_send_t *req, int status) {
  udp_req *r = (udp_req *)req;
  udp_ep *ep = r->ep;
  loom_loop *loop = ep->loop;
  if (r->prev)
    r->prev->next = r->next;
  else
    ep->reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  if (loop != NULL && loop->L != NULL && r->ref != LUA_NOREF)
    luaL_unref(loop->L, LUA_REGISTRYINDEX, r->ref);
  free(r);
  if (status < 0 && status != UV_ECANCELED && !ep->closing
      && ep->ud != NULL && usable(loop) && lua_checkstack(loop->L, 16)) {
    lua_State *L = loop->L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, fire);
    lua_pushlightuserdata(L, ep);
    lua_pushinteger(L, FIRE_SENDERR);
    lua_pushinteger(L, status);
    if (lua_pcall(L, 3, 0, 0) != LUA_OK)
      lua_settop(L, top);
  }
  if (ep->flushing && ep->reqs == NULL
      && !uv_is_closing((uv_handle_t *)&ep->h)) {
    ep->flushing = 0;
    uv_close((uv_handle_t *)&ep->h, close_cb);
  }
}

/* }====================================================== */


/*
** {======================================================
** create_datagram_endpoint
** =======================================================
*/

/*
** Sets up the socket of ep (made with uv_udp_init_ex for the family):
** options, bind, connect, reading. Returns 0 or a negative libuv code and
** the name of the step that failed.
*/
static int setup (udp_ep *ep, const struct sockaddr_storage *local,
                  const struct sockaddr_storage *remote, int reuse_port,
                  int broadcast, const char **step) {
  int r = 0;
  if (reuse_port) {
    uv_os_fd_t fd;
    int on = 1;
    *step = "reuse_port";
    r = uv_fileno((uv_handle_t *)&ep->h, &fd);
    if (r == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0)
      r = uv_translate_sys_error(errno);
    if (r < 0)
      return r;
  }
  if (local != NULL) {
    *step = "bind";
    r = uv_udp_bind(&ep->h, (const struct sockaddr *)local, 0);
    if (r < 0)
      return r;
  }
  if (broadcast) {
    *step = "allow_broadcast";
    r = uv_udp_set_broadcast(&ep->h, 1);
    if (r < 0)
      return r;
  }
  if (remote != NULL) {
    *step = "connect";
    r = uv_udp_connect(&ep->h, (const struct sockaddr *)remote);
    if (r < 0)
      return r;
  }
  *step = "recv";
  return uv_udp_recv_start(&ep->h, alloc_cb, recv_cb);
}

/*
** loop:create_datagram_endpoint(protocol_factory, [opts]) -> transport,
** protocol. Synchronous (addresses are numeric), so it works inside or
** outside a task. The factory is called first: its error propagates and
** nothing is made. connection_made(transport) is called (protected)
** before the function returns, as asyncio's waiter guarantees.
*/
static int loop_create_datagram_endpoint (lua_State *L) {
  static const char fname[] = "create_datagram_endpoint";
  static const char *const optkeys[] = {"local_addr", "remote_addr",
                                        "family", "reuse_port",
                                        "allow_broadcast", NULL};
  loom_loop *loop = loom__checkopen(L, 1, fname);
  struct sockaddr_storage local, remote;
  int haslocal = 0, hasremote = 0, family = AF_UNSPEC;
  int reuse_port = 0, broadcast = 0, r, tidx, i;
  const char *step = "socket";
  udp_state *st;
  udp_ud *u;
  udp_ep *ep;
  lua_settop(L, 3);
  if (lua_type(L, 2) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, 2, "__call") == LUA_TNIL)
      argerr(L, fname, 1, lua_pushfstring(L, "function expected, got %s",
                                          luaL_typename(L, 2)));
    lua_pop(L, 1);
  }
  if (!lua_isnil(L, 3)) {
    if (!lua_istable(L, 3))
      argerr(L, fname, 2, lua_pushfstring(L, "options table expected, got %s",
                                          luaL_typename(L, 3)));
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      int ok = 0;
      lua_pop(L, 1);
      if (lua_type(L, -1) == LUA_TSTRING)
        for (i = 0; optkeys[i] != NULL && !ok; i++)
          ok = strcmp(optkeys[i], lua_tostring(L, -1)) == 0;
      if (!ok)
        argerr(L, fname, 2, lua_pushfstring(L, "unknown option '%s'",
                                            luaL_tolstring(L, -1, NULL)));
    }
    lua_getfield(L, 3, "family");
    family = checkfamily(L, -1, fname, 2, "family");
    lua_getfield(L, 3, "reuse_port");
    reuse_port = lua_toboolean(L, -1);
    lua_getfield(L, 3, "allow_broadcast");
    broadcast = lua_toboolean(L, -1);
    lua_pop(L, 3);
    if (lua_getfield(L, 3, "local_addr") != LUA_TNIL) {
      checkaddr(L, -1, fname, 2, "local_addr", family, 0, &local);
      haslocal = 1;
      family = local.ss_family;
    }
    if (lua_getfield(L, 3, "remote_addr") != LUA_TNIL) {
      checkaddr(L, -1, fname, 2, "remote_addr", family, 1, &remote);
      hasremote = 1;
      family = remote.ss_family;
    }
    lua_pop(L, 2);
  }
  if (family == AF_UNSPEC)
    argerr(L, fname, 2, "family, local_addr or remote_addr is required");
  /* the protocol: the factory's error propagates, nothing is made yet */
  lua_pushvalue(L, 2);
  lua_call(L, 0, 1);  /* 4: protocol */
  if (!lua_istable(L, 4) && !lua_isuserdata(L, 4))
    return luaL_error(L, "%s: protocol_factory must return a protocol "
                      "(table or userdata), got %s", fname,
                      luaL_typename(L, 4));
  /* the transport, closed until the endpoint exists */
  u = (udp_ud *)lua_newuserdatauv(L, sizeof(udp_ud), UV_COUNT);  /* 5 */
  tidx = lua_gettop(L);
  memset(u, 0, sizeof *u);
  u->closing = 1;
  luaL_setmetatable(L, UDP_MT);
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, tidx, UV_PROTOCOL);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, tidx, UV_LOOP);
  loom__loop_table(L, 1, &anchors_key, 1);  /* 6 */
  lua_pushvalue(L, tidx);
  lua_rawsetp(L, 6, u);  /* anchored first: the only step that may raise */
  if (loop->udp_state == NULL)
    loop->udp_state = calloc(1, sizeof(udp_state));
  st = (udp_state *)loop->udp_state;
  ep = st == NULL ? NULL : (udp_ep *)calloc(1, sizeof *ep);
  r = ep == NULL ? UV_ENOMEM : uv_udp_init_ex(&loop->uv, &ep->h,
                                               (unsigned)family);
  if (r < 0) {  /* not a handle: nothing to close */
    free(ep);
    lua_pushnil(L);
    lua_rawsetp(L, 6, u);  /* the key exists: allocates nothing */
    loom__push_oserror(L, r, fname);
    return lua_error(L);
  }
  ep->loop = loop;
  ep->next = st->head;
  if (st->head)
    st->head->prev = ep;
  st->head = ep;
  r = setup(ep, haslocal ? &local : NULL, hasremote ? &remote : NULL,
            reuse_port, broadcast, &step);
  if (r < 0) {  /* closed with no Lua: ep->ud is NULL */
    ep->closing = 1;
    uv_close((uv_handle_t *)&ep->h, close_cb);
    lua_pushnil(L);
    lua_rawsetp(L, 6, u);
    loom__push_oserror(L, r, lua_pushfstring(L, "%s (%s)", fname, step));
    return lua_error(L);
  }
  ep->ud = u;
  u->ep = ep;
  u->closing = 0;
  {
    int len = (int)sizeof u->sockname;
    if (uv_udp_getsockname(&ep->h, (struct sockaddr *)&u->sockname, &len) == 0)
      u->hassock = 1;
    len = (int)sizeof u->peername;
    if (hasremote && uv_udp_getpeername(&ep->h, (struct sockaddr *)&u->peername,
                                        &len) == 0)
      u->haspeer = 1;
  }
  lua_settop(L, tidx);
  lua_pushvalue(L, tidx);
  protocall(L, tidx, "connection_made", 1,
            "Exception in protocol method connection_made", 0);
  lua_pushvalue(L, 4);
  return 2;
}

/* }====================================================== */


/*
** {======================================================
** Transport methods
** =======================================================
*/

/*
** transport:sendto(data, [addr]): sends one datagram. uv_udp_try_send
** first; when the socket would block (or sends are queued), a uv_udp_send
** keeps the string until its callback. Errors of the environment go to
** error_received (they are not raised); on a closing or closed transport
** the call does nothing, as asyncio.
*/
static int transport_sendto (lua_State *L) {
  static const char fname[] = "sendto";
  udp_ud *u = checkud(L);
  struct sockaddr_storage ss;
  const struct sockaddr *to = NULL;
  size_t len;
  const char *data;
  udp_ep *ep;
  uv_buf_t buf;
  udp_req *req;
  int r, ref;
  lua_settop(L, 3);
  if (lua_type(L, 2) != LUA_TSTRING)
    luaL_typeerror(L, 2, "string");
  data = lua_tolstring(L, 2, &len);
  if (!lua_isnil(L, 3)) {
    checkaddr(L, 3, fname, 2, "address", AF_UNSPEC, 1, &ss);
    to = (const struct sockaddr *)&ss;
  }
  if (u->closing || (ep = u->ep) == NULL)
    return 0;
  if (u->haspeer) {
    if (to != NULL && !sameaddr(&ss, &u->peername))
      argerr(L, fname, 2, "address must be nil or the remote address of a "
                          "connected endpoint");
    to = NULL;
  }
  else if (to == NULL)
    argerr(L, fname, 2, "address required (the endpoint has no "
                        "remote_addr)");
  buf = uv_buf_init((char *)data, (unsigned)len);
  if (ep->reqs == NULL && !u->forcequeue) {
    r = uv_udp_try_send(&ep->h, &buf, 1, to);
    if (r >= 0)
      return 0;
    if (r != UV_EAGAIN && r != UV_ENOSYS) {
      error_received(L, 1, r, fname);
      return 0;
    }
  }
  lua_pushvalue(L, 2);
  ref = luaL_ref(L, LUA_REGISTRYINDEX);
  req = (udp_req *)malloc(sizeof *req);
  if (req == NULL) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return luaL_error(L, "%s: not enough memory", fname);
  }
  req->ep = ep;
  req->ref = ref;
  r = uv_udp_send(&req->req, &ep->h, &buf, 1, to, send_cb);
  if (r < 0) {  /* no callback will come */
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    free(req);
    error_received(L, 1, r, fname);
    return 0;
  }
  req->prev = NULL;
  req->next = ep->reqs;
  if (ep->reqs)
    ep->reqs->prev = req;
  ep->reqs = req;
  return 0;
}

/* transport:close(): stops reading; closes once queued sends are out;
** connection_lost(nil) follows. Idempotent. */
static int transport_close (lua_State *L) {
  udp_ud *u = checkud(L);
  if (!u->closing && u->ep != NULL)
    startclose(u->ep, 1);
  u->closing = 1;
  return 0;
}

/* transport:abort(): closes now, dropping queued sends. */
static int transport_abort (lua_State *L) {
  udp_ud *u = checkud(L);
  if (u->ep != NULL)
    startclose(u->ep, 0);
  u->closing = 1;
  return 0;
}

static int transport_is_closing (lua_State *L) {
  udp_ud *u = checkud(L);
  lua_pushboolean(L, u->closing);
  return 1;
}

/*
** transport:get_extra_info(name, [default]): "sockname" (the bound
** address), "peername" (the remote_addr of a connected endpoint),
** "socket" (a loom.TransportSocket, while open); default
** for anything else. Kept from creation: valid after the close too.
*/
static int transport_get_extra_info (lua_State *L) {
  udp_ud *u = checkud(L);
  const char *name = luaL_checkstring(L, 2);
  lua_settop(L, 3);
  if (strcmp(name, "socket") == 0 && u->ep != NULL && !u->closing)
    loom__push_transport_socket(L, 1);
  else if (strcmp(name, "sockname") == 0 && u->hassock)
    loom__pushaddr(L, (const struct sockaddr *)&u->sockname);
  else if (strcmp(name, "peername") == 0 && u->haspeer)
    loom__pushaddr(L, (const struct sockaddr *)&u->peername);
  else
    lua_pushvalue(L, 3);
  return 1;
}

/* transport:get_write_buffer_size(): bytes of queued sends. */
static int transport_get_write_buffer_size (lua_State *L) {
  udp_ud *u = checkud(L);
  lua_pushinteger(L, u->ep != NULL
                  ? (lua_Integer)uv_udp_get_send_queue_size(&u->ep->h) : 0);
  return 1;
}

/* __gc: an open endpoint is closed, with no protocol call. */
static int transport_gc (lua_State *L) {
  udp_ud *u = (udp_ud *)luaL_checkudata(L, 1, UDP_MT);
  udp_ep *ep = u->ep;
  if (ep != NULL) {
    ep->ud = NULL;
    u->ep = NULL;
    if (!ep->closing)
      startclose(ep, 0);
  }
  u->closing = 1;
  return 0;
}

static int transport_tostring (lua_State *L) {
  udp_ud *u = checkud(L);
  lua_pushfstring(L, "loom.DatagramTransport (%s) %p",
                  u->ep == NULL ? "closed" : u->closing ? "closing" : "open",
                  (void *)u);
  return 1;
}

/* transport:_force_queue(b): with b true, every sendto queues a
** uv_udp_send (for the specs: loopback sockets rarely block). */
static int transport_force_queue (lua_State *L) {
  udp_ud *u = checkud(L);
  u->forcequeue = (uint8_t)lua_toboolean(L, 2);
  return 0;
}

/* _udp_endpoints(loop): endpoints open or closing (for the specs). */
static int core_udp_endpoints (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  udp_state *st = (udp_state *)loop->udp_state;
  lua_Integer n = 0;
  udp_ep *ep;
  for (ep = st ? st->head : NULL; ep != NULL; ep = ep->next)
    n++;
  lua_pushinteger(L, n);
  return 1;
}

/* }====================================================== */


static const luaL_Reg udp_loop_methods[] = {
  {"create_datagram_endpoint", loop_create_datagram_endpoint},
  {"_udp_endpoints", core_udp_endpoints},
  {NULL, NULL}
};

static const luaL_Reg transport_methods[] = {
  {"sendto", transport_sendto},
  {"close", transport_close},
  {"abort", transport_abort},
  {"is_closing", transport_is_closing},
  {"get_extra_info", transport_get_extra_info},
  {"get_write_buffer_size", transport_get_write_buffer_size},
  {"_force_queue", transport_force_queue},
  {NULL, NULL}
};

static const luaL_Reg transport_metamethods[] = {
  {"__gc", transport_gc},
  {"__close", transport_close},
  {"__tostring", transport_tostring},
  {NULL, NULL}
};

/*
** Called by close() and __gc of the loop before its last uv_run: releases
** the strings of queued sends, detaches every endpoint (no protocol
** method is called any more; connection_lost never comes) and closes the
** open ones; their close callbacks, run by that uv_run, free them. Then
** frees the read buffer and drops the loop's anchor table. Never raises.
*/
void loom__udp_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  udp_state *st = (udp_state *)loop->udp_state;
  if (st != NULL) {
    udp_ep *ep, *next;
    for (ep = st->head; ep != NULL; ep = next) {
      udp_req *r;
      next = ep->next;
      for (r = ep->reqs; r != NULL; r = r->next) {
        luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
        r->ref = LUA_NOREF;
      }
      ep->loop = NULL;
      ep->prev = ep->next = NULL;
      ep->closing = 1;
      ep->flushing = 0;
      if (ep->ud != NULL)
        ep->ud->closing = 1;
      if (!uv_is_closing((uv_handle_t *)&ep->h))
        uv_close((uv_handle_t *)&ep->h, close_cb);
    }
    free(st);
    loop->udp_state = NULL;
  }
  loom__loop_table_drop(L, loopidx, &anchors_key);
}

int loom__open_udp (lua_State *L) {
  luaL_newmetatable(L, UDP_MT);
  luaL_setfuncs(L, transport_metamethods, 0);
  luaL_newlib(L, transport_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__loop_methods(L, udp_loop_methods);
  return 0;
}
