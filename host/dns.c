/*
** dns.c
** Name resolution off the loop thread: getaddrinfo and getnameinfo on
** libuv's thread pool, each completing a future of the loop.
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "internal.h"

/*
** A request in flight. It is malloc'd, pinned by libuv from submission
** until its callback, and anchors in its loop (loom__anchor) the future
** it completes. While the loop is open it is in the loop's list of
** pending requests (loop->dns_state); loom__dns_shutdown detaches it
** (loop set to NULL, anchor forgotten), and its callback then only frees
** it.
*/
typedef struct dns_req {
  union {
    uv_getaddrinfo_t ai;
    uv_getnameinfo_t ni;
  } u;
  loom_loop *loop;          /* NULL once detached by shutdown */
  loom_future *fut;         /* anchored by fut_ref */
  int fut_ref;              /* its anchor, or LUA_NOREF */
  uint64_t id;              /* for the cancel callback to find it */
  struct dns_req *prev, *next;
  /* the outcome, read by the protected completion functions */
  int status;
  struct addrinfo *res;
  const char *host, *service;
} dns_req;

/* The loop's list of pending requests. */
typedef struct dns_state {
  dns_req *head;
  uint64_t ids;
} dns_state;


/*
** {======================================================
** Names of families, socket types and flags
** =======================================================
*/

typedef struct namedint {
  const char *name;
  int value;
} namedint;

static const namedint families[] = {
  {"unspec", AF_UNSPEC}, {"inet", AF_INET}, {"inet6", AF_INET6}, {NULL, 0}
};

static const namedint socktypes[] = {
  {"stream", SOCK_STREAM}, {"dgram", SOCK_DGRAM}, {"raw", SOCK_RAW},
  {"seqpacket", SOCK_SEQPACKET}, {NULL, 0}
};

static const namedint protocols[] = {
  {"tcp", IPPROTO_TCP}, {"udp", IPPROTO_UDP}, {NULL, 0}
};

static const namedint ai_flags[] = {
  {"passive", AI_PASSIVE}, {"canonname", AI_CANONNAME},
  {"numerichost", AI_NUMERICHOST}, {"numericserv", AI_NUMERICSERV},
  {"v4mapped", AI_V4MAPPED}, {"all", AI_ALL}, {"addrconfig", AI_ADDRCONFIG},
  {NULL, 0}
};

static const namedint ni_flags[] = {
  {"namereqd", NI_NAMEREQD}, {"numerichost", NI_NUMERICHOST},
  {"numericserv", NI_NUMERICSERV}, {"dgram", NI_DGRAM},
  {"nofqdn", NI_NOFQDN}, {NULL, 0}
};

/* The value named s in list l, or -1. */
static int lookup (const namedint *l, const char *s) {
  for (; l->name != NULL; l++)
    if (strcmp(l->name, s) == 0)
      return l->value;
  return -1;
}

/* The name of value v in list l, or NULL. */
static const char *nameof (const namedint *l, int v) {
  for (; l->name != NULL; l++)
    if (l->value == v)
      return l->name;
  return NULL;
}

/* }====================================================== */


/*
** {======================================================
** Argument checks. Each raises luaL_argerror style errors naming the
** argument (arg) and the function (fname in the message).
** =======================================================
*/

static int argerrorf (lua_State *L, int arg, const char *fmt, const char *s) {
  return luaL_argerror(L, arg, lua_pushfstring(L, fmt, s));
}

/*
** The string at idx, which must hold no NUL byte (a C API would cut it
** short). [-0, +0, v]
*/
static const char *checknonul (lua_State *L, int idx, int arg,
                               const char *what) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  if (memchr(s, '\0', len) != NULL)
    argerrorf(L, arg, "%s contains a NUL byte", what);
  return s;
}

/* host: a string or nil (NULL). */
static const char *checkhost (lua_State *L, int idx, int arg) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TNONE)
    return NULL;
  if (t != LUA_TSTRING)
    luaL_typeerror(L, arg, "string or nil");
  return checknonul(L, idx, arg, "host");
}

/*
** port: nil (NULL), an integer 0..65535 or a string of digits in that
** range (written into buf), or a service name ("http"). [-0, +0, v]
*/
static const char *checkport (lua_State *L, int idx, int arg, char *buf,
                              size_t bufsz) {
  int t = lua_type(L, idx);
  if (t == LUA_TNIL || t == LUA_TNONE)
    return NULL;
  if (t == LUA_TNUMBER) {
    int isint;
    lua_Integer p = lua_tointegerx(L, idx, &isint);
    if (!isint)
      luaL_argerror(L, arg, "port must be an integer");
    if (p < 0 || p > 65535)
      luaL_argerror(L, arg, "port out of range (0..65535)");
    snprintf(buf, bufsz, "%d", (int)p);
    return buf;
  }
  if (t == LUA_TSTRING) {
    size_t len, i;
    const char *s = checknonul(L, idx, arg, "port");
    len = lua_rawlen(L, idx);
    if (len == 0)
      luaL_argerror(L, arg, "port is an empty string");
    for (i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++)
      ;
    if (i == len && (len > 5 || atoi(s) > 65535))
      luaL_argerror(L, arg, "port out of range (0..65535)");
    return s;
  }
  luaL_typeerror(L, arg, "number, string or nil");
  return NULL;
}

/*
** The flags table at idx (nil: 0): keys are names from list l, values
** booleans. Unknown names are errors, so a misspelt flag is not silently
** ignored. [-0, +0, v]
*/
static int checkflags (lua_State *L, int idx, int arg, const namedint *l,
                       const char *what) {
  int flags = 0;
  idx = lua_absindex(L, idx);
  if (lua_isnoneornil(L, idx))
    return 0;
  if (!lua_istable(L, idx))
    argerrorf(L, arg, "%s must be a table of booleans", what);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int v;
    if (lua_type(L, -2) != LUA_TSTRING)
      argerrorf(L, arg, "%s keys must be flag names", what);
    v = lookup(l, lua_tostring(L, -2));
    if (v < 0)
      luaL_argerror(L, arg, lua_pushfstring(L, "unknown %s '%s'", what,
                                            lua_tostring(L, -2)));
    if (!lua_isboolean(L, -1))
      luaL_argerror(L, arg, lua_pushfstring(L, "%s '%s' must be a boolean",
                                            what, lua_tostring(L, -2)));
    if (lua_toboolean(L, -1))
      flags |= v;
    lua_pop(L, 1);
  }
  return flags;
}

/* A name field of table idx looked up in l; dflt when nil. */
static int checkname (lua_State *L, int idx, int arg, const char *field,
                      const namedint *l, int dflt) {
  int v;
  const char *s;
  int t = lua_getfield(L, idx, field);
  if (t == LUA_TNIL) {
    lua_pop(L, 1);
    return dflt;
  }
  if (t != LUA_TSTRING)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a string, got %s",
                                          field, luaL_typename(L, -1)));
  s = lua_tostring(L, -1);
  v = lookup(l, s);
  if (v < 0 || strlen(s) != lua_rawlen(L, -1))
    luaL_argerror(L, arg, lua_pushfstring(L, "unknown %s '%s'", field, s));
  lua_pop(L, 1);
  return v;
}

/* hints: nil or {family =, socktype =, protocol =, flags =}. */
static void checkhints (lua_State *L, int idx, int arg, struct addrinfo *h) {
  static const char *const keys[] = {"family", "socktype", "protocol",
                                     "flags", NULL};
  memset(h, 0, sizeof *h);
  h->ai_family = AF_UNSPEC;
  if (lua_isnoneornil(L, idx))
    return;
  if (!lua_istable(L, idx))
    luaL_typeerror(L, arg, "table or nil");
  loom__checkkeys(L, idx, arg, "hints", keys);
  h->ai_family = checkname(L, idx, arg, "family", families, AF_UNSPEC);
  h->ai_socktype = checkname(L, idx, arg, "socktype", socktypes, 0);
  switch (lua_getfield(L, idx, "protocol")) {
    case LUA_TNIL: break;
    case LUA_TSTRING:
      lua_pop(L, 1);
      h->ai_protocol = checkname(L, idx, arg, "protocol", protocols, 0);
      lua_pushnil(L);
      break;
    default: {
      int isint;
      lua_Integer p = lua_tointegerx(L, -1, &isint);
      if (!isint || p < 0 || p > 255)
        luaL_argerror(L, arg, "protocol must be \"tcp\", \"udp\" or an "
                      "integer 0..255");
      h->ai_protocol = (int)p;
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "flags");
  h->ai_flags = checkflags(L, -1, arg, ai_flags, "flag");
  lua_pop(L, 1);
}

/*
** addr: {host = "127.0.0.1", port = 80, family = "inet"}, host a numeric
** address, port optional (0), family optional (taken from the host),
** scope_id optional (IPv6). The other fields of getaddrinfo's results
** are allowed and ignored, so a result can be passed back as it is.
*/
static void checkaddr (lua_State *L, int idx, int arg,
                       struct sockaddr_storage *ss) {
  static const char *const keys[] = {"host", "port", "family", "scope_id",
                                     "socktype", "protocol", "canonname",
                                     NULL};
  const char *host;
  lua_Integer port = 0;
  int family, isint, r = UV_EINVAL;
  if (!lua_istable(L, idx))
    luaL_typeerror(L, arg, "address table");
  loom__checkkeys(L, idx, arg, "address", keys);
  if (lua_getfield(L, idx, "host") != LUA_TSTRING)
    luaL_argerror(L, arg, lua_pushfstring(L, "address host must be a string, "
                                          "got %s", luaL_typename(L, -1)));
  host = checknonul(L, -1, arg, "address host");
  switch (lua_getfield(L, idx, "port")) {
    case LUA_TNIL: break;
    case LUA_TNUMBER:
      port = lua_tointegerx(L, -1, &isint);
      if (!isint)
        luaL_argerror(L, arg, "address port must be an integer");
      if (port < 0 || port > 65535)
        luaL_argerror(L, arg, "address port out of range (0..65535)");
      break;
    default:
      luaL_argerror(L, arg, lua_pushfstring(L, "address port must be a "
                                            "number, got %s",
                                            luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  family = checkname(L, idx, arg, "family", families, AF_UNSPEC);
  memset(ss, 0, sizeof *ss);
  if (family != AF_INET6)
    r = uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss);
  if (r != 0 && family != AF_INET)
    r = uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
  if (r == 0 && ss->ss_family == AF_INET6
      && lua_getfield(L, idx, "scope_id") != LUA_TNIL) {
    lua_Integer sid = lua_tointegerx(L, -1, &isint);
    if (!isint || sid < 0 || sid > (lua_Integer)UINT32_MAX)
      luaL_argerror(L, arg, "address scope_id must be an integer "
                    "0..4294967295");
    ((struct sockaddr_in6 *)ss)->sin6_scope_id = (uint32_t)sid;
    lua_pop(L, 1);
  }
  else if (r == 0 && ss->ss_family == AF_INET6)
    lua_pop(L, 1);
  if (r != 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "address host '%s' is not a "
                                          "numeric %s address", host,
                                          family == AF_INET ? "IPv4"
                                          : family == AF_INET6 ? "IPv6"
                                          : "IP"));
  lua_pop(L, 1);  /* host */
}

/*
** The loop a call resolves on, checked to be the running loop with the
** caller inside one of its tasks (the call awaits). loopidx 0: the
** running loop, pushed. Returns the loop and leaves its index in
** *loopidx.
*/
static loom_loop *checkawait (lua_State *L, int *loopidx, const char *fname) {
  loom_loop *run = loom__running();
  loom_loop *loop;
  if (*loopidx == 0) {
    if (run == NULL || run->self_ref == LUA_NOREF)
      luaL_error(L, "%s: no running event loop", fname);
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->self_ref);
    *loopidx = lua_gettop(L);
    loop = run;
  }
  else
    loop = loom__checkopen(L, *loopidx, fname);
  if (run != loop || loop->current == NULL)
    luaL_error(L, "%s: not inside a task of this event loop", fname);
  if (loop->current->co != L)
    luaL_error(L, "%s: called from a coroutine that is not a task "
               "(a plain coroutine inside a task cannot await)", fname);
  return loop;
}

/* }====================================================== */


/*
** {======================================================
** Requests
** =======================================================
*/

static dns_state *getstate (lua_State *L, loom_loop *loop) {
  if (loop->dns_state == NULL) {
    dns_state *st = (dns_state *)calloc(1, sizeof *st);
    if (st == NULL)
      luaL_error(L, "not enough memory");
    loop->dns_state = st;
  }
  return (dns_state *)loop->dns_state;
}

static void unlink_req (dns_req *r) {
  dns_state *st;
  if (r->loop == NULL)
    return;
  st = (dns_state *)r->loop->dns_state;
  if (r->prev)
    r->prev->next = r->next;
  else
    st->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

/*
** Done callback of a request's future: when the future was cancelled (its
** task was), asks libuv to drop the request if no thread has started it.
** Upvalue: the request's id. The request may be gone already.
*/
static int cancel_cb (lua_State *L) {
  loom_future *f = loom__tofuture(L, 1);
  uint64_t id = (uint64_t)lua_tointeger(L, lua_upvalueindex(LOOM_TCOUNT + 1));
  dns_state *st;
  dns_req *r;
  if (f == NULL || f->state != LOOM_CANCELLED || f->loop->closed)
    return 0;
  st = (dns_state *)f->loop->dns_state;
  for (r = st ? st->head : NULL; r != NULL; r = r->next) {
    if (r->id == id) {
      uv_cancel((uv_req_t *)&r->u);  /* UV_EBUSY when already running */
      break;
    }
  }
  return 0;
}

/*
** Makes a request for the loop at loopidx: a new pending future (pushed)
** with the cancel callback, its anchor in the loop, and the malloc'd
** request, not yet submitted nor listed. [-0, +1, m]
*/
static dns_req *newreq (lua_State *L, loom_loop *loop, int loopidx) {
  dns_state *st = getstate(L, loop);
  dns_req *r;
  int fidx, ref;
  loom__future_new(L, loop, loopidx);
  fidx = lua_gettop(L);
  {
    int i;  /* the closure: the core's upvalues, then the id */
    for (i = 1; i <= LOOM_TCOUNT; i++)
      lua_pushvalue(L, lua_upvalueindex(i));
    lua_pushinteger(L, (lua_Integer)(st->ids + 1));
    lua_pushcclosure(L, cancel_cb, LOOM_TCOUNT + 1);
  }
  loom__future_add_callback(L, (loom_future *)lua_touserdata(L, fidx), fidx,
                            -1, LOOM_CBLUA);
  lua_pop(L, 1);
  lua_pushvalue(L, fidx);
  ref = loom__anchor(L, loopidx);
  r = (dns_req *)calloc(1, sizeof *r);
  if (r == NULL) {
    loom__unanchor(L, loop, ref);
    luaL_error(L, "not enough memory");
  }
  r->loop = loop;
  r->fut = (loom_future *)lua_touserdata(L, fidx);
  r->fut_ref = ref;
  r->id = ++st->ids;
  r->u.ai.data = r;  /* the same field of either request type */
  return r;
}

/* A submitted request joins the loop's pending list. */
static void listreq (loom_loop *loop, dns_req *r) {
  dns_state *st = (dns_state *)loop->dns_state;
  r->next = st->head;
  if (st->head)
    st->head->prev = r;
  st->head = r;
}

/* Submission failed: nothing will call back. Raises the OSError. */
static int failreq (lua_State *L, dns_req *r, int err, const char *what) {
  loom__unanchor(L, r->loop, r->fut_ref);
  free(r);
  loom__push_oserror(L, err, what);
  return lua_error(L);
}

/* Releases a finished request: its reference and its memory. */
static void freereq (lua_State *L, dns_req *r) {
  loom__unanchor(L, r->loop, r->fut_ref);
  if (r->res)
    uv_freeaddrinfo(r->res);
  free(r);
}

/* Pushes the address table {host =, port =, family = [, scope_id =]} of
** an IPv4 or IPv6 socket address, as every function of loom gives one.
** [-0, +1, m] */
void loom__pushaddr (lua_State *L, const struct sockaddr *sa) {
  char ip[INET6_ADDRSTRLEN + 1];
  lua_createtable(L, 0, 6);
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(s6, ip, sizeof ip);
    lua_pushinteger(L, ntohs(s6->sin6_port));
    if (s6->sin6_scope_id != 0) {
      lua_pushinteger(L, (lua_Integer)s6->sin6_scope_id);
      lua_setfield(L, -3, "scope_id");
    }
    lua_pushliteral(L, "inet6");
  }
  else {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    uv_ip4_name(s4, ip, sizeof ip);
    lua_pushinteger(L, ntohs(s4->sin_port));
    lua_pushliteral(L, "inet");
  }
  lua_setfield(L, -3, "family");
  lua_setfield(L, -2, "port");
  lua_pushstring(L, ip);
  lua_setfield(L, -2, "host");
}

/* Pushes one address table for ai. [-0, +1, m] */
static void pushaddrinfo (lua_State *L, const struct addrinfo *ai) {
  const char *s;
  loom__pushaddr(L, ai->ai_addr);
  s = nameof(socktypes, ai->ai_socktype);
  if (s)
    lua_pushstring(L, s);
  else
    lua_pushinteger(L, ai->ai_socktype);
  lua_setfield(L, -2, "socktype");
  lua_pushinteger(L, ai->ai_protocol);
  lua_setfield(L, -2, "protocol");
}

/*
** Completes the request (light userdata 1) whose callback ran: sets the
** future's result or its OSError. Runs under lua_pcall: it allocates.
*/
static int complete (lua_State *L) {
  dns_req *r = (dns_req *)lua_touserdata(L, 1);
  int isai = r->u.ai.type == UV_GETADDRINFO;
  loom__anchored(L, r->loop, r->fut_ref);  /* 2: future */
  if (r->status < 0) {
    lua_getfield(L, 2, "set_exception");
    lua_pushvalue(L, 2);
    loom__push_oserror(L, r->status, isai ? "getaddrinfo" : "getnameinfo");
    lua_call(L, 2, 0);
    return 0;
  }
  lua_getfield(L, 2, "set_result");
  lua_pushvalue(L, 2);
  if (isai) {
    const struct addrinfo *ai;
    int n = 0;
    lua_newtable(L);
    for (ai = r->res; ai != NULL; ai = ai->ai_next) {
      if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
        continue;
      pushaddrinfo(L, ai);
      if (n == 0 && r->res->ai_canonname != NULL) {
        lua_pushstring(L, r->res->ai_canonname);
        lua_setfield(L, -2, "canonname");
      }
      lua_rawseti(L, -2, ++n);
    }
    lua_call(L, 2, 0);
  }
  else {
    lua_pushstring(L, r->host);
    lua_pushstring(L, r->service);
    lua_call(L, 3, 0);
  }
  return 0;
}

/* Sets the error at the top (raised by complete) as the future's. */
static int complete_error (lua_State *L) {
  dns_req *r = (dns_req *)lua_touserdata(L, 1);
  loom__anchored(L, r->loop, r->fut_ref);
  lua_getfield(L, -1, "set_exception");
  lua_insert(L, -2);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 0);
  return 0;
}

/*
** Common end of both callbacks, inside the loop's uv_run. A detached
** request (the loop is closing) or one whose future was cancelled is
** only freed; otherwise its future is completed under lua_pcall on the
** thread running the loop, so no Lua error escapes into libuv. If
** completing fails (out of memory), the failure becomes the future's
** error, or failing that is dropped.
*/
static void finish (dns_req *r) {
  loom_loop *loop = r->loop;
  lua_State *L = loop ? loop->L : NULL;
  if (loom__trace != NULL && loop != NULL)
    loom__trace_async(loop, "pool", r->u.ai.type == UV_GETADDRINFO
                      ? "getaddrinfo" : "getnameinfo", r, 0);
  unlink_req(r);
  if (L == NULL || loop->closed) {  /* detached: refs already released */
    freereq(L, r);
    return;
  }
  if (r->fut->state == LOOM_PENDING && lua_checkstack(L, 8)) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, complete);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK && r->fut->state == LOOM_PENDING) {
      lua_pushcfunction(L, complete_error);
      lua_pushlightuserdata(L, r);
      lua_pushvalue(L, -3);
      lua_pcall(L, 2, 0, 0);
    }
    lua_settop(L, top);
  }
  freereq(L, r);
}

static void getaddrinfo_cb (uv_getaddrinfo_t *req, int status,
                            struct addrinfo *res) {
  dns_req *r = (dns_req *)req->data;
  r->status = status;
  r->res = res;
  finish(r);
}

static void getnameinfo_cb (uv_getnameinfo_t *req, int status,
                            const char *host, const char *service) {
  dns_req *r = (dns_req *)req->data;
  r->status = status;
  r->host = host;        /* both point into req, alive until free */
  r->service = service;
  finish(r);
}

/*
** Starts getaddrinfo(host at arg, port at arg + 1, hints at arg + 2) on
** the loop at loopidx and pushes its future. Argument errors raise. A
** submission that fails raises its OSError (no callback will come).
** [-0, +1, v]
*/
static int start_getaddrinfo (lua_State *L, loom_loop *loop, int loopidx,
                              int arg) {
  char portbuf[16];
  struct addrinfo hints;
  const char *host = checkhost(L, arg, arg);
  const char *port = checkport(L, arg + 1, arg + 1, portbuf,
                               sizeof portbuf);
  dns_req *r;
  int err;
  checkhints(L, arg + 2, arg + 2, &hints);
  if (host == NULL && port == NULL)
    luaL_argerror(L, arg, "host and port cannot both be nil");
  r = newreq(L, loop, loopidx);
  err = uv_getaddrinfo(&loop->uv, &r->u.ai, getaddrinfo_cb, host, port,
                       &hints);
  if (err < 0)
    return failreq(L, r, err, "getaddrinfo");
  listreq(loop, r);
  if (loom__trace != NULL)
    loom__trace_async(loop, "pool", "getaddrinfo", r, 1);
  return 1;
}

/* The same for getnameinfo(addr at arg, flags at arg + 1). */
static int start_getnameinfo (lua_State *L, loom_loop *loop, int loopidx,
                              int arg) {
  struct sockaddr_storage ss;
  int flags, err;
  dns_req *r;
  checkaddr(L, arg, arg, &ss);
  flags = checkflags(L, arg + 1, arg + 1, ni_flags, "flag");
  r = newreq(L, loop, loopidx);
  err = uv_getnameinfo(&loop->uv, &r->u.ni, getnameinfo_cb,
                       (const struct sockaddr *)&ss, flags);
  if (err < 0)
    return failreq(L, r, err, "getnameinfo");
  listreq(loop, r);
  if (loom__trace != NULL)
    loom__trace_async(loop, "pool", "getnameinfo", r, 1);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Lua functions
** =======================================================
*/

/* Continuation: the results of the await, above the future. */
static int await_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return lua_gettop(L) - (int)ctx;
}

/* Awaits the future on top (the running task yields); returns its
** results. */
static int await_top (lua_State *L) {
  int base = lua_gettop(L);
  lua_getfield(L, base, "await");
  lua_pushvalue(L, base);
  lua_callk(L, 1, LUA_MULTRET, base, await_k);
  return await_k(L, LUA_OK, base);
}

/*
** loop:getaddrinfo(host, port, [hints]): resolves inside a task of the
** running loop; returns a list of address tables, raises an OSError.
*/
static int loop_getaddrinfo (lua_State *L) {
  int loopidx = 1;
  loom_loop *loop = checkawait(L, &loopidx, "getaddrinfo");
  lua_settop(L, 4);
  start_getaddrinfo(L, loop, loopidx, 2);
  return await_top(L);
}

/* loop:getnameinfo(addr, [flags]) -> host, service */
static int loop_getnameinfo (lua_State *L) {
  int loopidx = 1;
  loom_loop *loop = checkawait(L, &loopidx, "getnameinfo");
  lua_settop(L, 3);
  start_getnameinfo(L, loop, loopidx, 2);
  return await_top(L);
}

/* getaddrinfo(host, port, [hints]) on the running loop. */
static int core_getaddrinfo (lua_State *L) {
  int loopidx = 0;
  loom_loop *loop;
  lua_settop(L, 3);
  loop = checkawait(L, &loopidx, "getaddrinfo");
  start_getaddrinfo(L, loop, loopidx, 1);
  return await_top(L);
}

/* getnameinfo(addr, [flags]) on the running loop. */
static int core_getnameinfo (lua_State *L) {
  int loopidx = 0;
  loom_loop *loop;
  lua_settop(L, 2);
  loop = checkawait(L, &loopidx, "getnameinfo");
  start_getnameinfo(L, loop, loopidx, 1);
  return await_top(L);
}

/*
** _getaddrinfo(loop, host, port, [hints]) and _getnameinfo(loop, addr,
** [flags]): the request's future, not awaited (no task needed).
*/
static int core_getaddrinfo_future (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "getaddrinfo");
  lua_settop(L, 4);
  return start_getaddrinfo(L, loop, 1, 2);
}

static int core_getnameinfo_future (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "getnameinfo");
  lua_settop(L, 3);
  return start_getnameinfo(L, loop, 1, 2);
}

/* _dns_pending(loop): the number of requests in flight (for the specs). */
static int core_dns_pending (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  dns_state *st = (dns_state *)loop->dns_state;
  lua_Integer n = 0;
  dns_req *r;
  for (r = st ? st->head : NULL; r != NULL; r = r->next)
    n++;
  lua_pushinteger(L, n);
  return 1;
}

/*
** Called by close() and __gc with the loop already marked closed, before
** its final uv_run: asks libuv to drop every pending request, forgets
** their anchors (the table went with the loop's user values) and
** detaches them; their callbacks, run by that uv_run, only free them.
** Futures still pending stay pending, as the loop's other pending
** futures do.
*/
void loom__dns_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  (void)L;
  (void)loopidx;
  dns_state *st = (dns_state *)loop->dns_state;
  dns_req *r, *next;
  if (st == NULL)
    return;
  for (r = st->head; r != NULL; r = next) {
    next = r->next;
    uv_cancel((uv_req_t *)&r->u);
    r->fut_ref = LUA_NOREF;  /* its table went with the loop's */
    r->fut = NULL;
    r->loop = NULL;
    r->prev = r->next = NULL;
  }
  free(st);
  loop->dns_state = NULL;
}

static const luaL_Reg dns_loop_methods[] = {
  {"getaddrinfo", loop_getaddrinfo},
  {"getnameinfo", loop_getnameinfo},
  {NULL, NULL}
};

static const luaL_Reg dns_functions[] = {
  {"getaddrinfo", core_getaddrinfo},
  {"getnameinfo", core_getnameinfo},
  {"_getaddrinfo", core_getaddrinfo_future},
  {"_getnameinfo", core_getnameinfo_future},
  {"_dns_pending", core_dns_pending},
  {NULL, NULL}
};

int loom__open_dns (lua_State *L) {
  loom__loop_methods(L, dns_loop_methods);
  loom__setfuncs(L, dns_functions);  /* into the module table */
  return 0;
}

/* }====================================================== */
