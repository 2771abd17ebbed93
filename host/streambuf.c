/*
** streambuf.c
** StreamReader: the read side of a stream, one growable byte buffer in C
** with asyncio's read, readexactly, readuntil and readline rules.
*/

#include <stdlib.h>
#include <string.h>

#include "stream.h"

#define STREAM_DEFAULT_LIMIT ((lua_Integer)64 * 1024)
#define BUF_KEEP ((size_t)16 * 1024)     /* an empty buffer up to this stays */
#define SINK_ROOM ((size_t)256 * 1024)   /* room for a transport's read */

/*
** Everything but lines() is C: feed_data, feed_eof and set_exception, the
** reads, and their waiting. A read first tries to answer from the buffer
** (a try consumes nothing unless it succeeds, so a read cancelled while
** it waits leaves the buffer as it was); when it cannot, it suspends its
** task on the reader's waiter future (loom__await_yield) and tries again
** in its continuation. feed_data, feed_eof and set_exception complete the
** waiter. The private _try_* methods give the tries to Lua as they are.
** At the end of the file, the hot methods of lua/loom/streams.lua's
** StreamWriter, which need the reader's state.
**
** Memory. The buffer is malloc'd and owned by the userdata; __gc frees
** it. Live bytes are buf[start .. start+len). Consuming bytes only moves
** start; the dead prefix is reclaimed lazily, when an append would not
** fit: the live bytes move to the front when that frees at least half of
** the buffer, else the buffer doubles. Each byte is thus moved O(1) times
** on average and appends are amortised O(1). A buffer that empties is
** released unless it is small (BUF_KEEP), so an idle reader holds none.
**
** The sink. A transport of stream.c whose protocol is a
** StreamReaderProtocol feeds the reader without a Lua call
** (loom__sink_room, loom__sink_fed). Into an empty reader the chunk,
** read into the transports' shared buffer, becomes the kept string (see
** below); while bytes wait, the transport reads straight into the end of
** the buffer. A server's read buffers thus stay few and hot in the
** cache: a buffer of its own per connection cost cache misses and page
** faults by the megabyte with a hundred clients.
**
** The kept string. Other feeders hand chunks over as Lua strings, and
** most chunks are read whole before the next one comes. So feed_data
** into an empty buffer copies nothing: it keeps the string itself (user
** value SR_UV_KEPT) and the live bytes are kept[start .. start+len); a
** read that takes all of it returns that same string, again without a
** copy. Only a second chunk arriving while bytes of the first are left
** moves the rest into the malloc'd buffer; a partial read copies just
** what it returns. Lua strings do not move, so the pointer stays valid
** while the user value anchors the string.
**
** Lua side (STYLE 4). User values of the userdata: the waiter future (or
** nil), the stored exception (or nil), the transport (or nil) and the
** kept string (or nil). A read is waiting while the waiter is pending;
** a done one stays, and the next wait rearms it when it was made here
** (loom__future_rearm): the reader never hands it out, so one future
** serves every wait of a connection.
*/
enum { SR_UV_WAITER = 1, SR_UV_EXC, SR_UV_TRANSPORT, SR_UV_KEPT,
       SR_UV_COUNT = SR_UV_KEPT };

typedef struct streamreader {
  char *buf;                /* malloc'd, or NULL */
  const char *kept;         /* the bytes of the kept string, or NULL */
  size_t start;             /* first live byte (in kept when kept) */
  size_t len;               /* live bytes */
  size_t cap;               /* bytes allocated in buf */
  lua_Integer limit;        /* asyncio's limit */
  lua_Integer consumed;     /* bytes consumed since creation: anchors the
                               scan offsets readuntil hands back */
  uint8_t eof;              /* feed_eof was called */
  uint8_t paused;           /* we called transport:pause_reading() */
  uint8_t hasexc;           /* set_exception was called */
  uint8_t ownwaiter;        /* the waiter was made here: it can be rearmed */
  uint8_t wpaused, wlost;   /* the protocol's write flow (_write_flow) */
  loom_tcp_ud *tud;         /* the transport, when one of stream.c (anchored
                               by its user value) */
} streamreader;

/* The reads: what a waiting read resumes as (its continuation's
** context). */
enum { OP_READ, OP_READALL, OP_READEXACTLY, OP_READUNTIL, OP_READLINE };

static const char *const opnames[] = {
  "read", "read", "readexactly", "readuntil", "readline"
};

/* Registry key of the core's await function. */
static const char await_key = 'a';

/* The one name the rest of the core sees (see internal.h). */
int loom__open_streambuf(lua_State *L);


/*
** {======================================================
** Helpers
** =======================================================
*/

static streamreader *checkreader (lua_State *L) {
  return (streamreader *)loom__checkud(L, 1, LOOM_TSTREAMREADER);
}

/* The reader at 1 for the read method fname; the error names it. */
static streamreader *checkself (lua_State *L, const char *fname) {
  streamreader *s = (streamreader *)loom__testud(L, 1, LOOM_TSTREAMREADER);
  if (s == NULL) {
    const char *tname = luaL_getmetafield(L, 1, "__name") == LUA_TSTRING
                        ? lua_tostring(L, -1) : luaL_typename(L, 1);
    luaL_error(L, "bad argument #1 to '%s' (" LOOM_STREAMREADER_MT
               " expected, got %s)", fname, tname);
  }
  return s;
}

/* The first live byte; never NULL, even before the first allocation. */
static const char empty[1] = "";

static const char *data (const streamreader *s) {
  if (s->kept != NULL)
    return s->kept + s->start;
  return s->buf != NULL ? s->buf + s->start : empty;
}

/* Lets go of the kept string (its bytes are consumed or moved). */
static void dropkept (lua_State *L, streamreader *s) {
  s->kept = NULL;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, SR_UV_KEPT);
}

/*
** Emptied buffers of SINK_ROOM bytes, a few per thread, for the next reads
** of transports into readers: a server's reads and its takes alternate,
** so this saves a malloc and a free per chunk.
*/
#define NSPARE 8
static _Thread_local char *spares[NSPARE];
static _Thread_local int nspare;

/* A new block of cap bytes, a spare one when it fits. */
static char *newbuf (size_t cap) {
  if (cap == SINK_ROOM && nspare > 0)
    return spares[--nspare];
  return (char *)malloc(cap);
}

/* Frees buf, a block of cap bytes, or keeps it as a spare one. */
static void freebuf (char *buf, size_t cap) {
  if (cap == SINK_ROOM && nspare < NSPARE)
    spares[nspare++] = buf;
  else
    free(buf);
}

/*
** Makes room for n more bytes after the live ones in buf, moving the live
** bytes of a kept string there (the caller lets go of the string). 0,
** with nothing changed, when malloc fails. No Lua: alloc_cb calls it.
*/
static int makeroom (streamreader *s, size_t n) {
  size_t need = s->len + n, ncap;
  char *nb;
  if (s->kept == NULL) {
    if (s->start + need <= s->cap)
      return 1;
    if (need <= s->cap / 2 || (need <= s->cap && s->start >= s->len)) {
      memmove(s->buf, data(s), s->len);   /* compact in place */
      s->start = 0;
      return 1;
    }
  }
  else if (need <= s->cap) {            /* buf holds no live byte */
    memcpy(s->buf, data(s), s->len);
    s->start = 0;
    s->kept = NULL;
    return 1;
  }
  ncap = s->cap < 256 ? 256 : s->cap;
  while (ncap < need)
    ncap *= 2;
  nb = newbuf(ncap);
  if (nb == NULL)
    return 0;
  if (s->len > 0)
    memcpy(nb, data(s), s->len);
  freebuf(s->buf, s->cap);
  s->buf = nb;
  s->start = 0;
  s->cap = ncap;
  s->kept = NULL;
  return 1;
}

/*
** makeroom for the reader at 1, letting go of its kept string. Raises a
** memory error (leaving the reader as it was) when malloc fails.
*/
static void reserve (lua_State *L, streamreader *s, size_t n) {
  int waskept = s->kept != NULL;
  if (n > (size_t)-1 / 2 - s->len)
    luaL_error(L, "feed_data: buffer too large");
  if (!makeroom(s, n)) {
    lua_pushliteral(L, "not enough memory");
    lua_error(L);
  }
  if (waskept) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, SR_UV_KEPT);
  }
}

/* Drops the first n live bytes of the reader at 1. */
static void consume (lua_State *L, streamreader *s, size_t n) {
  s->len -= n;
  s->consumed += (lua_Integer)n;
  if (s->len == 0) {
    s->start = 0;
    if (s->kept != NULL)
      dropkept(L, s);
    /* an emptied buffer that is not small goes back to the system: an
    ** idle connection holds no read buffer */
    else if (s->cap > BUF_KEEP) {
      freebuf(s->buf, s->cap);
      s->buf = NULL;
      s->cap = 0;
    }
  }
  else
    s->start += n;
}

/*
** Calls transport:<method>() for the reader at index 1. Errors from the
** transport propagate to the caller. [-0, +0, e]
*/
static void calltransport (lua_State *L, const char *method) {
  lua_getiuservalue(L, 1, SR_UV_TRANSPORT);
  lua_getfield(L, -1, method);
  lua_insert(L, -2);
  lua_call(L, 1, 0);
}

/* asyncio's _maybe_resume_transport. [-0, +0, e] */
static void maybe_resume (lua_State *L, streamreader *s) {
  if (s->paused && s->len <= (size_t)s->limit) {
    s->paused = 0;
    calltransport(L, "resume_reading");
  }
}

/*
** Pushes the first n live bytes as a string and drops them: the kept
** string itself when that is all of it. [-0, +1, m]
*/
static void pushtake (lua_State *L, streamreader *s, size_t n) {
  if (s->kept != NULL && s->start == 0 && n == s->len)
    lua_getiuservalue(L, 1, SR_UV_KEPT);
  else
    lua_pushlstring(L, data(s), n);
  consume(L, s, n);
}

/* pushtake, then resumes the transport if the buffer fell to the limit.
** [-0, +1, e] */
static int take (lua_State *L, streamreader *s, size_t n) {
  pushtake(L, s, n);
  maybe_resume(L, s);
  return 1;
}

/*
** Completes the waiting read's future, if any, with no result (excidx 0)
** or with the error at excidx. [-0, +0, e]
*/
static void wakeup (lua_State *L, int excidx) {
  loom_future *f;
  lua_getiuservalue(L, 1, SR_UV_WAITER);
  f = (loom_future *)lua_touserdata(L, -1);  /* only futures go there */
  if (f == NULL || f->state != LOOM_PENDING) {  /* none, or cancelled */
    lua_pop(L, 1);
    return;
  }
  if (excidx == 0 && f->h.kind == LOOM_KFUTURE) {
    /* set_result() on a plain pending future, whose value slot is nil */
    f->nres = 0;
    f->state = LOOM_FINISHED;
    loom__future_schedule(L, f, -1);
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, excidx ? "set_exception" : "set_result");
  lua_insert(L, -2);
  if (excidx)
    lua_pushvalue(L, excidx);
  lua_call(L, excidx ? 2 : 1, 0);
}

/* Raises the stored exception, if there is one. */
static void checkexc (lua_State *L, streamreader *s) {
  if (s->hasexc) {
    lua_getiuservalue(L, 1, SR_UV_EXC);
    lua_error(L);
  }
}

/*
** Pushes cls(msg, {field1 = ..., field2 = ...}): the two field values are
** on top of the stack (nil f2name: one field). Falls back on the string
** "cls: msg" before loom.errors is loaded. [-nf, +1, m]
*/
static void pusherror (lua_State *L, const char *cls, const char *msg,
                       const char *f1name, const char *f2name) {
  int nf = f2name ? 2 : 1;
  int base = lua_gettop(L) - nf;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  if (!lua_istable(L, -1) || lua_getfield(L, -1, cls) == LUA_TNIL) {
    lua_settop(L, base);
    lua_pushfstring(L, "%s: %s", cls, msg);
    return;
  }
  lua_remove(L, -2);                  /* the class */
  lua_pushstring(L, msg);
  lua_createtable(L, 0, nf);
  lua_pushvalue(L, base + 1);
  lua_setfield(L, -2, f1name);
  if (f2name) {
    lua_pushvalue(L, base + 2);
    lua_setfield(L, -2, f2name);
  }
  lua_call(L, 2, 1);
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
}

/*
** Raises IncompleteReadError with the whole buffer as .partial (which it
** clears) and .expected (expected < 0: nil, as asyncio's None).
*/
static int incomplete (lua_State *L, streamreader *s, lua_Integer expected) {
  size_t n = s->len;
  pushtake(L, s, n);
  if (expected >= 0) {
    lua_pushinteger(L, expected);
    lua_pushfstring(L, "%I bytes read on a total of %I expected bytes",
                    (lua_Integer)n, expected);
  }
  else {
    lua_pushnil(L);
    lua_pushfstring(L, "%I bytes read on a total of undefined expected "
                    "bytes", (lua_Integer)n);
  }
  {
    const char *msg = lua_tostring(L, -1);
    lua_insert(L, -3);                /* msg below partial, expected */
    pusherror(L, "IncompleteReadError", msg, "partial", "expected");
  }
  return lua_error(L);
}

/* Raises LimitOverrunError(msg, {consumed = consumed}). */
static int overrun (lua_State *L, const char *msg, lua_Integer consumed) {
  lua_pushinteger(L, consumed);
  pusherror(L, "LimitOverrunError", msg, "consumed", NULL);
  return lua_error(L);
}

/* Argument i of a method (self excluded): an integer >= min. */
static lua_Integer checksize (lua_State *L, int i, const char *fname,
                              lua_Integer min) {
  int isint;
  lua_Integer n = lua_tointegerx(L, i + 1, &isint);
  if (!isint)
    return luaL_error(L, "bad argument #%d to '%s' (integer expected, "
                      "got %s)", i, fname,
                      lua_type(L, i + 1) == LUA_TNUMBER ? "non-integer number"
                      : luaL_typename(L, i + 1));
  if (n < min)
    return luaL_error(L, "bad argument #%d to '%s' (size must be %s, got "
                      "%I)", i, fname, min < 0 ? "-1 or non-negative"
                      : "non-negative", n);
  return n;
}

/* Argument i of a method (self excluded): a string. */
static const char *checkbytes (lua_State *L, int i, const char *fname,
                               size_t *len) {
  if (lua_type(L, i + 1) != LUA_TSTRING)   /* numbers are not data */
    luaL_error(L, "bad argument #%d to '%s' (string expected, got %s)", i,
               fname, luaL_typename(L, i + 1));
  return lua_tolstring(L, i + 1, len);
}

/* A separator argument (at i + 1): a non-empty string. */
static const char *checksep (lua_State *L, int i, size_t *seplen) {
  const char *sep = checkbytes(L, i, "readuntil", seplen);
  if (*seplen == 0)
    luaL_error(L, "bad argument #%d to 'readuntil' (separator should be "
               "at least one-byte string)", i);
  return sep;
}

/* }====================================================== */


/*
** {======================================================
** Feeding
** =======================================================
*/

/*
** _StreamReader([limit]): a new empty reader. Built with no buffer, so a
** memory error later leaves something __gc can free.
*/
static int core_streamreader (lua_State *L) {
  lua_Integer limit = STREAM_DEFAULT_LIMIT;
  streamreader *s;
  if (!lua_isnoneornil(L, 1)) {
    int isint;
    limit = lua_tointegerx(L, 1, &isint);
    if (!isint || lua_type(L, 1) != LUA_TNUMBER)
      return luaL_error(L, "bad argument #1 to 'StreamReader' (limit must "
                        "be an integer, got %s)", luaL_typename(L, 1));
    if (limit <= 0)
      return luaL_error(L, "bad argument #1 to 'StreamReader' (limit must "
                        "be positive, got %I)", limit);
  }
  s = (streamreader *)lua_newuserdatauv(L, sizeof(streamreader), SR_UV_COUNT);
  memset(s, 0, sizeof *s);
  s->limit = limit;
  loom__setmt(L, LOOM_TSTREAMREADER);
  return 1;
}

/*
** feed_data(data): appends data and wakes the waiter; past twice the
** limit, pauses the transport (asyncio: "feed_data after feed_eof" is an
** assertion; here an error). Into an empty buffer, data is kept as it is.
*/
static int streamreader_feed_data (lua_State *L) {
  streamreader *s = checkreader(L);
  size_t n;
  const char *p = checkbytes(L, 1, "feed_data", &n);
  if (s->eof)
    return luaL_error(L, "feed_data: called after feed_eof");
  if (n == 0)
    return 0;
  if (s->len == 0) {
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, SR_UV_KEPT);
    s->kept = p;
    s->start = 0;
    s->len = n;
  }
  else {
    reserve(L, s, n);
    memcpy(s->buf + s->start + s->len, p, n);
    s->len += n;
  }
  wakeup(L, 0);
  if (!s->paused && s->len > 2 * (size_t)s->limit
      && lua_getiuservalue(L, 1, SR_UV_TRANSPORT) != LUA_TNIL) {
    lua_pop(L, 1);
    s->paused = 1;
    calltransport(L, "pause_reading");
  }
  return 0;
}

/*
** _protocol_data_received(proto, data): the data_received of
** lua/loom/streams.lua's StreamReaderProtocol, proto._reader:feed_data(
** data) without a Lua frame on the hot path of reading.
*/
static int core_protocol_data_received (lua_State *L) {
  lua_settop(L, 2);
  lua_getfield(L, 1, "_reader");
  lua_replace(L, 1);
  return streamreader_feed_data(L);
}

/*
** The transport's sink (see stream.h): room for its next read at the end
** of the buffer, unless a kept string is there (its bytes must move, which
** needs Lua) or EOF was fed (the data will be an error).
*/
int loom__sink_room (void *sink, uv_buf_t *buf) {
  streamreader *s = (streamreader *)sink;
  if (s->len == 0 || s->kept != NULL || s->eof || !makeroom(s, SINK_ROOM))
    return 0;
  buf->base = s->buf + s->start + s->len;
  buf->len = s->cap - s->start - s->len;
  return 1;
}

/* sink_fed(reader, n [, p]): see stream.h. */
int loom__sink_fed (lua_State *L) {
  streamreader *s = (streamreader *)lua_touserdata(L, 1);
  size_t n = (size_t)lua_tointeger(L, 2);
  if (s->eof)
    return luaL_error(L, "feed_data: called after feed_eof");
  if (lua_islightuserdata(L, 3)) {      /* read elsewhere: copy */
    const char *p = (const char *)lua_touserdata(L, 3);
    if (s->len == 0) {                  /* as feed_data: keep the string */
      s->kept = lua_pushlstring(L, p, n);
      lua_setiuservalue(L, 1, SR_UV_KEPT);
      s->start = 0;
    }
    else {
      reserve(L, s, n);
      memcpy(s->buf + s->start + s->len, p, n);
    }
  }
  s->len += n;
  wakeup(L, 0);
  if (!s->paused && s->len > 2 * (size_t)s->limit
      && lua_getiuservalue(L, 1, SR_UV_TRANSPORT) != LUA_TNIL) {
    lua_pop(L, 1);
    s->paused = 1;
    calltransport(L, "pause_reading");
  }
  return 0;
}

/*
** _stream_sink(transport, reader): makes reader, whose transport it is,
** the sink of a transport of stream.c, for the StreamReaderProtocol whose
** data_received would only feed it; returns whether it did.
*/
static int core_stream_sink (lua_State *L) {
  loom_tcp_ud *u = (loom_tcp_ud *)luaL_testudata(L, 1, TRANSPORT_MT);
  streamreader *s = (streamreader *)loom__testud(L, 2, LOOM_TSTREAMREADER);
  lua_settop(L, 2);
  if (u == NULL || u->c == NULL || s == NULL || s->tud != u) {
    lua_pushboolean(L, 0);
    return 1;
  }
  u->c->sink = s;
  lua_setiuservalue(L, 1, TUV_SINK);
  lua_pushboolean(L, 1);
  return 1;
}

static int streamreader_feed_eof (lua_State *L) {
  streamreader *s = checkreader(L);
  s->eof = 1;
  wakeup(L, 0);
  return 0;
}

/* at_eof(): true when feed_eof was called and the buffer is empty. */
static int streamreader_at_eof (lua_State *L) {
  streamreader *s = checkreader(L);
  lua_pushboolean(L, s->eof && s->len == 0);
  return 1;
}

/*
** set_exception(e): stores e, which every later read raises, and fails
** the waiter with it.
*/
static int streamreader_set_exception (lua_State *L) {
  streamreader *s = checkreader(L);
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "bad argument #1 to 'set_exception' (error value "
                      "expected, got %s)", luaL_typename(L, 2));
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, SR_UV_EXC);
  s->hasexc = 1;
  wakeup(L, 2);
  return 0;
}

static int streamreader_exception (lua_State *L) {
  checkreader(L);
  lua_getiuservalue(L, 1, SR_UV_EXC);
  return 1;
}

/*
** set_transport(t): the transport to pause and resume; t needs
** pause_reading and resume_reading methods. Set once, as in asyncio.
*/
static int streamreader_set_transport (lua_State *L) {
  streamreader *s = checkreader(L);
  if (lua_type(L, 2) != LUA_TTABLE && lua_type(L, 2) != LUA_TUSERDATA)
    return luaL_error(L, "bad argument #1 to 'set_transport' (transport "
                      "expected, got %s)", luaL_typename(L, 2));
  if (lua_getiuservalue(L, 1, SR_UV_TRANSPORT) != LUA_TNIL)
    return luaL_error(L, "set_transport: transport already set");
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, SR_UV_TRANSPORT);
  s->tud = (loom_tcp_ud *)luaL_testudata(L, 2, TRANSPORT_MT);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** Tries: push the result and return 1, return 0 when the buffer cannot
** answer yet, or raise
** =======================================================
*/

/*
** n > 0: up to n bytes, "" at EOF; n == 0: ""; n == -1: everything once
** EOF is reached.
*/
static int tryread (lua_State *L, streamreader *s, lua_Integer n) {
  checkexc(L, s);
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  if (n < 0) {
    if (!s->eof)
      return 0;
    return take(L, s, s->len);
  }
  if (s->len == 0) {
    if (!s->eof)
      return 0;
    lua_pushliteral(L, "");
    return 1;
  }
  return take(L, s, (size_t)n < s->len ? (size_t)n : s->len);
}

/* Exactly n bytes; at EOF with fewer, raises IncompleteReadError (and the
** buffer is emptied into .partial). */
static int tryexactly (lua_State *L, streamreader *s, lua_Integer n) {
  checkexc(L, s);
  if (n == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  if ((lua_Unsigned)n <= (lua_Unsigned)s->len)
    return take(L, s, (size_t)n);
  if (s->eof)
    return incomplete(L, s, n);
  return 0;
}

/* First occurrence of sep in p[0..n), or NULL. */
static const char *findsep (const char *p, size_t n, const char *sep,
                            size_t seplen) {
  if (seplen == 1)
    return (const char *)memchr(p, (unsigned char)sep[0], n);
  return (const char *)memmem(p, n, sep, seplen);
}

/*
** The data up to and including sep, searched from the scan position *pos
** (an absolute position, as a previous try left it; 0: from the start).
** When the separator is not there yet, *pos is where the next try
** resumes, so that bytes already searched are not searched again. Raises
** LimitOverrunError and IncompleteReadError as asyncio does.
*/
static int tryuntil (lua_State *L, streamreader *s, const char *sep,
                     size_t seplen, lua_Integer *pos) {
  size_t offset = 0;
  lua_Integer rel = *pos - s->consumed;   /* bytes consumed since: rescan */
  checkexc(L, s);
  if (rel > 0)
    offset = (lua_Unsigned)rel > s->len ? s->len : (size_t)rel;
  if (s->len >= offset + seplen) {
    const char *p = findsep(data(s) + offset, s->len - offset, sep, seplen);
    if (p != NULL) {
      lua_Integer isep = (lua_Integer)(p - data(s));
      if (isep > s->limit)
        return overrun(L, "Separator is found, but chunk is longer than "
                       "limit", isep);
      return take(L, s, (size_t)isep + seplen);
    }
    offset = s->len + 1 - seplen;
    if (offset > (size_t)s->limit)
      return overrun(L, "Separator is not found, and chunk exceed the "
                     "limit", (lua_Integer)offset);
  }
  if (s->eof)
    return incomplete(L, s, -1);
  *pos = s->consumed + (lua_Integer)offset;
  return 0;
}

/*
** readuntil("\n") with asyncio's readline rules: at EOF the partial line
** (maybe ""); past the limit, the line (or the whole buffer, when no
** newline is in it) is dropped and a plain error raised. *pos as for
** tryuntil.
*/
static int tryline (lua_State *L, streamreader *s, lua_Integer *pos) {
  lua_Integer rel = *pos - s->consumed;
  size_t offset = 0, len = s->len;
  checkexc(L, s);
  if (rel > 0)
    offset = (lua_Unsigned)rel > len ? len : (size_t)rel;
  if (len > offset) {
    const char *p = (const char *)memchr(data(s) + offset, '\n',
                                         len - offset);
    if (p != NULL) {
      size_t isep = (size_t)(p - data(s));
      if (isep > (size_t)s->limit) {
        consume(L, s, isep + 1);              /* drop through the newline */
        maybe_resume(L, s);
        return luaL_error(L, "readline: Separator is found, but chunk is "
                          "longer than limit");
      }
      return take(L, s, isep + 1);
    }
    offset = len;
    if (offset > (size_t)s->limit) {
      consume(L, s, len);                     /* no newline: drop it all */
      maybe_resume(L, s);
      return luaL_error(L, "readline: Separator is not found, and chunk "
                        "exceed the limit");
    }
  }
  if (s->eof)
    return take(L, s, len);                   /* the partial line */
  *pos = s->consumed + (lua_Integer)offset;
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** Reads that wait
** =======================================================
*/

/*
** The stack of a read while it runs, from its entry to each of its
** continuations:
**   read        self, n (an integer)
**   read()      self, nil, blocks (a table of the blocks read so far)
**   readexactly self, n (an integer)
**   readuntil   self, sep, scan position
**   readline    self, scan position
*/
static int readop (lua_State *L, int op);

/* The stack height of each read while it runs (see above). */
static const int oparity[] = {2, 3, 2, 3, 2};

static int readop_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  /* the waiter is above the read's values: raises when it was cancelled
  ** (or the task was) or failed */
  loom__await_resumed(L, oparity[ctx] + 1);
  lua_settop(L, oparity[ctx]);
  return readop(L, (int)ctx);
}

/* Whether the waiter at the top (nil or a future) is pending. */
static int waiting (lua_State *L) {
  loom_future *f = (loom_future *)lua_touserdata(L, -1);
  return f != NULL && f->state == LOOM_PENDING;
}

/*
** Awaits the next feed_data, feed_eof or set_exception, then goes on with
** the read op in its continuation. Raises when another read waits already
** or when no loop runs; outside a task, await raises (and no waiter is
** left behind). A paused transport is resumed first: the buffer is full,
** yet the reader needs more.
*/
/*
** Names the reader's waiter (at fidx) for task_tree: "data on <the
** transport>", when loom.introspect is loaded. Once per reader: the
** waiter is kept and re-armed. [-0, +0, e]
*/
static void label_waiter (lua_State *L, int fidx) {
  int top = lua_gettop(L);
  fidx = lua_absindex(L, fidx);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE
      && lua_getfield(L, -1, "loom.introspect") == LUA_TTABLE
      && lua_getfield(L, -1, "_label") == LUA_TFUNCTION) {
    lua_pushvalue(L, fidx);
    if (lua_getiuservalue(L, 1, SR_UV_TRANSPORT) != LUA_TNIL) {
      const char *t = luaL_tolstring(L, -1, NULL);
      lua_pushfstring(L, "data on %s", t);
      lua_replace(L, -3);
      lua_pop(L, 1);
    }
    else {
      lua_pop(L, 1);
      lua_pushliteral(L, "data on a StreamReader");
    }
    lua_call(L, 2, 0);
  }
  lua_settop(L, top);
}

static int waitfor (lua_State *L, streamreader *s, int op) {
  const char *fname = opnames[op];
  loom_loop *loop = loom__running();
  loom_future *f;
  int intask;
  if (loop == NULL || loop->self_ref == LUA_NOREF)
    return luaL_error(L, "%s: no running event loop", fname);
  lua_getiuservalue(L, 1, SR_UV_WAITER);
  if (waiting(L))
    return luaL_error(L, "%s: called while another coroutine is already "
                      "waiting for incoming data", fname);
  if (s->eof)
    return luaL_error(L, "%s: waiting for data after EOF", fname);
  intask = loop->current != NULL && loop->current->co == L;
  if (intask && s->paused) {
    s->paused = 0;
    calltransport(L, "resume_reading");
  }
  f = (loom_future *)lua_touserdata(L, -1);
  if (!intask) {        /* await raises the error for where we are */
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
    loom__future_new(L, loop, -1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &await_key);
    lua_insert(L, -2);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return readop(L, op);
  }
  if (!s->ownwaiter || f == NULL || f->loop != loop
      || !loom__future_rearm(L, f, -1)) {
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
    loom__future_new(L, loop, -1);
    lua_remove(L, -2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, SR_UV_WAITER);
    s->ownwaiter = 1;
    label_waiter(L, -1);
  }
  return loom__await_yield(L, -1, op, readop_k);
}

/* read() and read(-1): blocks of limit bytes until EOF, joined. */
static int readall (lua_State *L, streamreader *s) {
  lua_Integer i, n;
  luaL_Buffer b;
  for (;;) {
    if (!tryread(L, s, s->limit))
      return waitfor(L, s, OP_READALL);
    if (lua_rawlen(L, -1) == 0)
      break;
    lua_rawseti(L, 3, (lua_Integer)lua_rawlen(L, 3) + 1);
  }
  lua_pop(L, 1);
  n = (lua_Integer)lua_rawlen(L, 3);
  if (n == 1) {                   /* one block: no copy */
    lua_rawgeti(L, 3, 1);
    return 1;
  }
  luaL_buffinit(L, &b);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 3, i);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

static int readop (lua_State *L, int op) {
  streamreader *s = (streamreader *)lua_touserdata(L, 1);
  switch (op) {
    case OP_READ:
      if (tryread(L, s, lua_tointeger(L, 2)))
        return 1;
      break;
    case OP_READALL:
      return readall(L, s);
    case OP_READEXACTLY:
      if (tryexactly(L, s, lua_tointeger(L, 2)))
        return 1;
      break;
    case OP_READUNTIL: {
      size_t seplen;
      const char *sep = lua_tolstring(L, 2, &seplen);
      lua_Integer pos = lua_tointeger(L, 3);
      if (tryuntil(L, s, sep, seplen, &pos))
        return 1;
      lua_pushinteger(L, pos);
      lua_replace(L, 3);
      break;
    }
    default: {  /* OP_READLINE */
      lua_Integer pos = lua_tointeger(L, 2);
      if (tryline(L, s, &pos))
        return 1;
      lua_pushinteger(L, pos);
      lua_replace(L, 2);
      break;
    }
  }
  return waitfor(L, s, op);
}

/*
** read([n]): n > 0: up to n bytes, as soon as any are buffered; "" at
** EOF. n = -1 or none: everything until EOF, read in blocks of limit
** bytes as asyncio does, so that a paused transport is resumed.
*/
static int streamreader_read (lua_State *L) {
  streamreader *s = checkself(L, "read");
  int isint;
  if (lua_gettop(L) != 2)
    lua_settop(L, 2);
  else if (lua_tointegerx(L, 2, &isint) > 0 && isint
           && lua_type(L, 2) == LUA_TNUMBER)
    return readop(L, OP_READ);          /* read(n), n > 0: the usual case */
  if (lua_isnil(L, 2) || (lua_type(L, 2) == LUA_TNUMBER
                          && lua_tonumber(L, 2) == -1)) {
    checkexc(L, s);
    lua_pushnil(L);
    lua_replace(L, 2);
    lua_newtable(L);
    return readall(L, s);
  }
  lua_pushinteger(L, checksize(L, 1, "read", -1));
  lua_replace(L, 2);
  return readop(L, OP_READ);
}

/* readexactly(n): exactly n bytes; IncompleteReadError at EOF. */
static int streamreader_readexactly (lua_State *L) {
  checkself(L, "readexactly");
  lua_settop(L, 2);
  lua_pushinteger(L, checksize(L, 1, "readexactly", 0));
  lua_replace(L, 2);
  return readop(L, OP_READEXACTLY);
}

/* readuntil([sep]): the data up to and including sep ("\n" by default). */
static int streamreader_readuntil (lua_State *L) {
  size_t seplen;
  checkself(L, "readuntil");
  lua_settop(L, 2);
  if (lua_isnil(L, 2)) {
    lua_pushliteral(L, "\n");
    lua_replace(L, 2);
  }
  checksep(L, 1, &seplen);
  lua_pushinteger(L, 0);
  return readop(L, OP_READUNTIL);
}

/* readline(): a line with its "\n"; at EOF the last partial line, then "". */
static int streamreader_readline (lua_State *L) {
  checkself(L, "readline");
  lua_settop(L, 1);
  lua_pushinteger(L, 0);
  return readop(L, OP_READLINE);
}

/* }====================================================== */


/*
** {======================================================
** The tries and the waiter, for Lua
** =======================================================
*/

/*
** _set_waiter(fut, fname): makes fut the waiter that the next feed wakes.
** Raises when another read is waiting already. A paused transport is
** resumed first.
*/
static int streamreader_set_waiter (lua_State *L) {
  streamreader *s = checkreader(L);
  const char *fname = luaL_optstring(L, 3, "read");
  loom__checkfuture(L, 2);
  lua_getiuservalue(L, 1, SR_UV_WAITER);
  if (waiting(L))
    return luaL_error(L, "%s: called while another coroutine is already "
                      "waiting for incoming data", fname);
  if (s->eof)
    return luaL_error(L, "%s: waiting for data after EOF", fname);
  if (s->paused) {
    s->paused = 0;
    calltransport(L, "resume_reading");
  }
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, SR_UV_WAITER);
  s->ownwaiter = 0;
  return 0;
}

/* _clear_waiter(fut): forgets the waiter if it is still fut. */
static int streamreader_clear_waiter (lua_State *L) {
  checkreader(L);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, SR_UV_WAITER);
  if (lua_rawequal(L, 2, 3)) {
    lua_pushnil(L);
    lua_setiuservalue(L, 1, SR_UV_WAITER);
  }
  return 0;
}

/* _limit(): the limit. */
static int streamreader_limit (lua_State *L) {
  lua_pushinteger(L, checkreader(L)->limit);
  return 1;
}

/* _try_read(n): tryread; nil when the buffer cannot answer yet. */
static int streamreader_try_read (lua_State *L) {
  streamreader *s = checkreader(L);
  return tryread(L, s, checksize(L, 1, "read", -1));
}

/* _try_readexactly(n) */
static int streamreader_try_readexactly (lua_State *L) {
  streamreader *s = checkreader(L);
  return tryexactly(L, s, checksize(L, 1, "readexactly", 0));
}

/*
** _try_readuntil(sep [, pos]): the data up to and including sep; or nil
** and a scan position to pass back on the next try.
*/
static int streamreader_try_readuntil (lua_State *L) {
  streamreader *s = checkreader(L);
  size_t seplen;
  const char *sep = checksep(L, 1, &seplen);
  lua_Integer pos = luaL_optinteger(L, 3, 0);
  if (tryuntil(L, s, sep, seplen, &pos))
    return 1;
  lua_pushnil(L);
  lua_pushinteger(L, pos);
  return 2;
}

/* _try_readline([pos]): as _try_readuntil("\n"), with readline's rules. */
static int streamreader_try_readline (lua_State *L) {
  streamreader *s = checkreader(L);
  lua_Integer pos = luaL_optinteger(L, 2, 0);
  if (tryline(L, s, &pos))
    return 1;
  lua_pushnil(L);
  lua_pushinteger(L, pos);
  return 2;
}

/* }====================================================== */


/*
** {======================================================
** StreamWriter's write and drain
** =======================================================
*/

/*
** lua/loom/streams.lua's StreamWriter is a Lua table. Its write and
** drain run for every chunk of an echo or a pipeline, so a writer whose
** reader is a StreamReader over a transport of stream.c gets them as C
** closures bound to its reader (_writer_bind): write goes straight to
** the transport, and drain answers from the reader's exception, the
** transport's state and the protocol's write flow (paused, lost), which
** the protocol copies into the reader (_write_flow). A data that is
** neither a string nor a Buffer raises here, so that the message names
** the caller's line. Anything else (a bad self, a Buffer, a drain that
** must wait or raise) calls the Lua method. The binding holds the transport the
** writer was made with: writer.transport is read-only, as asyncio's
** property is. Upvalues: the writer, its reader, the Lua method.
*/
enum { B_WRITER = 1, B_READER, B_LUA, B_NUPVALUES = B_LUA };

/* Continuation of bound_lua. An error message the Lua method raised
** (with its own position, or none when it aimed at this closure's
** caller, which a level cannot reach from there) is raised again with
** the position of the line that called the closure; error values that
** are not strings go on as they are. */
static int bound_k (lua_State *L, int status, lua_KContext ctx) {
  lua_Debug ar;
  const char *msg, *p;
  size_t n;
  (void)ctx;
  if (status == LUA_OK || status == LUA_YIELD)
    return 0;
  if (lua_type(L, -1) != LUA_TSTRING)
    return lua_error(L);
  msg = lua_tostring(L, -1);
  lua_pushvalue(L, lua_upvalueindex(B_LUA));
  lua_getinfo(L, ">S", &ar);
  n = strlen(ar.short_src);
  if (strncmp(msg, ar.short_src, n) == 0 && msg[n] == ':'
      && (p = strstr(msg + n + 1, ": ")) != NULL)
    msg = p + 2;  /* without the method's own position */
  luaL_where(L, 1);
  lua_pushstring(L, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

/* Calls the Lua method with the arguments on the stack. */
static int bound_lua (lua_State *L) {
  int status;
  lua_pushvalue(L, lua_upvalueindex(B_LUA));
  lua_insert(L, 1);
  /* drain may wait: bound_k goes on after the yield */
  status = lua_pcallk(L, lua_gettop(L) - 1, 0, 0, 0, bound_k);
  return bound_k(L, status, 0);
}

/* Whether self is the writer of the closure. */
#define isbound(L) \
  (lua_topointer(L, 1) == lua_topointer(L, lua_upvalueindex(B_WRITER)))

/* writer:write(data) */
static int bound_write (lua_State *L) {
  streamreader *s = (streamreader *)lua_touserdata(L,
                                                   lua_upvalueindex(B_READER));
  if (isbound(L) && lua_type(L, 2) == LUA_TSTRING) {
    lua_settop(L, 2);
    lua_getiuservalue(L, lua_upvalueindex(B_READER), SR_UV_TRANSPORT);
    lua_replace(L, 1);                  /* transport, data */
    loom__stream_write(L, s->tud);
    return 0;
  }
  if (isbound(L) && loom__testbuffer(L, 2) == NULL)  /* from here, the */
    return luaL_typeerror(L, 2, "string");  /* message has the caller's line */
  return bound_lua(L);
}

/* writer:drain(): returns at once while the transport is open, the reader
** has no error and the protocol is neither paused nor lost. */
static int bound_drain (lua_State *L) {
  streamreader *s = (streamreader *)lua_touserdata(L,
                                                   lua_upvalueindex(B_READER));
  loom_conn *c = s->tud->c;
  if (isbound(L) && !s->hasexc && !s->wpaused && !s->wlost && c != NULL
      && !c->closing && !c->closed)
    return 0;
  return bound_lua(L);
}

/*
** _writer_bind(writer, reader, transport, write, drain) -> write, drain:
** C closures over the Lua methods write and drain for the writer, when
** reader is a StreamReader whose transport is transport, one of
** stream.c; nothing otherwise.
*/
static int core_writer_bind (lua_State *L) {
  static const lua_CFunction fs[] = {bound_write, bound_drain};
  streamreader *s = (streamreader *)loom__testud(L, 2, LOOM_TSTREAMREADER);
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  luaL_checktype(L, 5, LUA_TFUNCTION);
  if (s == NULL || s->tud == NULL)
    return 0;
  lua_getiuservalue(L, 2, SR_UV_TRANSPORT);
  if (!lua_rawequal(L, 3, -1))
    return 0;
  for (i = 0; i < 2; i++) {
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 4 + i);
    lua_pushcclosure(L, fs[i], B_NUPVALUES);
  }
  return 2;
}

/*
** _write_flow(paused, lost): the write flow of the reader's protocol, as
** it changes (for the bound drain).
*/
static int streamreader_write_flow (lua_State *L) {
  streamreader *s = checkreader(L);
  s->wpaused = (uint8_t)lua_toboolean(L, 2);
  s->wlost = (uint8_t)lua_toboolean(L, 3);
  return 0;
}

/* }====================================================== */


/* __close: a reader closed with <close> closes the connection it reads
** from (its transport's close(): queued writes still go out), as the
** writer's close does; a reader with no transport is left as it is. */
static int streamreader_close (lua_State *L) {
  checkreader(L);
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, SR_UV_TRANSPORT) != LUA_TNIL) {
    lua_getfield(L, 2, "close");
    lua_insert(L, 2);
    lua_call(L, 1, 0);
  }
  return 0;
}

static int streamreader_gc (lua_State *L) {
  streamreader *s = checkreader(L);
  if (s->tud != NULL && s->tud->c != NULL && s->tud->c->sink == s)
    s->tud->c->sink = NULL;               /* no read into freed memory */
  freebuf(s->buf, s->cap);
  s->buf = NULL;
  s->kept = NULL;
  s->start = s->len = s->cap = 0;
  return 0;
}

static int streamreader_tostring (lua_State *L) {
  streamreader *s = checkreader(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "<StreamReader");
  if (s->len > 0) {
    lua_pushfstring(L, " %I bytes", (lua_Integer)s->len);
    luaL_addvalue(&b);
  }
  if (s->eof)
    luaL_addstring(&b, " eof");
  if (s->limit != STREAM_DEFAULT_LIMIT) {
    lua_pushfstring(L, " limit=%I", s->limit);
    luaL_addvalue(&b);
  }
  lua_getiuservalue(L, 1, SR_UV_WAITER);
  if (waiting(L)) {
    lua_pop(L, 1);
    luaL_addstring(&b, " waiter");
  }
  else
    lua_pop(L, 1);
  if (s->hasexc)
    luaL_addstring(&b, " exception");
  if (s->paused)
    luaL_addstring(&b, " paused");
  luaL_addchar(&b, '>');
  luaL_pushresult(&b);
  return 1;
}

static const luaL_Reg streamreader_methods[] = {
  {"read", streamreader_read},
  {"readexactly", streamreader_readexactly},
  {"readuntil", streamreader_readuntil},
  {"readline", streamreader_readline},
  {"feed_data", streamreader_feed_data},
  {"feed_eof", streamreader_feed_eof},
  {"at_eof", streamreader_at_eof},
  {"set_exception", streamreader_set_exception},
  {"exception", streamreader_exception},
  {"set_transport", streamreader_set_transport},
  {"_write_flow", streamreader_write_flow},
  {"_set_waiter", streamreader_set_waiter},
  {"_clear_waiter", streamreader_clear_waiter},
  {"_limit", streamreader_limit},
  {"_try_read", streamreader_try_read},
  {"_try_readexactly", streamreader_try_readexactly},
  {"_try_readuntil", streamreader_try_readuntil},
  {"_try_readline", streamreader_try_readline},
  {NULL, NULL}
};

static const luaL_Reg streamreader_metamethods[] = {
  {"__gc", streamreader_gc},
  {"__close", streamreader_close},
  {"__tostring", streamreader_tostring},
  {NULL, NULL}
};

static const luaL_Reg streambuf_functions[] = {
  {"_StreamReader", core_streamreader},
  {"_protocol_data_received", core_protocol_data_received},
  {"_writer_bind", core_writer_bind},
  {"_stream_sink", core_stream_sink},
  {NULL, NULL}
};

/*
** Fills the StreamReader type (a core type: its metatable exists) and
** opens _StreamReader into the module table at the top of the stack.
** lua/loom/streams.lua interposes lines().
*/
int loom__open_streambuf (lua_State *L) {
  luaL_getmetatable(L, LOOM_STREAMREADER_MT);
  loom__setfuncs(L, streamreader_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, streamreader_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__setfuncs(L, streambuf_functions);
  lua_getfield(L, -1, "await");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &await_key);
  return 0;
}
