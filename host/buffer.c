/*
** buffer.c
** loom.Buffer: a fixed-size mutable byte buffer, what a buffered protocol
** gives its transport to read into (stream.c, tls.c) and what
** transport:write takes without making a string first.
*/

#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "internal.h"

/*
** The bytes live in the userdata itself (one allocation, no __gc): a
** reader holding a C pointer into them anchors the userdata instead (see
** TUV_BUF in stream.h). Positions follow string.sub's rules.
*/

#define MAXSIZE 0x7fffffff  /* 2^31 - 1: lengths fit an int everywhere */

static loom_buffer *checkbuf (lua_State *L, int idx) {
  return (loom_buffer *)luaL_checkudata(L, idx, LOOM_BUFFER_MT);
}

loom_buffer *loom__testbuffer (lua_State *L, int idx) {
  return (loom_buffer *)luaL_testudata(L, idx, LOOM_BUFFER_MT);
}

/* string.sub's start position: 1 for anything at or before the start. */
static size_t startpos (lua_Integer pos, size_t len) {
  if (pos > 0)
    return (size_t)pos;
  else if (pos == 0)
    return 1;
  else if (pos < -(lua_Integer)len)
    return 1;
  return len + (size_t)pos + 1;
}

/* string.sub's end position: clipped to len, 0 before the start. */
static size_t endpos (lua_Integer pos, size_t len) {
  if (pos > (lua_Integer)len)
    return len;
  else if (pos >= 0)
    return (size_t)pos;
  else if (pos < -(lua_Integer)len)
    return 0;
  return len + (size_t)pos + 1;
}

/*
** The bytes i..j (arguments at iidx and iidx + 1, string.sub's rules,
** default 1..-1) of p[0..len): sets *n and returns the first byte.
*/
const char *loom__range (lua_State *L, int iidx, const char *p, size_t len,
                         size_t *n) {
  size_t i = startpos(luaL_optinteger(L, iidx, 1), len);
  size_t j = endpos(luaL_optinteger(L, iidx + 1, -1), len);
  *n = i > j ? 0 : j - i + 1;
  return i > j ? p : p + i - 1;
}

/*
** What a buffered protocol's get_buffer returned, at bidx (the Buffer)
** and bidx + 1 (its position, nil: 1), checked: pushes the room from
** that position to the end, as light userdata and length; raises as
** asyncio does for a buffer with no room. [-0, +2, e]
*/
void loom__bufroom (lua_State *L, int bidx) {
  loom_buffer *b = loom__testbuffer(L, bidx);
  lua_Integer pos = 1;
  if (b == NULL)
    luaL_error(L, "get_buffer() returned a %s (a loom.Buffer expected)",
               luaL_typename(L, bidx));
  if (!lua_isnil(L, bidx + 1)) {
    int isint;
    pos = lua_tointegerx(L, bidx + 1, &isint);
    if (!isint || pos < 1)
      luaL_error(L, "get_buffer() returned position %s (an integer >= 1 "
                 "expected)", luaL_tolstring(L, bidx + 1, NULL));
  }
  if ((size_t)pos > b->size)
    luaL_error(L, "get_buffer() returned an empty buffer");
  lua_pushlightuserdata(L, b->data + pos - 1);
  lua_pushinteger(L, (lua_Integer)(b->size - (size_t)(pos - 1)));
}

/* The bytes of a string or a Buffer at idx; raises for anything else. */
static const char *bytesof (lua_State *L, int idx, size_t *len) {
  loom_buffer *b;
  if (lua_type(L, idx) == LUA_TSTRING)
    return lua_tolstring(L, idx, len);
  if ((b = loom__testbuffer(L, idx)) == NULL)
    luaL_typeerror(L, idx, "string or loom.Buffer");
  *len = b->size;
  return b->data;
}

/* loom.Buffer(size): size zero bytes. */
static int buffer_new (lua_State *L) {
  lua_Integer size = luaL_checkinteger(L, 1);
  loom_buffer *b;
  luaL_argcheck(L, size >= 0 && size <= MAXSIZE, 1,
                "size must be in 0..2^31-1");
  b = (loom_buffer *)lua_newuserdatauv(L, offsetof(loom_buffer, data)
                                       + (size_t)size, 0);
  b->size = (size_t)size;
  memset(b->data, 0, (size_t)size);
  luaL_setmetatable(L, LOOM_BUFFER_MT);
  return 1;
}

static int buffer_len (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checkbuf(L, 1)->size);
  return 1;
}

/* buf:tostring([i [, j]]): the bytes i..j as a string. */
static int buffer_tostring (lua_State *L) {
  loom_buffer *b = checkbuf(L, 1);
  size_t n;
  const char *p = loom__range(L, 2, b->data, b->size, &n);
  lua_pushlstring(L, p, n);
  return 1;
}

/* buf:byte([i [, j]]): as string.byte (j defaults to i). */
static int buffer_byte (lua_State *L) {
  loom_buffer *b = checkbuf(L, 1);
  lua_Integer pi = luaL_optinteger(L, 2, 1);
  size_t i = startpos(pi, b->size);
  size_t j = endpos(luaL_optinteger(L, 3, pi), b->size);
  size_t k, n;
  if (i > j)
    return 0;
  n = j - i + 1;
  luaL_checkstack(L, (int)(n < (size_t)INT_MAX ? n : INT_MAX),
                  "string slice too long");
  for (k = 0; k < n; k++)
    lua_pushinteger(L, (unsigned char)b->data[i + k - 1]);
  return (int)n;
}

/*
** buf:set(pos, s [, i [, j]]): copies the bytes i..j of s (a string or a
** Buffer, the same one included) to pos..; returns the position after
** the last byte copied. Raises rather than truncate.
*/
static int buffer_set (lua_State *L) {
  loom_buffer *b = checkbuf(L, 1);
  lua_Integer pos = luaL_checkinteger(L, 2);
  size_t len, n;
  const char *s = bytesof(L, 3, &len);
  s = loom__range(L, 4, s, len, &n);
  if (pos < 0 && pos >= -(lua_Integer)b->size)
    pos += (lua_Integer)b->size + 1;
  luaL_argcheck(L, pos >= 1 && (size_t)pos <= b->size + 1, 2,
                "position out of range");
  if (n > b->size - (size_t)(pos - 1))
    return luaL_argerror(L, 2, lua_pushfstring(L, "%I bytes at %I would "
                         "go past the end of a buffer of %I",
                         (lua_Integer)n, pos, (lua_Integer)b->size));
  memmove(b->data + pos - 1, s, n);
  lua_pushinteger(L, pos + (lua_Integer)n);
  return 1;
}

/*
** buf:find(s [, init [, last]]): the first occurrence of the bytes of s
** (no patterns) starting at init and ending by last: its start and end,
** or nil.
*/
static int buffer_find (lua_State *L) {
  loom_buffer *b = checkbuf(L, 1);
  size_t ls, init, last, k;
  const char *s = bytesof(L, 2, &ls);
  lua_Integer pi = luaL_optinteger(L, 3, 1);
  init = startpos(pi, b->size);
  last = endpos(luaL_optinteger(L, 4, -1), b->size);
  if (init > b->size + 1 || init - 1 + ls > last) {
    luaL_pushfail(L);
    return 1;
  }
  if (ls == 0) {
    lua_pushinteger(L, (lua_Integer)init);
    lua_pushinteger(L, (lua_Integer)init - 1);
    return 2;
  }
  for (k = init - 1; k + ls <= last; k++) {
    const char *q = memchr(b->data + k, s[0], last - ls + 1 - k);
    if (q == NULL)
      break;
    k = (size_t)(q - b->data);
    if (memcmp(q, s, ls) == 0) {
      lua_pushinteger(L, (lua_Integer)k + 1);
      lua_pushinteger(L, (lua_Integer)(k + ls));
      return 2;
    }
  }
  luaL_pushfail(L);
  return 1;
}

/* buf:move(to, from, n): moves n bytes from..from+n-1 to to..to+n-1
** (overlap allowed). */
static int buffer_move (lua_State *L) {
  loom_buffer *b = checkbuf(L, 1);
  lua_Integer to = luaL_checkinteger(L, 2);
  lua_Integer from = luaL_checkinteger(L, 3);
  lua_Integer n = luaL_checkinteger(L, 4);
  lua_Integer size = (lua_Integer)b->size;
  luaL_argcheck(L, n >= 0 && n <= size, 4, "count out of range");
  luaL_argcheck(L, to >= 1 && to <= size - n + 1, 2,
                "destination out of range");
  luaL_argcheck(L, from >= 1 && from <= size - n + 1, 3,
                "source out of range");
  memmove(b->data + to - 1, b->data + from - 1, (size_t)n);
  return 0;
}

static int buffer_tostr (lua_State *L) {
  loom_buffer *b = checkbuf(L, 1);
  lua_pushfstring(L, "%s (%I bytes) %p", LOOM_BUFFER_MT,
                  (lua_Integer)b->size, (void *)b);
  return 1;
}

static const luaL_Reg buffer_methods[] = {
  {"tostring", buffer_tostring},
  {"byte", buffer_byte},
  {"set", buffer_set},
  {"find", buffer_find},
  {"move", buffer_move},
  {NULL, NULL}
};

static const luaL_Reg buffer_metamethods[] = {
  {"__len", buffer_len},
  {"__tostring", buffer_tostr},
  {NULL, NULL}
};

static const luaL_Reg buffer_functions[] = {
  {"Buffer", buffer_new},
  {NULL, NULL}
};

int loom__open_buffer (lua_State *L) {
  luaL_newmetatable(L, LOOM_BUFFER_MT);
  luaL_setfuncs(L, buffer_metamethods, 0);
  luaL_newlib(L, buffer_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_setfuncs(L, buffer_functions, 0);
  return 0;
}
