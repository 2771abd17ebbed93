/*
** streambuf.c
** StreamReader: the read side of a stream, one growable byte buffer in C
** with asyncio's read, readexactly, readuntil and readline rules.
*/

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define STREAMREADER_MT "loom.StreamReader"
#define STREAM_DEFAULT_LIMIT ((lua_Integer)64 * 1024)

/*
** The C part is mechanism only (STYLE 11): feed_data, feed_eof,
** set_exception and the non-blocking try-reads, each of which either
** returns its result, returns nil when more data is needed, or raises.
** lua/loom/streams.lua adds read, readline, readexactly, readuntil and
** lines, which loop on a try-read and await the waiter future between
** tries.
**
** Memory. The buffer is malloc'd and owned by the userdata; __gc frees
** it. Live bytes are buf[start .. start+len). Consuming bytes only moves
** start; the dead prefix is reclaimed lazily, when an append would not
** fit: the live bytes move to the front when that frees at least half of
** the buffer, else the buffer doubles. Each byte is thus moved O(1) times
** on average and appends are amortised O(1). A buffer that empties while
** much larger than the limit is released.
**
** Lua side (STYLE 4). User values of the userdata: the waiter future (or
** nil), the stored exception (or nil) and the transport (or nil).
*/
enum { SR_UV_WAITER = 1, SR_UV_EXC, SR_UV_TRANSPORT, SR_UV_COUNT = 3 };

typedef struct streamreader {
  char *buf;                /* malloc'd, or NULL */
  size_t start;             /* first live byte */
  size_t len;               /* live bytes */
  size_t cap;               /* bytes allocated */
  lua_Integer limit;        /* asyncio's limit */
  lua_Integer consumed;     /* bytes consumed since creation: anchors the
                               scan offsets readuntil hands back */
  uint8_t eof;              /* feed_eof was called */
  uint8_t paused;           /* we called transport:pause_reading() */
  uint8_t hasexc;           /* set_exception was called */
} streamreader;

/* The one name the rest of the core sees (see internal.h). */
int loom__open_streambuf(lua_State *L);


/*
** {======================================================
** Helpers
** =======================================================
*/

static streamreader *checkreader (lua_State *L) {
  return (streamreader *)luaL_checkudata(L, 1, STREAMREADER_MT);
}

/* The first live byte; never NULL, even before the first allocation. */
#define DATA(s) ((s)->buf != NULL ? (s)->buf + (s)->start : (char *)empty)
static const char empty[1] = "";

/*
** Makes room for n more bytes after the live ones. Raises a memory error
** (leaving the buffer as it was) when malloc fails.
*/
static void reserve (lua_State *L, streamreader *s, size_t n) {
  size_t need, ncap;
  char *nb;
  if (n > (size_t)-1 / 2 - s->len)
    luaL_error(L, "feed_data: buffer too large");
  need = s->len + n;
  if (s->start + need <= s->cap)
    return;
  if (need <= s->cap / 2 || (need <= s->cap && s->start >= s->len)) {
    memmove(s->buf, DATA(s), s->len);   /* compact in place */
    s->start = 0;
    return;
  }
  ncap = s->cap < 256 ? 256 : s->cap;
  while (ncap < need)
    ncap *= 2;
  nb = (char *)malloc(ncap);
  if (nb == NULL) {
    lua_pushliteral(L, "not enough memory");
    lua_error(L);
  }
  if (s->len > 0)
    memcpy(nb, DATA(s), s->len);
  free(s->buf);
  s->buf = nb;
  s->start = 0;
  s->cap = ncap;
}

/* Drops the first n live bytes. */
static void consume (streamreader *s, size_t n) {
  s->len -= n;
  s->consumed += (lua_Integer)n;
  if (s->len == 0) {
    s->start = 0;
    /* an emptied buffer far above the limit goes back to the system */
    if (s->cap > (size_t)64 * 1024 && s->cap / 4 > (size_t)s->limit) {
      free(s->buf);
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
** Takes the first n live bytes: pushes them as a string, drops them and
** resumes the transport if the buffer fell to the limit. [-0, +1, e]
*/
static int take (lua_State *L, streamreader *s, size_t n) {
  lua_pushlstring(L, DATA(s), n);
  consume(s, n);
  maybe_resume(L, s);
  return 1;
}

/*
** Completes the waiter, if any, with a result (excidx 0) or with the
** error at excidx, and forgets it. [-0, +0, e]
*/
static void wakeup (lua_State *L, int excidx) {
  loom_future *f;
  lua_getiuservalue(L, 1, SR_UV_WAITER);
  f = loom__tofuture(L, -1);
  if (f == NULL) {
    lua_pop(L, 1);
    return;
  }
  lua_pushnil(L);
  lua_setiuservalue(L, 1, SR_UV_WAITER);
  if (f->state != LOOM_PENDING) {   /* cancelled: nobody to wake */
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
  lua_pushlstring(L, DATA(s), n);
  consume(s, n);
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
  luaL_setmetatable(L, STREAMREADER_MT);
  return 1;
}

/*
** feed_data(data): appends data and wakes the waiter; past twice the
** limit, pauses the transport (asyncio: "feed_data after feed_eof" is an
** assertion; here an error).
*/
static int streamreader_feed_data (lua_State *L) {
  streamreader *s = checkreader(L);
  size_t n;
  const char *p = checkbytes(L, 1, "feed_data", &n);
  if (s->eof)
    return luaL_error(L, "feed_data: called after feed_eof");
  if (n == 0)
    return 0;
  reserve(L, s, n);
  memcpy(DATA(s) + s->len, p, n);
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
  checkreader(L);
  if (lua_isnoneornil(L, 2))
    return luaL_error(L, "bad argument #1 to 'set_transport' (transport "
                      "expected, got %s)", luaL_typename(L, 2));
  if (lua_getiuservalue(L, 1, SR_UV_TRANSPORT) != LUA_TNIL)
    return luaL_error(L, "set_transport: transport already set");
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 1, SR_UV_TRANSPORT);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** Waiting (the Lua side awaits the future)
** =======================================================
*/

/*
** _set_waiter(fut, fname): makes fut the waiter that the next feed wakes.
** Raises when another read is waiting already. A paused transport is
** resumed first: the buffer is full, yet the reader needs more.
*/
static int streamreader_set_waiter (lua_State *L) {
  streamreader *s = checkreader(L);
  const char *fname = luaL_optstring(L, 3, "read");
  loom__checkfuture(L, 2);
  if (lua_getiuservalue(L, 1, SR_UV_WAITER) != LUA_TNIL)
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

/* }====================================================== */


/*
** {======================================================
** Try-reads: a result, nil (more data needed), or an error
** =======================================================
*/

/*
** _try_read(n): n > 0: up to n bytes, "" at EOF; n == 0: ""; n == -1:
** everything once EOF is reached. nil when the buffer cannot answer yet.
*/
static int streamreader_try_read (lua_State *L) {
  streamreader *s = checkreader(L);
  lua_Integer n = checksize(L, 1, "read", -1);
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

/*
** _try_readexactly(n): exactly n bytes; at EOF with fewer, raises
** IncompleteReadError (and the buffer is emptied into .partial).
*/
static int streamreader_try_readexactly (lua_State *L) {
  streamreader *s = checkreader(L);
  lua_Integer n = checksize(L, 1, "readexactly", 0);
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
** The search of asyncio's readuntil from the scan position pos (an
** absolute position, as a previous call returned it; 0 or none: from the
** start). Returns the index of the separator (>= 0); or -1 after pushing
** nil and the scan position to resume from. Raises LimitOverrunError and
** IncompleteReadError as asyncio does.
*/
static lua_Integer scan (lua_State *L, streamreader *s, const char *sep,
                         size_t seplen, lua_Integer pos) {
  size_t offset = 0;
  pos -= s->consumed;                 /* bytes consumed since: rescan */
  if (pos > 0)
    offset = (lua_Unsigned)pos > s->len ? s->len : (size_t)pos;
  if (s->len >= offset + seplen) {
    const char *p = findsep(DATA(s) + offset, s->len - offset, sep, seplen);
    if (p != NULL) {
      lua_Integer isep = (lua_Integer)(p - DATA(s));
      if (isep > s->limit)
        return overrun(L, "Separator is found, but chunk is longer than "
                       "limit", isep);
      return isep;
    }
    offset = s->len + 1 - seplen;
    if (offset > (size_t)s->limit)
      return overrun(L, "Separator is not found, and chunk exceed the "
                     "limit", (lua_Integer)offset);
  }
  if (s->eof)
    return incomplete(L, s, -1);
  lua_pushnil(L);
  lua_pushinteger(L, s->consumed + (lua_Integer)offset);
  return -1;
}

/*
** _try_readuntil(sep [, pos]): the data up to and including sep; or nil
** and a scan position to pass back on the next try, so that bytes already
** searched are not searched again.
*/
static int streamreader_try_readuntil (lua_State *L) {
  streamreader *s = checkreader(L);
  size_t seplen;
  const char *sep = checkbytes(L, 1, "readuntil", &seplen);
  lua_Integer pos = luaL_optinteger(L, 3, 0), isep;
  if (seplen == 0)
    return luaL_error(L, "bad argument #1 to 'readuntil' (separator should "
                      "be at least one-byte string)");
  checkexc(L, s);
  isep = scan(L, s, sep, seplen, pos);
  if (isep < 0)
    return 2;
  return take(L, s, (size_t)isep + seplen);
}

/*
** _try_readline([pos]): readuntil("\n") with asyncio's readline rules: at
** EOF the partial line (maybe ""); past the limit, the line (or the whole
** buffer, when no newline is in it) is dropped and a plain error raised.
*/
static int streamreader_try_readline (lua_State *L) {
  streamreader *s = checkreader(L);
  lua_Integer pos = luaL_optinteger(L, 2, 0) - s->consumed;
  size_t offset = 0, len = s->len;
  checkexc(L, s);
  if (pos > 0)
    offset = (lua_Unsigned)pos > len ? len : (size_t)pos;
  if (len > offset) {
    const char *p = (const char *)memchr(DATA(s) + offset, '\n',
                                         len - offset);
    if (p != NULL) {
      size_t isep = (size_t)(p - DATA(s));
      if (isep > (size_t)s->limit) {
        consume(s, isep + 1);                 /* drop through the newline */
        maybe_resume(L, s);
        return luaL_error(L, "readline: Separator is found, but chunk is "
                          "longer than limit");
      }
      return take(L, s, isep + 1);
    }
    offset = len;
    if (offset > (size_t)s->limit) {
      consume(s, len);                        /* no newline: drop it all */
      maybe_resume(L, s);
      return luaL_error(L, "readline: Separator is not found, and chunk "
                        "exceed the limit");
    }
  }
  if (s->eof)
    return take(L, s, len);                   /* the partial line */
  lua_pushnil(L);
  lua_pushinteger(L, s->consumed + (lua_Integer)offset);
  return 2;
}

/* }====================================================== */


static int streamreader_gc (lua_State *L) {
  streamreader *s = (streamreader *)luaL_checkudata(L, 1, STREAMREADER_MT);
  free(s->buf);
  s->buf = NULL;
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
  if (lua_getiuservalue(L, 1, SR_UV_WAITER) != LUA_TNIL) {
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
  {"feed_data", streamreader_feed_data},
  {"feed_eof", streamreader_feed_eof},
  {"at_eof", streamreader_at_eof},
  {"set_exception", streamreader_set_exception},
  {"exception", streamreader_exception},
  {"set_transport", streamreader_set_transport},
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
  {"__tostring", streamreader_tostring},
  {NULL, NULL}
};

static const luaL_Reg streambuf_functions[] = {
  {"_StreamReader", core_streamreader},
  {NULL, NULL}
};

/*
** Opens the StreamReader type, and _StreamReader into the module table
** at the top of the stack. lua/loom/streams.lua interposes the waiting
** methods.
*/
int loom__open_streambuf (lua_State *L) {
  luaL_newmetatable(L, STREAMREADER_MT);
  luaL_setfuncs(L, streamreader_metamethods, 0);
  lua_newtable(L);
  loom__setfuncs(L, streamreader_methods);   /* needs the core's types */
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__setfuncs(L, streambuf_functions);
  return 0;
}
