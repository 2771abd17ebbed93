/*
** stream.c
** Stream transports and servers with asyncio's protocol API, over any
** uv_stream_t: reading, writing, flow control, closing, protocol calls,
** accepting. tcp.c and pipe.c make the sockets (TCP, Unix domain) and
** the loop methods that create them.
*/

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream.h"

/*
** Memory and lifetime (STYLE 3, scheme a). A transport userdata (tcp_ud)
** points to a malloc'd conn holding the handle; a server userdata
** (srv_ud) points to malloc'd listeners (lsn), each holding a listening
** handle. While a handle is open, a registry ref anchors its userdata
** (libuv holds a C pointer that leads to it), so callbacks always find
** it. Every close goes through uv_close with a callback that calls
** connection_lost (when the loop runs), clears the userdata's pointer,
** releases the ref and frees the C memory. __gc on an open handle only
** starts that close, with the userdata detached. The handle's data field
** points to a tag, so the shutdown hook can find the handles of this
** file with uv_walk.
**
** Lua is called from libuv callbacks on loop->L, which runs the loop
** inside uv_run, and only under lua_pcall: everything pushed before a
** pcall allocates nothing (light userdata, integers, values already
** anchored), and what allocates (the data string, error values, report
** contexts) is made inside the protected call.
*/

typedef loom_conn conn;
typedef loom_tcp_ud tcp_ud;
typedef loom_lsn lsn;
typedef loom_srv_ud srv_ud;

static const char conn_tag = 0;   /* h.data of a connection */
static const char lsn_tag = 0;    /* h.data of a listener */

#define DEFAULT_HIGH (64 * 1024)
#define READ_BUFSIZE (256 * 1024)  /* as uvloop: a 100 KiB message in one read */

typedef struct wreq {
  uv_write_t req;
  conn *c;
  lua_State *mainL;
  int ref;                  /* the Lua string being written */
  size_t len;
} wreq;

/*
** One read buffer per thread: libuv calls alloc_cb and then read_cb
** before the next alloc_cb, and read_cb copies the bytes into a Lua
** string at once, so one loop running in a thread needs only one. A
** transport with a sink (a StreamReader, see stream.h) whose reader
** still holds bytes reads into the end of the reader's buffer instead;
** into an empty reader, the chunk read here becomes the reader's kept
** string, which a read that takes it all returns as it is.
*/
static _Thread_local char readbuf[READ_BUFSIZE];


/*
** {======================================================
** Helpers
** =======================================================
*/

static lua_State *mainthread (lua_State *L) {
  lua_State *M;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  M = lua_tothread(L, -1);
  lua_pop(L, 1);
  return M;
}

/* The thread running the loop inside uv_run, or NULL when Lua must not
** be called (loop closed or not running). */
static lua_State *usable (loom_loop *loop) {
  return (loop->L != NULL && !loop->closed) ? loop->L : NULL;
}

/* For the hot callbacks (reads, writes) of a running loop: pushes its
** anchors table, then c's transport, and returns the transport's index
** (loom__anchored without the table's removal). [-0, +2, -] */
static int pushconn (lua_State *L, conn *c) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->loop->anchors_ref);
  lua_rawgeti(L, -1, c->ref);
  return lua_gettop(L);
}



/* Calls fut:method(args...) for the future at fidx with the nargs values
** on top. [-nargs, +0, e] */
static void futcall (lua_State *L, int fidx, const char *method, int nargs) {
  fidx = lua_absindex(L, fidx);
  lua_getfield(L, fidx, method);
  lua_insert(L, -nargs - 1);
  lua_pushvalue(L, fidx);
  lua_insert(L, -nargs - 1);
  lua_call(L, nargs + 1, 0);
}

/* }====================================================== */


/*
** {======================================================
** Closing
** =======================================================
*/

/* Server bookkeeping when one of its transports is gone: wakes the
** wait_closed waiters once it is closed and has no transport left.
** [-0, +0, e] */
static void wake_waiters (lua_State *L, int sidx) {
  int i, n;
  sidx = lua_absindex(L, sidx);
  if (lua_getiuservalue(L, sidx, SUV_WAITERS) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  lua_setiuservalue(L, sidx, SUV_WAITERS);
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    loom_future *f;
    lua_rawgeti(L, -1, i);
    f = (loom_future *)lua_touserdata(L, -1);  /* made by wait_closed */
    if (f != NULL && f->state == LOOM_PENDING)
      futcall(L, -1, "set_result", 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* conn_gone(ud): the transport left its server. Runs under pcall. */
static int conn_gone (lua_State *L) {
  srv_ud *su;
  if (lua_getiuservalue(L, 1, TUV_SERVER) != LUA_TUSERDATA)
    return 0;
  su = (srv_ud *)lua_touserdata(L, 2);
  if (lua_getiuservalue(L, 2, SUV_CONNS) == LUA_TTABLE) {
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  su->nconns--;
  if (su->closed && su->nconns == 0)
    wake_waiters(L, 2);
  return 0;
}

static int protocall (lua_State *L, int tidx, const char *name, int nargs);

static int drain_done (lua_State *L) {
  futcall(L, 1, "set_result", 0);
  return 0;
}

/* Completes and releases the drain future (transport:_drained), when
** there is one: the write queue is down to its limit, or the transport
** is gone. L NULL (Lua not usable): only releases it. */
static void drained (lua_State *L, conn *c) {
  int ref = c->drainref;
  if (ref == LUA_NOREF)
    return;
  c->drainref = LUA_NOREF;
  if (L != NULL && lua_checkstack(L, 4)) {
    int top = lua_gettop(L);
    loom_future *f;
    lua_pushcfunction(L, drain_done);
    loom__anchored(L, c->loop, ref);
    f = (loom_future *)lua_touserdata(L, -1);  /* made by _drained */
    if (f != NULL && f->state == LOOM_PENDING)
      lua_pcall(L, 1, 0, 0);
    lua_settop(L, top);
  }
  loom__unanchor(L, c->loop, ref);
}

static void conn_close_cb (uv_handle_t *h) {
  conn *c = (conn *)h;
  lua_State *L = usable(c->loop);
  if (c->ud != NULL && L != NULL && lua_checkstack(L, 10)) {
    int top = lua_gettop(L);
    loom__anchored(L, c->loop, c->ref);  /* top + 1: transport */
    if (c->made) {
      lua_getiuservalue(L, top + 1, TUV_ERR);
      protocall(L, top + 1, "connection_lost", 1);
    }
    lua_pushcfunction(L, conn_gone);
    lua_pushvalue(L, top + 1);
    lua_pcall(L, 1, 0, 0);
    lua_settop(L, top);
  }
  if (c->sending != NULL)
    loom__sendfile_lost(c->sending);
  drained(L, c);
  if (c->ud != NULL)
    c->ud->c = NULL;
  loom__unanchor(L, c->loop, c->futref);
  loom__unanchor(L, c->loop, c->ref);
  free(c);
}

/*
** Starts closing the connection now; connection_lost follows from the
** close callback with the error at erridx (0: nil) of the transport at
** tidx (0: no Lua at hand). Allocates nothing.
*/
static void conn_close (lua_State *L, conn *c, int tidx, int erridx) {
  if (c->closed)
    return;
  c->closed = c->closing = 1;
  if (L != NULL && tidx != 0 && erridx != 0) {
    lua_pushvalue(L, erridx);
    lua_setiuservalue(L, tidx, TUV_ERR);
  }
  if (c->ingetbuf)
    c->defer |= LOOM_DEFER_CLOSE;  /* by read_cb (see getbuffer) */
  else
    uv_close((uv_handle_t *)&c->h, conn_close_cb);
}

/* uv_read_stop, or deferred to read_cb inside get_buffer. */
static void stopread (conn *c) {
  if (c->ingetbuf)
    c->defer |= LOOM_DEFER_STOP;
  else
    uv_read_stop((uv_stream_t *)&c->h);
}

static void lsn_close_cb (uv_handle_t *h) {
  lsn *s = (lsn *)h;
  if (s->ud != NULL)
    s->ud->s[s->idx] = NULL;
  loom__unanchor(usable(s->loop), s->loop, s->ref);
  free(s);
}

/* }====================================================== */


/*
** {======================================================
** Protocol calls
** =======================================================
*/

/*
** callproto(proto, lname, args...): proto[name](proto, args...) with
** name the C string in light userdata lname, returning its first result;
** nil without a call when the method is missing.
*/
static int callproto (lua_State *L) {
  const char *name = (const char *)lua_touserdata(L, 2);
  int n = lua_gettop(L) - 2;
  if (lua_getfield(L, 1, name) == LUA_TNIL)
    return 0;
  lua_replace(L, 2);  /* proto, method, args */
  lua_pushvalue(L, 1);
  lua_copy(L, 2, 1);
  lua_replace(L, 2);  /* method, proto, args */
  lua_call(L, n + 1, 1);
  return 1;
}

/*
** calldata(transport, p, len): proto:data_received(data), data the len
** bytes at light userdata p, made into a string here, under the
** protected call. The hot path of reading: the method is looked up on
** the first data only and kept in the transport (TUV_DATAFN) until the
** protocol changes, as uvloop keeps it.
*/
static int calldata (lua_State *L) {
  const char *p = (const char *)lua_touserdata(L, 2);
  size_t len = (size_t)lua_tointeger(L, 3);
  if (lua_getiuservalue(L, 1, TUV_DATAFN) == LUA_TNIL) {  /* 4 */
    lua_getiuservalue(L, 1, TUV_PROTO);
    if (lua_getfield(L, 5, "data_received") == LUA_TNIL)
      return 0;
    lua_replace(L, 4);
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, 1, TUV_DATAFN);
  }
  else
    lua_getiuservalue(L, 1, TUV_PROTO);
  if (lua_tocfunction(L, 4) == loom__tls_data_received
      && loom__tls_feed(L, 5, p, len))
    return 0;  /* TLS records: no string made */
  lua_pushlstring(L, p, len);
  lua_call(L, 2, 0);
  return 0;
}

/*
** Reports a failed protocol call to the loop's exception handler: with
** (loop, err, transport, proto, lname) at 1..5 and the message at 6; err
** is a loom__traceback table or the error itself. Stream and subprocess
** transports share it.
*/
int loom__protocol_report (lua_State *L) {
  lua_createtable(L, 0, 5);  /* 7 */
  lua_pushvalue(L, 6);
  lua_setfield(L, 7, "message");
  if (lua_istable(L, 2) && !lua_getmetatable(L, 2)) {
    lua_getfield(L, 2, "exception");
    lua_setfield(L, 7, "exception");
    lua_getfield(L, 2, "traceback");
    lua_setfield(L, 7, "traceback");
  }
  else {
    lua_pushvalue(L, 2);
    lua_setfield(L, 7, "exception");
  }
  lua_pushvalue(L, 3);
  lua_setfield(L, 7, "transport");
  lua_pushvalue(L, 4);
  lua_setfield(L, 7, "protocol");
  loom__report(L, 1, 7);
  return 0;
}

/* mkreport(loop, err, transport, proto, lname), under pcall. */
static int mkreport (lua_State *L) {
  lua_settop(L, 5);
  lua_pushfstring(L, "Fatal error: protocol.%s() call failed.",
                  (const char *)lua_touserdata(L, 5));
  return loom__protocol_report(L);
}

/* The error value inside a loom__traceback table, in place. */
static void unwrap (lua_State *L, int idx) {
  if (lua_istable(L, idx) && !lua_getmetatable(L, idx)) {
    lua_getfield(L, idx, "exception");
    lua_replace(L, idx);
  }
  else if (lua_istable(L, idx))
    lua_pop(L, 1);  /* the metatable */
}

/*
** After a protocol method call failed with the loom__traceback table at
** eidx: reports it to the exception handler and aborts the transport at
** tidx, connection_lost getting the error. Leaves the stack at eidx.
*/
static void protofail (lua_State *L, int tidx, int eidx, const char *name) {
  tcp_ud *u;
  lua_pushcfunction(L, mkreport);
  lua_getiuservalue(L, tidx, TUV_LOOP);
  lua_pushvalue(L, eidx);
  lua_pushvalue(L, tidx);
  lua_getiuservalue(L, tidx, TUV_PROTO);
  lua_pushlightuserdata(L, (void *)name);
  lua_pcall(L, 5, 0, 0);
  lua_settop(L, eidx);
  unwrap(L, eidx);
  u = (tcp_ud *)lua_touserdata(L, tidx);
  if (u->c != NULL)
    conn_close(L, u->c, tidx, eidx);
}

/*
** Calls the protocol method name of the transport at tidx with the nargs
** values on top, protected; leaves its first result (nil when missing).
** When it raises, the error goes to the exception handler and the
** transport is aborted, connection_lost getting the error; then it
** leaves nil and returns 0. Allocates nothing outside protected calls.
** [-nargs, +1, -]
*/
static int protocall (lua_State *L, int tidx, const char *name, int nargs) {
  int base;
  tidx = lua_absindex(L, tidx);
  base = lua_gettop(L) - nargs;
  if (!lua_checkstack(L, 8)) {
    lua_settop(L, base);
    lua_pushnil(L);
    return 0;
  }
  lua_pushcfunction(L, loom__traceback);
  lua_insert(L, base + 1);
  lua_pushcfunction(L, callproto);
  lua_insert(L, base + 2);
  lua_getiuservalue(L, tidx, TUV_PROTO);
  lua_insert(L, base + 3);
  lua_pushlightuserdata(L, (void *)name);
  lua_insert(L, base + 4);
  if (lua_pcall(L, nargs + 2, 1, base + 1) == LUA_OK) {
    lua_remove(L, base + 1);
    return 1;
  }
  protofail(L, tidx, base + 2, name);
  lua_settop(L, base);
  lua_pushnil(L);
  return 0;
}

/*
** protocall(L, tidx, "data_received", ...) with the n bytes at p as the
** data, for read_cb (which made room on the stack). [-0, +0, -]
*/
static void protodata (lua_State *L, int tidx, const char *p, size_t n) {
  int base = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, calldata);
  lua_pushvalue(L, tidx);
  lua_pushlightuserdata(L, (void *)p);
  lua_pushinteger(L, (lua_Integer)n);
  if (lua_pcall(L, 3, 0, base + 1) != LUA_OK)
    protofail(L, tidx, base + 2, "data_received");
  lua_settop(L, base);
}

/*
** The n bytes at p go to the transport's sink (p is in the room it gave,
** or in readbuf), as protodata gives them to data_received. [-0, +0, -]
*/
static void sinkdata (lua_State *L, int tidx, const char *p, size_t n) {
  int base = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, loom__sink_fed);
  lua_getiuservalue(L, tidx, TUV_SINK);
  lua_pushinteger(L, (lua_Integer)n);
  if (p == readbuf)
    lua_pushlightuserdata(L, (void *)p);
  else
    lua_pushnil(L);
  if (lua_pcall(L, 3, 0, base + 1) != LUA_OK)
    protofail(L, tidx, base + 2, "data_received");
  lua_settop(L, base);
}

/*
** Keeps whether the protocol of the transport at tidx is buffered: it
** has get_buffer, as asyncio tells a BufferedProtocol by its class. Its
** two methods are looked up here, once per protocol, not per read.
** [-0, +0, e]
*/
static void setbuffered (lua_State *L, int tidx) {
  tcp_ud *u = (tcp_ud *)lua_touserdata(L, tidx);
  int buffered;
  tidx = lua_absindex(L, tidx);
  lua_getiuservalue(L, tidx, TUV_PROTO);
  buffered = lua_getfield(L, -1, "get_buffer") != LUA_TNIL;
  lua_setiuservalue(L, tidx, TUV_GETBUF);
  if (buffered)
    lua_getfield(L, -1, "buffer_updated");
  else
    lua_pushnil(L);
  lua_setiuservalue(L, tidx, TUV_UPDATED);
  lua_pop(L, 1);
  if (u->c != NULL)
    u->c->buffered = (uint8_t)buffered;
}

/*
** getbuf(transport, sizehint): proto:get_buffer(sizehint), which returns
** a Buffer and optionally the position to read to (default 1). Anchors
** the Buffer in the transport (TUV_BUF) and returns the room from that
** position to its end, as light userdata and length. Runs under pcall.
*/
static int getbuf (lua_State *L) {
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, TUV_GETBUF);  /* 3 */
  lua_getiuservalue(L, 1, TUV_PROTO);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 2);                    /* 3, 4 */
  loom__bufroom(L, 3);                  /* 5, 6 */
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, TUV_BUF);
  return 2;
}

/*
** alloc_cb of a buffered protocol: the room get_buffer gives. When the
** call fails (or Lua cannot be called), libuv gets no room and tells
** read_cb UV_ENOBUFS; the error waits in TUV_BUF for read_cb, which
** reports it and aborts the transport. libuv reads (or calls read_cb)
** right after alloc_cb returns, with the read callback it holds: so
** while get_buffer runs, stopping reading and closing (pause_reading,
** close, abort, a failed write) only set c->defer, and the room is then
** none; read_cb does them. So does set_protocol: nothing is read into
** the Buffer of a protocol that is no longer the transport's, and the
** next read (libuv tries again while bytes wait) is the new protocol's,
** in the way it takes data.
*/
static void getbuffer (conn *c, size_t suggested, uv_buf_t *buf) {
  lua_State *L = usable(c->loop);
  int top, r;
  buf->base = NULL;
  buf->len = 0;
  if (L == NULL || c->closed || c->ud == NULL || !lua_checkstack(L, 8))
    return;
  top = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, getbuf);
  loom__anchored(L, c->loop, c->ref);
  lua_pushinteger(L, (lua_Integer)suggested);
  c->ingetbuf = 1;
  r = lua_pcall(L, 2, 2, top + 1);
  c->ingetbuf = 0;
  if (r == LUA_OK) {
    if (!c->defer) {
      buf->base = (char *)lua_touserdata(L, -2);
      buf->len = (size_t)lua_tointeger(L, -1);
      c->inbuf = 1;
    }
    else {  /* no room: the Buffer is let go */
      loom__anchored(L, c->loop, c->ref);
      lua_pushnil(L);
      lua_setiuservalue(L, -2, TUV_BUF);
    }
  }
  else {
    loom__anchored(L, c->loop, c->ref);
    lua_pushvalue(L, top + 2);
    lua_setiuservalue(L, -2, TUV_BUF);
    c->buferr = 1;
  }
  lua_settop(L, top);
}

/* callupdated(transport, n): proto:buffer_updated(n). Under pcall. */
static int callupdated (lua_State *L) {
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, TUV_UPDATED);
  lua_getiuservalue(L, 1, TUV_PROTO);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 0);
  return 0;
}

/*
** n bytes were read into the Buffer get_buffer gave: they go to
** buffer_updated. Then the Buffer is let go. [-0, +0, -]
*/
static void bufdata (lua_State *L, int tidx, size_t n) {
  int base = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, callupdated);
  lua_pushvalue(L, tidx);
  lua_pushinteger(L, (lua_Integer)n);
  if (lua_pcall(L, 2, 0, base + 1) != LUA_OK)
    protofail(L, tidx, base + 2, "buffer_updated");
  lua_settop(L, base);
  lua_pushnil(L);
  lua_setiuservalue(L, tidx, TUV_BUF);
}

/* Flow control: pause_writing once the queue passes high, resume_writing
** once it is down to low. [-0, +0, -] */
static void check_pause (lua_State *L, conn *c, int tidx) {
  if (!c->paused && c->queued > c->high && !c->closed) {
    c->paused = 1;
    protocall(L, tidx, "pause_writing", 0);
    lua_pop(L, 1);
  }
}

static void check_resume (lua_State *L, conn *c, int tidx) {
  if (c->paused && c->queued <= c->low && !c->closed) {
    c->paused = 0;
    protocall(L, tidx, "resume_writing", 0);
    lua_pop(L, 1);
  }
}

/* }====================================================== */


/*
** {======================================================
** Reading
** =======================================================
*/

/*
** A stream reader's bytes wait for its task, which runs after the poll:
** what one poll reads into readers is alive at once, and once that is
** more than a core's cache holds, each chunk is cold again when its task
** copies it out and writes it. So one poll reads at most SINK_BUDGET
** bytes into readers. A reader's transport over the budget gets no room:
** libuv then stops reading it for this poll (read_cb hears UV_ENOBUFS),
** and the next poll, which finds its socket still readable, reads it.
** The first read of a poll always goes ahead, so every transport is read
** in turn. Protocols are not held back: data_received takes the bytes
** at once.
*/
#define SINK_BUDGET (1024 * 1024)

static void alloc_cb (uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  conn *c = (conn *)h;
  if (c->sink != NULL) {
    if (c->loop->sinkread >= SINK_BUDGET) {  /* the only no room a */
      buf->base = NULL;                        /* reader's transport gets */
      buf->len = 0;
      return;
    }
    if (loom__sink_room(c->sink, buf))
      return;
  }
  else if (c->buffered) {
    getbuffer(c, suggested, buf);
    return;
  }
  buf->base = readbuf;
  buf->len = sizeof readbuf;
}

/* on_readerr(ud, err): the OSError of a failed read; then the abort.
** Runs under pcall. */
static int on_readerr (lua_State *L) {
  tcp_ud *u = (tcp_ud *)lua_touserdata(L, 1);
  loom__push_oserror(L, (int)lua_tointeger(L, 2), "read");
  if (u->c != NULL)
    conn_close(L, u->c, 1, 3);
  return 0;
}

static void read_cb (uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  conn *c = (conn *)st;
  lua_State *L = usable(c->loop);
  int top, tidx, inbuf = c->inbuf, buferr = c->buferr, defer = c->defer;
  c->inbuf = c->buferr = c->defer = 0;
  if (nread == UV_ENOBUFS && c->sink != NULL)
    return;  /* over the poll's budget: read at the next poll */
  if (defer & LOOM_DEFER_CLOSE) {  /* asked for inside get_buffer */
    if (buferr && L != NULL && lua_checkstack(L, 10)) {  /* which raised */
      top = lua_gettop(L);
      loom__anchored(L, c->loop, c->ref);  /* top + 1 */
      lua_getiuservalue(L, top + 1, TUV_BUF);
      lua_pushnil(L);
      lua_setiuservalue(L, top + 1, TUV_BUF);
      protofail(L, top + 1, top + 2, "get_buffer");  /* reports it */
      lua_settop(L, top);
    }
    uv_close((uv_handle_t *)st, conn_close_cb);
    return;
  }
  if (defer & LOOM_DEFER_STOP)
    uv_read_stop(st);
  if (defer && nread == UV_ENOBUFS && !buferr)
    return;  /* no room was given: nothing was read */
  if (nread == 0)
    return;
  if (L == NULL || c->closed || !lua_checkstack(L, 10)) {
    if (nread < 0)
      uv_read_stop(st);
    return;
  }
  top = lua_gettop(L);
  tidx = pushconn(L, c);
  if (nread > 0 && inbuf)
    bufdata(L, tidx, (size_t)nread);
  else if (nread > 0 && c->sink != NULL) {
    c->loop->sinkread += (size_t)nread;
    sinkdata(L, tidx, buf->base, (size_t)nread);
  }
  else if (nread > 0)
    protodata(L, tidx, buf->base, (size_t)nread);
  else if (nread == UV_EOF) {
    uv_read_stop(st);
    c->eof_in = 1;
    if (protocall(L, tidx, "eof_received", 0) && !lua_toboolean(L, -1)
        && !c->closing) {
      c->closing = 1;
      if (c->nwrites == 0)
        conn_close(L, c, tidx, 0);
    }
  }
  else if (nread == UV_ENOBUFS && buferr) {  /* get_buffer failed */
    lua_getiuservalue(L, tidx, TUV_BUF);  /* tidx + 1 */
    lua_pushnil(L);
    lua_setiuservalue(L, tidx, TUV_BUF);
    protofail(L, tidx, tidx + 1, "get_buffer");
  }
  else {
    uv_read_stop(st);
    lua_pushcfunction(L, on_readerr);
    lua_pushvalue(L, tidx);
    lua_pushinteger(L, (lua_Integer)nread);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      conn_close(L, c, 0, 0);
  }
  lua_settop(L, top);
}

/* Starts reading when the transport wants it and may. */
static int want_read (conn *c) {
  if (c->reading && c->started && !c->eof_in && !c->closing && !c->closed)
    return uv_read_start((uv_stream_t *)&c->h, alloc_cb, read_cb);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** Writing
** =======================================================
*/

static void write_cb (uv_write_t *req, int status) {
  wreq *w = (wreq *)req;
  conn *c = w->c;
  lua_State *L;
  luaL_unref(w->mainL, LUA_REGISTRYINDEX, w->ref);
  c->queued -= w->len;
  c->nwrites--;
  free(w);
  if (c->closed || (L = usable(c->loop)) == NULL || !lua_checkstack(L, 10))
    return;
  {
    int top = lua_gettop(L), tidx = pushconn(L, c);
    if (status < 0) {
      lua_pushcfunction(L, on_readerr);  /* same shape: OSError, abort */
      lua_pushvalue(L, tidx);
      lua_pushinteger(L, status);
      if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        conn_close(L, c, 0, 0);
    }
    else {
      check_resume(L, c, tidx);
      if (c->queued <= c->drainlimit)
        drained(L, c);
      if (c->nwrites == 0 && c->closing)
        conn_close(L, c, tidx, 0);
    }
    lua_settop(L, top);
  }
}

/* Raises when self is not a transport; returns its conn or NULL. */
tcp_ud *loom__stream_checkt (lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p == NULL || !lua_getmetatable(L, 1)
      || !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, 1, TRANSPORT_MT);
  lua_pop(L, 1);
  return (tcp_ud *)p;
}

/*
** Writes the len bytes at s: uv_try_write first, then the rest queued
** with uv_write, from the string at sidx that holds them, anchored by a
** registry ref until the write callback (no copy); sidx 0 (bytes of a
** Buffer, which the caller may change at once): from a copy of the
** rest. A failed write aborts the transport with its OSError, as
** asyncio's fatal error does. [-0, +0, e]
*/
static void writebytes (lua_State *L, conn *c, const char *s, size_t len,
                        int sidx) {
  size_t off = 0;
  uv_buf_t b;
  wreq *w;
  int r;
  if (len == 0)
    return;
  if (c->nwrites == 0) {
    b = uv_buf_init((char *)s, (unsigned int)len);
    r = uv_try_write((uv_stream_t *)&c->h, &b, 1);
    if (r >= 0) {
      off = (size_t)r;
      if (off == len)
        return;
    }
    else if (r != UV_EAGAIN)
      goto fail;
  }
  if (sidx == 0) {  /* the caller may reuse its bytes: queue a copy */
    lua_pushlstring(L, s + off, len - off);
    sidx = lua_gettop(L);
    s = lua_tostring(L, sidx);
    len -= off;
    off = 0;
    writebytes(L, c, s, len, sidx);  /* nwrites > 0 or EAGAIN: queues */
    lua_pop(L, 1);
    return;
  }
  w = (wreq *)malloc(sizeof *w);
  if (w == NULL)
    luaL_error(L, "write: not enough memory");
  lua_pushvalue(L, sidx);
  w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  w->c = c;
  w->mainL = c->mainL;
  w->len = len - off;
  b = uv_buf_init((char *)s + off, (unsigned int)(len - off));
  r = uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, write_cb);
  if (r < 0) {  /* no callback will come */
    luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
    free(w);
    goto fail;
  }
  c->queued += w->len;
  c->nwrites++;
  check_pause(L, c, 1);
  return;
fail:
  loom__push_oserror(L, r, "write");
  conn_close(L, c, 1, lua_gettop(L));
  lua_pop(L, 1);
}

/*
** Writes the string at sidx: uv_try_write first, then the rest queued
** with uv_write, the string anchored by a registry ref until the write
** callback (no copy). [-0, +0, e]
*/
static void dowrite (lua_State *L, conn *c, int sidx) {
  size_t len;
  const char *s = lua_tolstring(L, sidx, &len);
  writebytes(L, c, s, len, sidx);
}

/* Checks that writing is allowed: the conn, or NULL to ignore the write
** (transport closing or closed, as asyncio). */
static conn *writable (lua_State *L, tcp_ud *u, const char *fname) {
  conn *c = u->c;
  if (c == NULL || c->closing || c->closed)
    return NULL;
  if (c->sending != NULL)
    luaL_error(L, "%s: sendfile is in progress", fname);
  if (c->eof_out)
    luaL_error(L, "%s: cannot write after write_eof()", fname);
  return c;
}

/* transport:write(data) or transport:write(buf [, i [, j]]): a string,
** or the bytes i..j of a Buffer (string.sub's rules) */
static int transport_write (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  loom_buffer *b;
  conn *c;
  if (lua_type(L, 2) == LUA_TSTRING) {  /* the common case, checked first */
    c = writable(L, u, "write");
    if (c != NULL)
      dowrite(L, c, 2);
    return 0;
  }
  if ((b = loom__testbuffer(L, 2)) != NULL) {
    size_t n;
    const char *p = loom__range(L, 3, b->data, b->size, &n);
    c = writable(L, u, "write");
    if (c != NULL)
      writebytes(L, c, p, n, 0);
    return 0;
  }
  return luaL_typeerror(L, 2, "string");  /* as before Buffers */
}

/*
** transport:write(data) for a caller that checked both: the transport u
** at 1 and the string at 2 (streambuf.c's StreamWriter.write).
*/
void loom__stream_write (lua_State *L, tcp_ud *u) {
  conn *c = writable(L, u, "write");
  if (c != NULL)
    dowrite(L, c, 2);
}

/* transport:writelines(list): writes the strings of list as one. */
static int transport_writelines (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  luaL_Buffer b;
  lua_Integer i, n;
  conn *c;
  luaL_checktype(L, 2, LUA_TTABLE);
  n = luaL_len(L, 2);
  lua_settop(L, 2);
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    if (lua_geti(L, 2, i) != LUA_TSTRING)
      luaL_error(L, "bad argument #1 to 'writelines' (item %I is a %s, "
                 "string expected)", i, luaL_typename(L, -1));
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  c = writable(L, u, "writelines");
  if (c != NULL)
    dowrite(L, c, 3);
  return 0;
}

static void shutdown_cb (uv_shutdown_t *req, int status) {
  (void)status;
  free(req);
}

/* transport:write_eof(): closes the write side once queued data is sent
** (libuv's shutdown waits for pending writes). */
static int transport_write_eof (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  conn *c = u->c;
  uv_shutdown_t *req;
  int r;
  if (c == NULL || c->closing || c->closed || c->eof_out)
    return 0;
  if (c->sending != NULL)
    return luaL_error(L, "write_eof: sendfile is in progress");
  req = (uv_shutdown_t *)malloc(sizeof *req);
  if (req == NULL)
    return luaL_error(L, "write_eof: not enough memory");
  c->eof_out = 1;
  r = uv_shutdown(req, (uv_stream_t *)&c->h, shutdown_cb);
  if (r < 0) {
    free(req);
    loom__push_oserror(L, r, "write_eof");
    conn_close(L, c, 1, lua_gettop(L));
  }
  return 0;
}

static int transport_can_write_eof (lua_State *L) {
  loom__stream_checkt(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* transport:set_write_buffer_limits([high [, low]]): asyncio's rules. */
static int transport_set_write_buffer_limits (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_Integer high, low;
  if (lua_isnoneornil(L, 2)) {
    if (lua_isnoneornil(L, 3))
      high = DEFAULT_HIGH;
    else
      high = 4 * luaL_checkinteger(L, 3);
  }
  else
    high = luaL_checkinteger(L, 2);
  low = lua_isnoneornil(L, 3) ? high / 4 : luaL_checkinteger(L, 3);
  if (!(high >= low && low >= 0))
    return luaL_error(L, "set_write_buffer_limits: high (%I) must be >= "
                      "low (%I) must be >= 0", high, low);
  if (u->c != NULL) {
    u->c->high = (size_t)high;
    u->c->low = (size_t)low;
    lua_settop(L, 1);
    check_pause(L, u->c, 1);
    if (u->c != NULL)
      check_resume(L, u->c, 1);
  }
  return 0;
}

/* transport:get_write_buffer_limits() -> low, high */
static int transport_get_write_buffer_limits (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_pushinteger(L, u->c ? (lua_Integer)u->c->low : DEFAULT_HIGH / 4);
  lua_pushinteger(L, u->c ? (lua_Integer)u->c->high : DEFAULT_HIGH);
  return 2;
}

static int transport_get_write_buffer_size (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_pushinteger(L, u->c ? (lua_Integer)u->c->queued : 0);
  return 1;
}

/*
** transport:_drained([limit]): a future completed once the write queue
** holds at most limit bytes (default 0): at once when it does or the
** transport is closed, else from the write or close callback. One waiter
** at a time: a second call completes the first's future (its caller
** looks again). loop:sendfile awaits it.
*/
static int transport_drained (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_Integer limit = luaL_optinteger(L, 2, 0);
  conn *c = u->c;
  luaL_argcheck(L, limit >= 0, 2, "limit must be >= 0");
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, TUV_LOOP);  /* 3 */
  lua_getfield(L, 3, "create_future");
  lua_pushvalue(L, 3);
  lua_call(L, 1, 1);                  /* 4: the future */
  if (c == NULL || c->closed || c->queued <= (size_t)limit) {
    lua_getfield(L, 4, "set_result");
    lua_pushvalue(L, 4);
    lua_call(L, 1, 0);
    return 1;
  }
  drained(L, c);
  c->drainlimit = (size_t)limit;
  lua_pushvalue(L, 4);
  c->drainref = loom__anchor(L, 3);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Transport methods
** =======================================================
*/

/* transport:close(): stops reading, flushes queued writes, then closes;
** connection_lost(nil) follows. Idempotent. */
static int transport_close (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  conn *c = u->c;
  if (c == NULL || c->closing || c->closed)
    return 0;
  c->closing = 1;
  stopread(c);
  if (c->nwrites == 0)
    conn_close(L, c, 1, 0);
  return 0;
}

/* transport:abort(): closes now, dropping queued writes;
** connection_lost(nil) follows. */
static int transport_abort (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  if (u->c != NULL)
    conn_close(L, u->c, 1, 0);
  return 0;
}

static int transport_is_closing (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_pushboolean(L, u->c == NULL || u->c->closing || u->c->closed);
  return 1;
}

static int transport_pause_reading (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  conn *c = u->c;
  if (c != NULL && !c->closing && c->reading) {
    c->reading = 0;
    stopread(c);
  }
  return 0;
}

static int transport_resume_reading (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  conn *c = u->c;
  int r;
  if (c != NULL && !c->closing && !c->reading) {
    c->reading = 1;
    if (c->ingetbuf && (c->defer & LOOM_DEFER_STOP)) {
      c->defer &= ~LOOM_DEFER_STOP;  /* it never stopped */
      return 0;
    }
    r = want_read(c);
    if (r < 0) {
      loom__push_oserror(L, r, "resume_reading");
      conn_close(L, c, 1, lua_gettop(L));
    }
  }
  return 0;
}

static int transport_is_reading (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_pushboolean(L, u->c != NULL && u->c->reading && !u->c->closing);
  return 1;
}

/*
** transport:get_extra_info(name [, default]): "peername" and "sockname"
** (address tables for TCP, paths for Unix sockets), "socket" (a
** loom.TransportSocket); default for anything else or once closed.
*/
static int transport_get_extra_info (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  const char *name = luaL_checkstring(L, 2);
  conn *c = u->c;
  int peer;
  lua_settop(L, 3);
  if (c == NULL || c->closed)
    return 1;
  if (strcmp(name, "socket") == 0) {
    loom__push_transport_socket(L, 1);
    return 1;
  }
  peer = strcmp(name, "peername") == 0;
  if (!peer && strcmp(name, "sockname") != 0)
    return 1;
  if (c->kind == LOOM_SOCK_UNIX ? loom__pipe_name(L, &c->h.pipe, peer)
                                : loom__tcp_name(L, &c->h.tcp, peer))
    return 1;
  lua_pushvalue(L, 3);
  return 1;
}

static int transport_get_protocol (lua_State *L) {
  loom__stream_checkt(L);
  lua_getiuservalue(L, 1, TUV_PROTO);
  return 1;
}

static int transport_set_protocol (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  loom__checkprotocol(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, TUV_PROTO);
  if (u->c != NULL) {                   /* the new protocol gets the data */
    u->c->sink = NULL;
    if (u->c->ingetbuf)
      u->c->defer |= LOOM_DEFER_SWITCH;   /* see getbuffer */
  }
  lua_pushnil(L);
  lua_setiuservalue(L, 1, TUV_SINK);
  lua_pushnil(L);                       /* its data_received, on next data */
  lua_setiuservalue(L, 1, TUV_DATAFN);
  setbuffered(L, 1);
  return 0;
}

static int transport_get_loop (lua_State *L) {
  loom__stream_checkt(L);
  lua_getiuservalue(L, 1, TUV_LOOP);
  return 1;
}

/* __gc: an open transport only starts its close, detached from Lua. */
static int transport_gc (lua_State *L) {
  tcp_ud *u = (tcp_ud *)lua_touserdata(L, 1);
  conn *c = u->c;
  if (c != NULL) {
    c->ud = NULL;
    u->c = NULL;
    if (!c->closed) {
      c->closed = 1;
      uv_close((uv_handle_t *)&c->h, conn_close_cb);
    }
  }
  return 0;
}

static int transport_tostring (lua_State *L) {
  tcp_ud *u = loom__stream_checkt(L);
  lua_pushfstring(L, "%s (%s) %p", TRANSPORT_MT,
                  u->c == NULL ? "closed" : u->c->closing ? "closing"
                  : "open", (void *)u);
  return 1;
}

/*
** Makes a transport of the loop at loopidx in the closed state, then its
** conn with an initialised handle of the kind; pushes it. Raises on
** failure, leaving nothing __gc cannot handle. [-0, +1, e]
*/
static conn *newtransport (lua_State *L, loom_loop *loop, int loopidx,
                           int kind) {
  tcp_ud *u;
  conn *c;
  int r;
  loopidx = lua_absindex(L, loopidx);
  u = (tcp_ud *)lua_newuserdatauv(L, sizeof(tcp_ud), TUV_COUNT);
  u->c = NULL;
  luaL_setmetatable(L, TRANSPORT_MT);
  lua_pushvalue(L, loopidx);
  lua_setiuservalue(L, -2, TUV_LOOP);
  c = (conn *)malloc(sizeof *c);
  if (c == NULL)
    luaL_error(L, "not enough memory");
  memset(c, 0, sizeof *c);
  r = kind == LOOM_SOCK_UNIX ? uv_pipe_init(&loop->uv, &c->h.pipe, 0)
                             : uv_tcp_init(&loop->uv, &c->h.tcp);
  if (r < 0) {
    free(c);
    loom__push_oserror(L, r, kind == LOOM_SOCK_UNIX ? "pipe" : "tcp");
    lua_error(L);
  }
  if (kind == LOOM_SOCK_UNIX)
    c->h.pipe.data = (void *)&conn_tag;
  else
    c->h.tcp.data = (void *)&conn_tag;
  c->kind = (uint8_t)kind;
  c->loop = loop;
  c->mainL = mainthread(L);
  c->ud = u;
  c->ref = c->futref = c->drainref = LUA_NOREF;
  c->high = DEFAULT_HIGH;
  c->low = DEFAULT_HIGH / 4;
  c->reading = 1;
  u->c = c;
  return c;
}

/*
** A transport around a new uv_pipe_t (no IPC) that nothing has opened
** yet, for a child's stdio pipe: uv_spawn (process.c) opens it, or
** uv_pipe_open does. Pushes the transport, pinned like a connecting one,
** with no protocol; transport:abort() discards it when the spawn fails.
** [-0, +1, e]
*/
conn *loom__stream_newpipe (lua_State *L, loom_loop *loop, int loopidx) {
  conn *c;
  loopidx = lua_absindex(L, loopidx);
  c = newtransport(L, loop, loopidx, LOOM_SOCK_UNIX);
  lua_pushvalue(L, -1);
  c->ref = loom__anchor(L, loopidx);
  return c;
}

/*
** Once the child runs: gives the pipe transport at tidx the protocol on
** top (popped), calls its connection_made and starts reading. A failure
** to read closes the transport with its OSError. [-1, +0, e]
*/
void loom__stream_pipe_start (lua_State *L, conn *c, int tidx) {
  int r;
  tidx = lua_absindex(L, tidx);
  lua_setiuservalue(L, tidx, TUV_PROTO);
  c->made = 1;
  c->started = 1;
  lua_pushvalue(L, tidx);
  protocall(L, tidx, "connection_made", 1);
  lua_pop(L, 1);
  r = ((tcp_ud *)lua_touserdata(L, tidx))->c != NULL ? want_read(c) : 0;
  if (r < 0) {
    loom__push_oserror(L, r, "read");
    conn_close(L, c, tidx, lua_gettop(L));
    lua_pop(L, 1);
  }
}

/* }====================================================== */


/*
** {======================================================
** create_connection
** =======================================================
*/

/*
** on_connect(transport, status): completes create_connection's future.
** Runs under pcall inside uv_run. The future was cancelled: the
** transport is aborted. Connection failed: the future gets the OSError.
** Else protocol = factory(), connection_made(transport), the future gets
** (transport, protocol) and reading starts.
*/
static int on_connect (lua_State *L) {
  tcp_ud *u = (tcp_ud *)lua_touserdata(L, 1);
  int status = (int)lua_tointeger(L, 2);
  conn *c = u->c;
  loom_future *f;
  int r;
  loom__anchored(L, c->loop, c->futref);  /* 3: future */
  f = (loom_future *)lua_touserdata(L, 3);  /* made by create_connection */
  if (f == NULL || f->state != LOOM_PENDING) {
    conn_close(L, c, 1, 0);
    return 0;
  }
  if (status < 0) {
    loom__push_oserror(L, status, "connect");
    conn_close(L, c, 1, 0);
    futcall(L, 3, "set_exception", 1);
    return 0;
  }
  if (c->kind == LOOM_SOCK_TCP)
    uv_tcp_nodelay(&c->h.tcp, 1);  /* as asyncio does for every TCP
                                      transport */
  lua_pushcfunction(L, loom__traceback);  /* 4 */
  lua_getiuservalue(L, 1, TUV_PROTO);     /* the factory */
  if (lua_pcall(L, 0, 1, 4) != LUA_OK) {
    unwrap(L, 5);
    conn_close(L, c, 1, 0);
    futcall(L, 3, "set_exception", 1);
    return 0;
  }
  lua_setiuservalue(L, 1, TUV_PROTO);
  setbuffered(L, 1);
  c->made = 1;
  c->started = 1;
  lua_pushvalue(L, 1);
  protocall(L, 1, "connection_made", 1);
  lua_pop(L, 1);
  r = u->c != NULL ? want_read(c) : 0;
  if (r < 0) {
    loom__push_oserror(L, r, "read");
    conn_close(L, c, 1, lua_gettop(L));
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 1);
  lua_getiuservalue(L, 1, TUV_PROTO);
  futcall(L, 3, "set_result", 2);
  return 0;
}

/* The connect of c ended with status: on_connect, protected, on L (the
** loop's thread, or a task's when the connect completed at once). */
void loom__stream_connected (lua_State *L, conn *c, int status) {
  if (status != UV_ECANCELED && !c->closed && L != NULL
      && lua_checkstack(L, 10)) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, on_connect);
    loom__anchored(L, c->loop, c->ref);
    lua_pushinteger(L, status);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
      conn_close(L, c, 0, 0);
    lua_settop(L, top);
  }
  loom__unanchor(L, c->loop, c->futref);
  c->futref = LUA_NOREF;
}

void loom__stream_connect_cb (uv_connect_t *req, int status) {
  conn *c = (conn *)req->data;
  loom__stream_connected(usable(c->loop), c, status);
}

/* Continuation: the results of the await, above the future. */
static int await_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  return lua_gettop(L) - (int)ctx;
}

void loom__stream_checkcallable (lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL)
      luaL_typeerror(L, idx, "function");
    lua_pop(L, 1);
  }
}

/* opts at idx: nil, or a table whose keys are all in keys. */
void loom__stream_checkopts (lua_State *L, int idx,
                             const char *const keys[]) {
  if (!lua_isnoneornil(L, idx)) {
    luaL_checktype(L, idx, LUA_TTABLE);
    loom__checkkeys(L, idx, idx, NULL, keys);
  }
}

/* Whether opts (at idx, checked) holds a timeout; raises unless it is a
** number >= 0. */
int loom__stream_hastimeout (lua_State *L, int idx) {
  lua_Number t;
  int isnum, has = 0;
  if (!lua_istable(L, idx))
    return 0;
  if (lua_getfield(L, idx, "timeout") != LUA_TNIL) {
    t = lua_tonumberx(L, -1, &isnum);
    if (lua_type(L, -1) != LUA_TNUMBER || !isnum || !(t >= 0))
      luaL_argerror(L, idx, "timeout must be a number >= 0");
    has = 1;
  }
  lua_pop(L, 1);
  return has;
}

/* Whether opts (at idx, checked) asks for TLS: ssl, server_hostname or
** a TLS timeout is set. The loop methods then call the private methods
** of lua/loom/tls.lua, which put a TLS layer between the plain transport
** and the protocol. */
int loom__stream_hasssl (lua_State *L, int idx) {
  static const char *const keys[] = {"ssl", "server_hostname",
    "ssl_handshake_timeout", "ssl_shutdown_timeout", NULL};
  int i, has = 0;
  if (!lua_istable(L, idx))
    return 0;
  for (i = 0; keys[i] != NULL && !has; i++) {
    has = lua_getfield(L, idx, keys[i]) != LUA_TNIL;
    lua_pop(L, 1);
  }
  return has;
}

/* Whether L runs a task of loop (which can await). */
int loom__stream_intask (lua_State *L, loom_loop *loop) {
  return loom__running() == loop && loop->current != NULL
         && loop->current->co == L;
}

/*
** Calls loop:method(factory, host, port, opts), a private loop method of
** lua/loom/streams.lua (resolving a host name and calling back with
** numeric addresses, or applying a timeout), and returns its results.
** Awaits.
*/
/* Continuation of loom__stream_byname: the results, or the error. An
** argument error of the Lua method (raised without a position, as it
** cannot tell how deep it is called) gets the position of the line that
** called the loop method. */
static int byname_k (lua_State *L, int status, lua_KContext ctx) {
  if (status != LUA_OK && status != LUA_YIELD) {
    if (lua_type(L, -1) == LUA_TSTRING
        && strncmp(lua_tostring(L, -1), "bad argument #", 14) == 0) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return lua_gettop(L) - (int)ctx;
}

int loom__stream_byname (lua_State *L, const char *method) {
  lua_settop(L, 5);
  if (lua_getfield(L, 1, method) == LUA_TNIL)
    return luaL_error(L, "loop:%s needs loom.streams (require \"loom\")",
                      method);
  lua_insert(L, 1);
  return byname_k(L, lua_pcallk(L, 5, LUA_MULTRET, 0, 0, byname_k), 0);
}

/* Checks that the running task of the loop at 1 can await. */
loom_loop *loom__stream_checktask (lua_State *L, const char *fname) {
  loom_loop *loop = loom__checkopen(L, 1, fname);
  if (loom__running() != loop || loop->current == NULL)
    luaL_error(L, "%s: not inside a task of this event loop", fname);
  if (loop->current->co != L)
    luaL_error(L, "%s: called from a coroutine that is not a task "
               "(a plain coroutine inside a task cannot await)", fname);
  return loop;
}



/*
** Makes the transport (at 6) and create_connection's future (at 7) for a
** connection from the loop at 1 with the factory at 2. [-0, +2, e]
*/
conn *loom__stream_begin_connect (lua_State *L, loom_loop *loop,
                                  int kind) {
  conn *c;
  lua_settop(L, 5);
  c = newtransport(L, loop, 1, kind);  /* 6 */
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 6, TUV_PROTO);
  loom__future_new(L, loop, 1);          /* 7 */
  lua_pushvalue(L, 7);
  c->futref = loom__anchor(L, 1);
  lua_pushvalue(L, 6);
  c->ref = loom__anchor(L, 1);
  c->creq.data = c;
  return c;
}

/*
** After the connect call returned r: raises when it failed synchronously
** (no callback will come: the transport closes without Lua calls), else
** awaits the future at 7.
*/
int loom__stream_finish_connect (lua_State *L, conn *c, int r) {
  if (r < 0) {
    loom__unanchor(L, c->loop, c->futref);
    c->futref = LUA_NOREF;
    conn_close(L, c, 0, 0);
    loom__push_oserror(L, r, "connect");
    return lua_error(L);
  }
  lua_getfield(L, 7, "await");
  lua_pushvalue(L, 7);
  lua_callk(L, 1, LUA_MULTRET, 7, await_k);
  return await_k(L, LUA_OK, 7);
}



/* }====================================================== */


/*
** {======================================================
** Servers
** =======================================================
*/

/* on_accept(server, status, listener): accepts one connection and gives
** it a protocol. Runs under pcall inside uv_run. */
static int on_accept (lua_State *L) {
  srv_ud *su = (srv_ud *)lua_touserdata(L, 1);
  int status = (int)lua_tointeger(L, 2);
  lsn *s = (lsn *)lua_touserdata(L, 3);
  conn *c;
  int r;
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, SUV_LOOP);  /* 3 */
  if (status < 0 || su->closed) {
    if (status < 0) {
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "Error on accepting a connection");
      lua_setfield(L, -2, "message");
      loom__push_oserror(L, status, "accept");
      lua_setfield(L, -2, "exception");
      lua_pushvalue(L, 1);
      lua_setfield(L, -2, "server");
      loom__report(L, 3, -1);
    }
    return 0;
  }
  c = newtransport(L, (loom_loop *)lua_touserdata(L, 3), 3,
                   su->kind);  /* 4 */
  r = uv_accept((uv_stream_t *)&s->h, (uv_stream_t *)&c->h);
  if (r < 0) {
    conn_close(L, c, 0, 0);
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "Error on accepting a connection");
    lua_setfield(L, -2, "message");
    loom__push_oserror(L, r, "accept");
    lua_setfield(L, -2, "exception");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "server");
    loom__report(L, 3, -1);
    return 0;
  }
  if (c->kind == LOOM_SOCK_TCP)
    uv_tcp_nodelay(&c->h.tcp, 1);  /* as asyncio does for every TCP
                                      transport */
  lua_pushvalue(L, 4);
  c->ref = loom__anchor(L, 3);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 4, TUV_SERVER);
  su->nconns++;
  if (lua_getiuservalue(L, 1, SUV_CONNS) == LUA_TTABLE) {
    lua_pushvalue(L, 4);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, loom__traceback);  /* 5 */
  lua_getiuservalue(L, 1, SUV_FACTORY);
  if (lua_pcall(L, 0, 1, 5) != LUA_OK) {
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "Error in protocol_factory of a server");
    lua_setfield(L, -2, "message");
    unwrap(L, 6);
    lua_pushvalue(L, 6);
    lua_setfield(L, -2, "exception");
    lua_pushvalue(L, 4);
    lua_setfield(L, -2, "transport");
    conn_close(L, c, 4, 6);
    loom__report(L, 3, -1);
    return 0;
  }
  lua_setiuservalue(L, 4, TUV_PROTO);
  setbuffered(L, 4);
  c->made = 1;
  c->started = 1;
  lua_pushvalue(L, 4);
  protocall(L, 4, "connection_made", 1);
  r = ((tcp_ud *)lua_touserdata(L, 4))->c != NULL ? want_read(c) : 0;
  if (r < 0) {
    loom__push_oserror(L, r, "read");
    conn_close(L, c, 4, lua_gettop(L));
  }
  return 0;
}

static void connection_cb (uv_stream_t *st, int status) {
  lsn *s = (lsn *)st;
  lua_State *L = usable(s->loop);
  if (L == NULL || s->ud == NULL || !lua_checkstack(L, 10))
    return;
  {
    int top = lua_gettop(L);
    lua_pushcfunction(L, on_accept);
    loom__anchored(L, s->loop, s->ref);
    lua_pushinteger(L, status);
    lua_pushlightuserdata(L, s);
    lua_pcall(L, 3, 0, 0);
    lua_settop(L, top);
  }
}

static srv_ud *checks (lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p == NULL || !lua_getmetatable(L, 1)
      || !lua_rawequal(L, -1, lua_upvalueindex(1)))
    luaL_typeerror(L, 1, SERVER_MT);
  lua_pop(L, 1);
  return (srv_ud *)p;
}

/* Closes every listener of the server. */
void loom__stream_stop (srv_ud *su) {
  int i;
  su->closed = 1;
  su->serving = 0;
  for (i = 0; i < su->nlsn; i++) {
    lsn *s = su->s[i];
    if (s != NULL && !uv_is_closing((uv_handle_t *)&s->h))
      uv_close((uv_handle_t *)&s->h, lsn_close_cb);
  }
}

/* Reads opts.backlog (opts at oidx) into *backlog. */
void loom__stream_checkbacklog (lua_State *L, int oidx, int *backlog) {
  lua_Integer b;
  int isint;
  if (!lua_istable(L, oidx))
    return;
  if (lua_getfield(L, oidx, "backlog") != LUA_TNIL) {
    b = lua_tointegerx(L, -1, &isint);
    if (!isint || b < 1 || b > 65535)
      luaL_argerror(L, oidx, "backlog must be an integer in 1..65535");
    *backlog = (int)b;
  }
  lua_pop(L, 1);
}

/*
** Makes a server userdata of the loop at 1 with the factory at 2, in the
** closed state (no listener yet); pushes it. [-0, +1, m]
*/
srv_ud *loom__stream_newserver (lua_State *L, int kind) {
  srv_ud *su = (srv_ud *)lua_newuserdatauv(L, sizeof(srv_ud), SUV_COUNT);
  memset(su, 0, sizeof *su);
  su->closed = 1;
  su->kind = (uint8_t)kind;
  su->backlog = 100;
  luaL_setmetatable(L, SERVER_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, SUV_FACTORY);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, SUV_LOOP);
  lua_newtable(L);
  lua_setiuservalue(L, -2, SUV_CONNS);
  return su;
}

/*
** Adds a listener to the server su (userdata at sidx), its handle of the
** server's kind bound by bind(L, listener, addr, flags). Returns 0 or a
** libuv error; a failed listener is closed. Raises only on memory
** errors.
*/
int loom__stream_addlistener (lua_State *L, loom_loop *loop, srv_ud *su,
                              int sidx, loom_bindfn bind, const void *addr,
                              int flags) {
  lsn *s;
  int r;
  if (su->nlsn >= LOOM_MAXLSN)
    return UV_ENOBUFS;
  s = (lsn *)malloc(sizeof *s);
  if (s == NULL)
    return luaL_error(L, "create_server: not enough memory");
  memset(s, 0, sizeof *s);
  r = su->kind == LOOM_SOCK_UNIX ? uv_pipe_init(&loop->uv, &s->h.pipe, 0)
                                 : uv_tcp_init(&loop->uv, &s->h.tcp);
  if (r < 0) {
    free(s);
    return r;
  }
  if (su->kind == LOOM_SOCK_UNIX)
    s->h.pipe.data = (void *)&lsn_tag;
  else
    s->h.tcp.data = (void *)&lsn_tag;
  s->loop = loop;
  s->ud = su;
  s->idx = su->nlsn;
  lua_getiuservalue(L, sidx, SUV_LOOP);
  lua_pushvalue(L, sidx);
  s->ref = loom__anchor(L, -2);
  lua_pop(L, 1);
  su->s[su->nlsn++] = s;
  r = bind(L, s, addr, flags);
  if (r < 0)
    uv_close((uv_handle_t *)&s->h, lsn_close_cb);
  return r;
}

/*
** Starts listening on every listener of the server su (userdata at
** sidx), unless it already does. On failure the server is closed and
** the OSError raised. [-0, +0, e]
*/
int loom__stream_listen (lua_State *L, srv_ud *su, int sidx,
                         const char *fname) {
  int i, r = 0;
  if (su->serving || su->closed)
    return 0;
  for (i = 0; i < su->nlsn && r == 0; i++)
    if (su->s[i] != NULL)
      r = uv_listen((uv_stream_t *)&su->s[i]->h, su->backlog,
                    connection_cb);
  if (r < 0) {
    loom__stream_stop(su);
    if (su->nconns == 0)
      wake_waiters(L, sidx);
    loom__push_oserror(L, r, fname);
    return lua_error(L);
  }
  su->serving = 1;
  return 0;
}

/* Completes serve_forever's future, if any, when the server closes. */
static void end_forever (lua_State *L, int sidx) {
  if (lua_getiuservalue(L, sidx, SUV_FOREVER) != LUA_TNIL) {
    lua_getfield(L, -1, "done");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    if (!lua_toboolean(L, -1))
      futcall(L, -2, "set_result", 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* server:close(): stops listening; open transports stay open. */
static int server_close (lua_State *L) {
  srv_ud *su = checks(L);
  if (su->closed)
    return 0;
  lua_settop(L, 1);
  loom__stream_stop(su);
  if (su->nconns == 0)
    wake_waiters(L, 1);
  end_forever(L, 1);
  return 0;
}

/* Calls method of each transport of the server. */
static int eachconn (lua_State *L, const char *method) {
  checks(L);
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, SUV_CONNS) != LUA_TTABLE)
    return 0;
  lua_newtable(L);  /* 3: a copy, as closing edits the set */
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, 3, (lua_Integer)lua_rawlen(L, 3) + 1);
  }
  {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, 3);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, 3, i);
      lua_getfield(L, -1, method);
      lua_insert(L, -2);
      lua_call(L, 1, 0);
    }
  }
  return 0;
}

static int server_close_clients (lua_State *L) {
  return eachconn(L, "close");
}

static int server_abort_clients (lua_State *L) {
  return eachconn(L, "abort");
}

/* server:wait_closed(): awaits (inside a task) until the server is
** closed and every transport it accepted is closed. */
static int server_wait_closed (lua_State *L) {
  srv_ud *su = checks(L);
  loom_loop *loop, *run = loom__running();
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, SUV_LOOP);  /* 2 */
  loop = (loom_loop *)lua_touserdata(L, 2);
  if ((su->closed && su->nconns == 0) || loop->closed)
    return 0;
  if (run != loop || loop->current == NULL || loop->current->co != L)
    return luaL_error(L, "wait_closed: not inside a task of this event "
                      "loop");
  lua_getfield(L, 2, "create_future");
  lua_pushvalue(L, 2);
  lua_call(L, 1, 1);  /* 3: the future */
  if (lua_getiuservalue(L, 1, SUV_WAITERS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, SUV_WAITERS);
  }
  lua_pushvalue(L, 3);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
  lua_getfield(L, 3, "await");
  lua_pushvalue(L, 3);
  lua_callk(L, 1, 0, 3, await_k);
  return 0;
}

/* server:start_serving(): starts accepting (after create_server with
** start_serving = false). No-op when serving; raises once closed. */
static int server_start_serving (lua_State *L) {
  srv_ud *su = checks(L);
  if (su->closed)
    return luaL_error(L, "start_serving: the server is closed");
  lua_settop(L, 1);
  loom__stream_listen(L, su, 1, "start_serving");
  return 0;
}

/* server:_forever(fut): the future that close() completes, for
** serve_forever in lua/loom/streams.lua; nil clears it. Returns the one
** it replaces. */
static int server_forever (lua_State *L) {
  checks(L);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, SUV_FOREVER);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, SUV_FOREVER);
  return 1;
}

static int server_is_serving (lua_State *L) {
  srv_ud *su = checks(L);
  lua_pushboolean(L, su->serving && !su->closed);
  return 1;
}

/* server:sockets(): list of the address tables it listens on (the path
** of a Unix server); empty once closed. */
static int server_sockets (lua_State *L) {
  srv_ud *su = checks(L);
  int i, k = 0;
  lua_newtable(L);
  for (i = 0; i < su->nlsn && !su->closed; i++) {
    lsn *s = su->s[i];
    if (s == NULL)
      continue;
    if (su->kind == LOOM_SOCK_UNIX ? loom__pipe_server_name(L, su)
                                   : loom__tcp_name(L, &s->h.tcp, 0))
      lua_rawseti(L, -2, ++k);
  }
  return 1;
}

static int server_get_loop (lua_State *L) {
  checks(L);
  lua_getiuservalue(L, 1, SUV_LOOP);
  return 1;
}

static int server_gc (lua_State *L) {
  srv_ud *su = (srv_ud *)lua_touserdata(L, 1);
  int i;
  loom__stream_stop(su);
  for (i = 0; i < su->nlsn; i++) {
    if (su->s[i] != NULL) {
      su->s[i]->ud = NULL;
      su->s[i] = NULL;
    }
  }
  return 0;
}

static int server_tostring (lua_State *L) {
  srv_ud *su = checks(L);
  lua_pushfstring(L, "%s (%s) %p", SERVER_MT,
                  su->closed ? "closed"
                  : su->serving ? "serving" : "not serving", (void *)su);
  return 1;
}

/* }====================================================== */


static const luaL_Reg transport_methods[] = {
  {"write", transport_write},
  {"writelines", transport_writelines},
  {"write_eof", transport_write_eof},
  {"can_write_eof", transport_can_write_eof},
  {"close", transport_close},
  {"abort", transport_abort},
  {"is_closing", transport_is_closing},
  {"pause_reading", transport_pause_reading},
  {"resume_reading", transport_resume_reading},
  {"is_reading", transport_is_reading},
  {"get_extra_info", transport_get_extra_info},
  {"set_write_buffer_limits", transport_set_write_buffer_limits},
  {"get_write_buffer_limits", transport_get_write_buffer_limits},
  {"get_write_buffer_size", transport_get_write_buffer_size},
  {"_drained", transport_drained},
  {"get_protocol", transport_get_protocol},
  {"set_protocol", transport_set_protocol},
  {"get_loop", transport_get_loop},
  {NULL, NULL}
};

static const luaL_Reg transport_metamethods[] = {
  {"__gc", transport_gc},
  {"__close", transport_close},
  {"__tostring", transport_tostring},
  {NULL, NULL}
};

static const luaL_Reg server_methods[] = {
  {"close", server_close},
  {"close_clients", server_close_clients},
  {"abort_clients", server_abort_clients},
  {"wait_closed", server_wait_closed},
  {"start_serving", server_start_serving},
  {"is_serving", server_is_serving},
  {"sockets", server_sockets},
  {"get_loop", server_get_loop},
  {"_forever", server_forever},
  {NULL, NULL}
};

static const luaL_Reg server_metamethods[] = {
  {"__gc", server_gc},
  {"__close", server_close},
  {"__tostring", server_tostring},
  {NULL, NULL}
};

static void shutdown_walk (uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h))
    return;
  if (h->data == &conn_tag) {
    conn *c = (conn *)h;
    c->closed = c->closing = 1;
    uv_close(h, conn_close_cb);
  }
  else if (h->data == &lsn_tag) {
    lsn *s = (lsn *)h;
    if (s->ud != NULL) {
      s->ud->closed = 1;
      s->ud->serving = 0;
    }
    uv_close(h, lsn_close_cb);
  }
}

/*
** Closes every transport and server of the loop without calling Lua: the
** close callbacks, run by the loop's last uv_run while it is marked
** closed, release the refs and free the memory.
*/
void loom__stream_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  (void)loopidx;
  (void)L;
  uv_walk(&loop->uv, shutdown_walk, NULL);
}

/* Makes metatable name with methods and metamethods, each function
** getting the metatable as upvalue 1. */
static void newclass (lua_State *L, const char *name, const luaL_Reg *m,
                      const luaL_Reg *mm) {
  luaL_newmetatable(L, name);
  lua_pushvalue(L, -1);
  luaL_setfuncs(L, mm, 1);
  lua_newtable(L);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, m, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

/* Adds the methods l to transports, each with the transport metatable
** as upvalue 1 (for loom__stream_checkt). */
void loom__stream_methods (lua_State *L, const luaL_Reg *l) {
  luaL_getmetatable(L, TRANSPORT_MT);
  lua_getfield(L, -1, "__index");
  lua_insert(L, -2);
  luaL_setfuncs(L, l, 1);
  lua_pop(L, 1);
}

int loom__open_stream (lua_State *L) {
  newclass(L, TRANSPORT_MT, transport_methods, transport_metamethods);
  newclass(L, SERVER_MT, server_methods, server_metamethods);
  return 0;
}
