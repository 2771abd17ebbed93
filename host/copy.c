/*
** copy.c
** Values that cross threads: a serializer from one Lua state into a C
** buffer (a blob) and back into another state.
**
** Lua states share nothing, so a value travels as bytes: nil, booleans,
** integers and floats (kept apart), strings (any bytes), tables of those
** (any nesting; a subtable met twice, or a cycle, is copied once and
** referred to after that), functions as bytecode when their upvalues
** are _ENV (in the target, the target's globals) or modules (values of
** package.loaded, required again by name in the target),
** tables whose metatable is one of loom's error classes (the class is
** found again by name in the target), and the handles of shared C
** objects (channels, loops, concurrent futures), which the blob holds a
** reference to. Anything else is an error that names the value, where it
** was met (the key path inside an argument, "a.b[3]") and why.
**
** A blob is plain malloc'd memory: it is made in one thread and read in
** another, so it may not hold anything of a Lua state.
*/

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define COPY_MAXDEPTH 1000    /* nesting of tables; each level costs two C frames */
#define BLOB_MT "loom.CopyBuffer"  /* frees a blob left by an error */

/* Tags of the wire format. Integers are in the machine's own byte
** order: a blob never leaves the process. */
enum {
  T_NIL = 'n', T_FALSE = 'f', T_TRUE = 't',
  T_INT = 'i',     /* lua_Integer */
  T_FLT = 'd',     /* lua_Number */
  T_SSTR = 's',    /* uint8_t length, bytes */
  T_STR = 'S',     /* size_t length, bytes */
  T_TABLE = 'T',   /* uint32_t narr, uint32_t npairs, pairs */
  T_CLASS = 'C',   /* uint8_t length, class name, then as T_TABLE */
  T_FUNC = 'F',    /* size_t length, bytecode, uint8_t nup, and per
                      upvalue 'e' (_ENV) or 'm', uint8_t length, name */
  T_REF = 'r',     /* uint32_t id of a table or function already met */
  T_SHARED = 'h'   /* uint32_t index in the blob's shared objects */
};

struct loom_blob {
  char *buf;
  size_t len, cap;
  loom_shared **sh;         /* references the blob holds */
  int nsh, shcap;
  int nvals;                /* values at the top level */
  int hasrefs;              /* some value is met twice (T_REF) */
  /* while encoding: the tables and functions met, past the first few,
  ** in an open-addressing hash (here, so an error frees it too) */
  const void **hkeys;
  uint32_t *hids;
  uint32_t hcap, hn;
};


/*
** {======================================================
** Shared objects
** =======================================================
*/

void loom__shared_init (loom_shared *s, int kind,
                        void (*destroy)(loom_shared *s)) {
  atomic_init(&s->refs, 1);
  s->kind = kind;
  s->destroy = destroy;
}

void loom__shared_retain (loom_shared *s) {
  atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Drops a reference; the last one destroys the object. */
void loom__shared_release (loom_shared *s) {
  if (s != NULL
      && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
    s->destroy(s);
}

/* Metatable names of the boxes of each kind of shared object. */
static const char *const boxnames[LOOM_SHCOUNT] = {
  NULL, LOOM_CHANNEL_MT, LOOM_REMOTELOOP_MT, LOOM_CFUTURE_MT
};

/*
** Pushes a new box (a userdata holding a reference) for s, of the type of
** its kind; the box takes a new reference. [-0, +1, m]
*/
void loom__shared_push (lua_State *L, loom_shared *s) {
  loom_shared **box = (loom_shared **)lua_newuserdatauv(L, sizeof s, 0);
  *box = NULL;
  luaL_setmetatable(L, boxnames[s->kind]);
  loom__shared_retain(s);
  *box = s;
}

/*
** The shared object in the box at idx when it is a box of that kind
** (kind 0: of any kind), else NULL; a box emptied by close is NULL too.
*/
loom_shared *loom__shared_test (lua_State *L, int idx, int kind) {
  int k;
  for (k = 1; k < LOOM_SHCOUNT; k++) {
    if (kind == 0 || kind == k) {
      loom_shared **box = (loom_shared **)luaL_testudata(L, idx, boxnames[k]);
      if (box != NULL)
        return *box;
    }
  }
  return NULL;
}

/* }====================================================== */


/*
** {======================================================
** Blobs
** =======================================================
*/

loom_blob *loom__blob_new (void) {
  return (loom_blob *)calloc(1, sizeof(loom_blob));
}

/* Frees the blob and drops the references it holds; NULL is fine. */
void loom__blob_free (loom_blob *b) {
  int i;
  if (b == NULL)
    return;
  for (i = 0; i < b->nsh; i++)
    loom__shared_release(b->sh[i]);
  free(b->hkeys);
  free(b->hids);
  free(b->sh);
  free(b->buf);
  free(b);
}

int loom__blob_count (const loom_blob *b) {
  return b->nvals;
}

/* }====================================================== */


/*
** {======================================================
** Encoding
** =======================================================
*/

#define SEEN_INLINE 8       /* tables and functions met, before the hash */

typedef struct encstate {
  lua_State *L;
  loom_blob *b;
  const void *seen[SEEN_INLINE];  /* the first ones met: id = index + 1 */
  uint32_t nids;            /* tables and functions met so far */
  int depth;
  int keys[COPY_MAXDEPTH + 1];  /* stack indices of the keys on the path */
  const loom_copywhere *where;
  int ival;                 /* which top-level value is being encoded */
} encstate;

static void grow (encstate *s, size_t n) {
  loom_blob *b = s->b;
  if (b->cap - b->len < n) {
    size_t ncap = b->cap ? b->cap : 64;
    char *p;
    while (ncap - b->len < n) {
      if (ncap > ((size_t)-1) / 2)
        luaL_error(s->L, "not enough memory");
      ncap *= 2;
    }
    p = (char *)realloc(b->buf, ncap);
    if (p == NULL)
      luaL_error(s->L, "not enough memory");
    b->buf = p;
    b->cap = ncap;
  }
}

static void put (encstate *s, const void *p, size_t n) {
  grow(s, n);
  memcpy(s->b->buf + s->b->len, p, n);
  s->b->len += n;
}

static void puttag (encstate *s, int tag) {
  char c = (char)tag;
  put(s, &c, 1);
}

static void putu32 (encstate *s, uint32_t v) {
  put(s, &v, sizeof v);
}

static int lua_writer (lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  put((encstate *)ud, p, sz);
  return 0;
}

/* Pushes the path of keys from the top-level value down to depth d, e.g.
** "a.b[3]"; an empty string at the top. [-0, +1, m] */
static void pushpath (encstate *s, int d) {
  lua_State *L = s->L;
  luaL_Buffer B;
  int i;
  luaL_buffinit(L, &B);
  for (i = 1; i <= d; i++) {
    int k = s->keys[i];
    switch (lua_type(L, k)) {
      case LUA_TSTRING: {
        size_t len, j;
        const char *str = lua_tolstring(L, k, &len);
        int ident = len > 0 && !(str[0] >= '0' && str[0] <= '9');
        for (j = 0; j < len && ident; j++)
          ident = str[j] == '_' || (str[j] >= 'a' && str[j] <= 'z')
                  || (str[j] >= 'A' && str[j] <= 'Z')
                  || (str[j] >= '0' && str[j] <= '9');
        if (ident) {
          if (i > 1)
            luaL_addchar(&B, '.');
          luaL_addlstring(&B, str, len);
        }
        else {
          luaL_addstring(&B, "[\"");
          luaL_addlstring(&B, str, len > 40 ? 40 : len);
          luaL_addstring(&B, len > 40 ? "...\"]" : "\"]");
        }
        break;
      }
      case LUA_TNUMBER:
        lua_pushfstring(L, "[%s]", luaL_tolstring(L, k, NULL));
        lua_remove(L, -2);
        luaL_addvalue(&B);
        break;
      default:
        lua_pushfstring(L, "[%s]", luaL_typename(L, k));
        luaL_addvalue(&B);
    }
  }
  luaL_pushresult(&B);
}

/*
** Pushes the name under which the function at idx can be found: a local
** variable or an upvalue of one of the Lua functions that called the C
** function now running (the nearest few), else a global; nil when none
** holds it. [-0, +1, m]
*/
static void pushfuncname (lua_State *L, int idx) {
  lua_Debug ar;
  int level;
  idx = lua_absindex(L, idx);
  for (level = 1; level <= 4 && lua_getstack(L, level, &ar); level++) {
    int i;
    const char *name;
    for (i = 1; (name = lua_getlocal(L, &ar, i)) != NULL; i++) {
      int same = lua_rawequal(L, -1, idx);
      lua_pop(L, 1);
      if (same && name[0] != '(') {
        lua_pushstring(L, name);
        return;
      }
    }
    lua_getinfo(L, "f", &ar);
    for (i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
      int same = lua_rawequal(L, -1, idx);
      lua_pop(L, 1);
      if (same && name[0] != '\0') {
        lua_pop(L, 1);
        lua_pushstring(L, name);
        return;
      }
    }
    lua_pop(L, 1);
  }
  lua_pushglobaltable(L);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
      lua_pop(L, 1);
      lua_remove(L, -2);
      return;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
}

/* Pushes "function 'f' (x.lua:12)" for the Lua function at idx, or
** "C function 'print'". [-0, +1, m] */
static void pushfuncdesc (lua_State *L, int idx) {
  lua_Debug ar;
  idx = lua_absindex(L, idx);
  pushfuncname(L, idx);
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">S", &ar);
  if (lua_iscfunction(L, idx)) {
    if (lua_isnil(L, -1))
      lua_pushliteral(L, "a C function");
    else
      lua_pushfstring(L, "C function '%s'", lua_tostring(L, -1));
  }
  else if (lua_isnil(L, -1))
    lua_pushfstring(L, "function (%s:%d)", ar.short_src, ar.linedefined);
  else
    lua_pushfstring(L, "function '%s' (%s:%d)", lua_tostring(L, -1),
                    ar.short_src, ar.linedefined);
  lua_remove(L, -2);
}

/* Pushes what the value at idx is, for a message: "a userdata", "a
** loom.Future", "a coroutine", "function 'f' (x.lua:12)"... */
static void pushdesc (lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TFUNCTION:
      pushfuncdesc(L, idx);
      break;
    case LUA_TUSERDATA: {
      int t = luaL_getmetafield(L, idx, "__name");
      if (t == LUA_TSTRING) {
        lua_pushfstring(L, "a %s", lua_tostring(L, -1));
        lua_remove(L, -2);
      }
      else {
        if (t != LUA_TNIL)
          lua_pop(L, 1);
        lua_pushliteral(L, "a userdata");
      }
      break;
    }
    case LUA_TLIGHTUSERDATA:
      lua_pushliteral(L, "a light userdata");
      break;
    case LUA_TTHREAD:
      lua_pushliteral(L, "a coroutine");
      break;
    case LUA_TTABLE:
      lua_pushliteral(L, "a table with a metatable");
      break;
    default:
      lua_pushfstring(L, "a %s", luaL_typename(L, idx));
  }
}

/*
** Raises the error for the value at idx that cannot be copied; why is
** NULL or a clause such as "has upvalue 'n'"; askey says the value is a
** key of the table at the current depth. Message: "<what> [at <path>]
** [<why> and] cannot be copied to another thread", raised as an argument
** error or prefixed with the place of the value (loom_copywhere).
*/
static int fail (encstate *s, int idx, const char *why, int askey) {
  lua_State *L = s->L;
  const char *msg;
  int d = s->depth;
  idx = lua_absindex(L, idx);
  pushdesc(L, idx);
  if (askey) {
    pushpath(s, d);
    lua_pushfstring(L, " used as a key in %s", lua_rawlen(L, -1) > 0
                    ? lua_tostring(L, -1) : "the table");
    lua_remove(L, -2);
  }
  else if (d > 0) {
    pushpath(s, d);
    lua_pushfstring(L, " at %s", lua_tostring(L, -1));
    lua_remove(L, -2);
  }
  else
    lua_pushliteral(L, "");
  msg = lua_pushfstring(L, "%s%s %s%scannot be copied to another thread",
                        lua_tostring(L, -2), lua_tostring(L, -1),
                        why ? why : "", why ? " and " : "");
  if (s->where->fnarg > 0)
    return luaL_argerror(L, s->ival == 0 ? s->where->fnarg
                                         : s->where->arg + s->ival - 1, msg);
  if (s->where->arg > 0)
    return luaL_argerror(L, s->where->arg + s->ival, msg);
  return luaL_error(L, "%s%d (%s)", s->where->prefix, s->ival + 1, msg);
}

static uint32_t hashptr (const void *p, uint32_t mask) {
  uintptr_t h = (uintptr_t)p;
  h ^= h >> 17;
  h *= (uintptr_t)0x9E3779B97F4A7C15u;
  return (uint32_t)(h >> 7) & mask;
}

/* Slot of p in the blob's hash (where it is, or where it would go). */
static uint32_t hslot (loom_blob *b, const void *p) {
  uint32_t i = hashptr(p, b->hcap - 1);
  while (b->hkeys[i] != NULL && b->hkeys[i] != p)
    i = (i + 1) & (b->hcap - 1);
  return i;
}

/* Adds p with id to the hash, growing it past half full. */
static void hinsert (encstate *s, const void *p, uint32_t id) {
  loom_blob *b = s->b;
  uint32_t i;
  if (b->hn * 2 >= b->hcap) {
    uint32_t ocap = b->hcap, ncap = ocap ? ocap * 2 : 64, j;
    const void **ok = b->hkeys;
    uint32_t *ov = b->hids;
    const void **nk = (const void **)calloc(ncap, sizeof *nk);
    uint32_t *nv = (uint32_t *)malloc(ncap * sizeof *nv);
    if (nk == NULL || nv == NULL) {
      free(nk);
      free(nv);
      luaL_error(s->L, "not enough memory");
    }
    b->hkeys = nk;
    b->hids = nv;
    b->hcap = ncap;
    for (j = 0; j < ocap; j++) {
      if (ok[j] != NULL) {
        uint32_t k = hslot(b, ok[j]);
        nk[k] = ok[j];
        nv[k] = ov[j];
      }
    }
    free(ok);
    free(ov);
  }
  i = hslot(b, p);
  b->hkeys[i] = p;
  b->hids[i] = id;
  b->hn++;
}

/*
** Looks the table or function at idx up in the values met so far (by
** address: they all stay alive, anchored by the values being copied):
** when met, writes a reference and returns 1; else records it under a
** new id and returns 0. The first few need no allocation.
*/
static int seen (encstate *s, int idx) {
  const void *p = lua_topointer(s->L, idx);
  uint32_t i, id = 0, n = s->nids < SEEN_INLINE ? s->nids : SEEN_INLINE;
  for (i = 0; i < n && id == 0; i++)
    if (s->seen[i] == p)
      id = i + 1;
  if (id == 0 && s->b->hn > 0) {
    uint32_t k = hslot(s->b, p);
    if (s->b->hkeys[k] == p)
      id = s->b->hids[k];
  }
  if (id != 0) {
    puttag(s, T_REF);
    putu32(s, id);
    s->b->hasrefs = 1;
    return 1;
  }
  id = ++s->nids;
  if (id <= SEEN_INLINE)
    s->seen[id - 1] = p;
  else
    hinsert(s, p, id);
  return 0;
}

static void encode (encstate *s, int idx);

/* The name of the loom error class that is the metatable on top, or
** NULL; pops the metatable. */
static const char *classname (lua_State *L) {
  const char *name = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key) == LUA_TTABLE
      && lua_getfield(L, -2, "name") == LUA_TSTRING) {
    name = lua_tostring(L, -1);  /* anchored by the metatable */
    lua_rawget(L, -2);  /* errors[name] */
    if (!lua_rawequal(L, -1, -3) || strlen(name) > 255)
      name = NULL;
    lua_pop(L, 1);
  }
  else
    lua_pop(L, 1);
  lua_pop(L, 2);
  return name;
}

static void encode_table (encstate *s, int idx) {
  lua_State *L = s->L;
  size_t countpos;
  uint32_t npairs = 0, narr;
  if (seen(s, idx))
    return;
  if (lua_getmetatable(L, idx)) {
    const char *name = classname(L);
    size_t len;
    if (name == NULL)
      fail(s, idx, NULL, 0);
    len = strlen(name);
    puttag(s, T_CLASS);
    {
      uint8_t l8 = (uint8_t)len;
      put(s, &l8, 1);
    }
    put(s, name, len);
  }
  else
    puttag(s, T_TABLE);
  if (s->depth >= COPY_MAXDEPTH)
    luaL_error(L, "cannot copy to another thread: tables nested more than "
               "%d levels deep", COPY_MAXDEPTH);
  narr = (uint32_t)lua_rawlen(L, idx);
  putu32(s, narr);
  countpos = s->b->len;
  putu32(s, 0);
  luaL_checkstack(L, 8, "tables nested too deeply");
  s->depth++;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int k = lua_gettop(L) - 1;
    s->keys[s->depth] = k;
    switch (lua_type(L, k)) {
      case LUA_TTABLE: case LUA_TFUNCTION: case LUA_TUSERDATA:
      case LUA_TTHREAD: case LUA_TLIGHTUSERDATA: {
        /* a key names no path: report it against its table */
        int t = lua_type(L, k);
        if (t != LUA_TTABLE && t != LUA_TFUNCTION
            && loom__shared_test(L, k, 0) == NULL
            && loom__testud(L, k, LOOM_TLOOP) == NULL) {
          s->depth--;
          fail(s, k, NULL, 1);
        }
        encode(s, k);
        break;
      }
      default:
        encode(s, k);
    }
    encode(s, k + 1);
    npairs++;
    lua_pop(L, 1);
  }
  s->depth--;
  memcpy(s->b->buf + countpos, &npairs, sizeof npairs);
}

/*
** Pushes the name under which package.loaded holds the value at vidx (a
** module) and returns 1; pushes nothing and returns 0 when none does.
*/
static int modulename (lua_State *L, int vidx) {
  vidx = lua_absindex(L, vidx);
  if (lua_type(L, vidx) != LUA_TTABLE)
    return 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, vidx)
        && lua_rawlen(L, -2) <= 255) {
      lua_pop(L, 1);
      lua_remove(L, -2);
      return 1;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

/*
** A Lua function travels as its bytecode (debug information kept, for
** messages and tracebacks) and a note per upvalue: _ENV becomes the
** target's globals, a module (a value of package.loaded) is required
** again by name there. Any other upvalue is an error.
*/
static void encode_function (encstate *s, int idx) {
  lua_State *L = s->L;
  size_t lenpos, start, len;
  const char *up;
  int i;
  if (lua_iscfunction(L, idx))
    fail(s, idx, NULL, 0);
  for (i = 1; (up = lua_getupvalue(L, idx, i)) != NULL; i++) {
    int ok = strcmp(up, "_ENV") == 0 || modulename(L, -1);
    lua_pop(L, ok == 1 && strcmp(up, "_ENV") != 0 ? 2 : 1);
    if (!ok) {
      lua_pushfstring(L, "has upvalue '%s'", up);
      fail(s, idx, lua_tostring(L, -1), 0);
    }
  }
  if (seen(s, idx))
    return;
  puttag(s, T_FUNC);
  lenpos = s->b->len;
  len = 0;
  put(s, &len, sizeof len);
  start = s->b->len;
  lua_pushvalue(L, idx);
  lua_dump(L, lua_writer, s, 0);
  lua_pop(L, 1);
  len = s->b->len - start;
  memcpy(s->b->buf + lenpos, &len, sizeof len);
  {
    uint8_t nup = (uint8_t)(i - 1);  /* Lua allows at most 255 */
    put(s, &nup, 1);
  }
  for (i = 1; (up = lua_getupvalue(L, idx, i)) != NULL; i++) {
    if (strcmp(up, "_ENV") == 0)
      puttag(s, 'e');
    else {
      size_t nlen;
      const char *name;
      uint8_t l8;
      modulename(L, -1);
      name = lua_tolstring(L, -1, &nlen);
      l8 = (uint8_t)nlen;
      puttag(s, 'm');
      put(s, &l8, 1);
      put(s, name, nlen);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

static void encode_shared (encstate *s, loom_shared *p) {
  loom_blob *b = s->b;
  if (b->nsh == b->shcap) {
    int ncap = b->shcap ? b->shcap * 2 : 4;
    loom_shared **n = (loom_shared **)realloc(b->sh, (size_t)ncap * sizeof *n);
    if (n == NULL)
      luaL_error(s->L, "not enough memory");
    b->sh = n;
    b->shcap = ncap;
  }
  loom__shared_retain(p);
  b->sh[b->nsh] = p;
  puttag(s, T_SHARED);
  putu32(s, (uint32_t)b->nsh++);
}

/* Writes the value at idx (an absolute index). */
static void encode (encstate *s, int idx) {
  lua_State *L = s->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      puttag(s, T_NIL);
      break;
    case LUA_TBOOLEAN:
      puttag(s, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
      break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer v = lua_tointeger(L, idx);
        puttag(s, T_INT);
        put(s, &v, sizeof v);
      }
      else {
        lua_Number v = lua_tonumber(L, idx);
        puttag(s, T_FLT);
        put(s, &v, sizeof v);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *str = lua_tolstring(L, idx, &len);
      if (len <= 255) {
        uint8_t l8 = (uint8_t)len;
        puttag(s, T_SSTR);
        put(s, &l8, 1);
      }
      else {
        puttag(s, T_STR);
        put(s, &len, sizeof len);
      }
      put(s, str, len);
      break;
    }
    case LUA_TTABLE:
      encode_table(s, idx);
      break;
    case LUA_TFUNCTION:
      encode_function(s, idx);
      break;
    case LUA_TUSERDATA: {
      loom_shared *p = loom__shared_test(L, idx, 0);
      if (p == NULL && luaL_testudata(L, idx, LOOM_LOOP_MT) != NULL)
        p = loom__loop_port(L, idx);
      if (p == NULL)
        fail(s, idx, NULL, 0);
      encode_shared(s, p);
      break;
    }
    default:
      fail(s, idx, NULL, 0);
  }
}

static int blob_gc (lua_State *L) {
  loom_blob **box = (loom_blob **)lua_touserdata(L, 1);
  loom__blob_free(*box);
  *box = NULL;
  return 0;
}

/*
** Pushes an empty box that frees the blob stored in it when collected:
** a blob held there does not leak when an error unwinds. [-0, +1, m]
*/
loom_blob **loom__blob_box (lua_State *L) {
  loom_blob **box = (loom_blob **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, BLOB_MT)) {
    lua_pushcfunction(L, blob_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return box;
}

/*
** Encodes the n values from index first into a new blob and returns it.
** Raises when a value cannot be copied (naming it as 'where' says) or
** memory runs out; the blob is then freed by the collector. [-0, +0, e]
*/
loom_blob *loom__copy_encode (lua_State *L, int first, int n,
                              const loom_copywhere *where) {
  encstate s;
  loom_blob **box, *b;
  int i, top = lua_gettop(L);
  first = lua_absindex(L, first);
  luaL_checkstack(L, 10, "cannot copy values");
  box = loom__blob_box(L);
  b = *box = loom__blob_new();
  if (b == NULL)
    luaL_error(L, "not enough memory");
  s.L = L;
  s.b = b;
  s.nids = 0;
  s.depth = 0;
  s.where = where;
  for (i = 0; i < n; i++) {
    s.ival = i;
    encode(&s, first + i);
  }
  free(b->hkeys);
  free(b->hids);
  b->hkeys = NULL;
  b->hids = NULL;
  b->hcap = b->hn = 0;
  b->nvals = n;
  *box = NULL;  /* the caller owns it now */
  lua_settop(L, top);
  return b;
}

/* }====================================================== */


/*
** {======================================================
** Decoding
** =======================================================
*/

typedef struct decstate {
  lua_State *L;
  const loom_blob *b;
  size_t pos;
  int ids;                  /* stack index of the table: id -> value */
  uint32_t nids;
  int depth;
} decstate;

static const char *take (decstate *d, size_t n) {
  const char *p = d->b->buf + d->pos;
  d->pos += n;
  return p;
}

static uint32_t takeu32 (decstate *d) {
  uint32_t v;
  memcpy(&v, take(d, sizeof v), sizeof v);
  return v;
}

static void decode (decstate *d);

/* Records the value on top under the next id, when something refers to
** it. */
static void record (decstate *d) {
  if (!d->b->hasrefs)
    return;
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->ids, (lua_Integer)++d->nids);
}

static void decode_table (decstate *d, const char *cls, size_t clslen) {
  lua_State *L = d->L;
  uint32_t narr = takeu32(d), npairs = takeu32(d), i;
  int t;
  lua_createtable(L, (int)(narr < npairs ? narr : npairs),
                  (int)(npairs > narr ? npairs - narr : 0));
  t = lua_gettop(L);
  record(d);
  luaL_checkstack(L, 8, "tables nested too deeply");
  d->depth++;
  for (i = 0; i < npairs; i++) {
    decode(d);
    decode(d);
    lua_rawset(L, t);
  }
  d->depth--;
  if (cls != NULL) {
    /* the class of the same name in this state, when there is one */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key) == LUA_TTABLE) {
      lua_pushlstring(L, cls, clslen);
      if (lua_rawget(L, -2) == LUA_TTABLE)
        lua_setmetatable(L, t);
      else
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

/* Pushes the next value. */
static void decode (decstate *d) {
  lua_State *L = d->L;
  int tag = *take(d, 1);
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      lua_Integer v;
      memcpy(&v, take(d, sizeof v), sizeof v);
      lua_pushinteger(L, v);
      break;
    }
    case T_FLT: {
      lua_Number v;
      memcpy(&v, take(d, sizeof v), sizeof v);
      lua_pushnumber(L, v);
      break;
    }
    case T_SSTR: {
      size_t len = (uint8_t)*take(d, 1);
      lua_pushlstring(L, take(d, len), len);
      break;
    }
    case T_STR: {
      size_t len;
      memcpy(&len, take(d, sizeof len), sizeof len);
      lua_pushlstring(L, take(d, len), len);
      break;
    }
    case T_TABLE:
      decode_table(d, NULL, 0);
      break;
    case T_CLASS: {
      size_t len = (uint8_t)*take(d, 1);
      const char *cls = take(d, len);
      decode_table(d, cls, len);
      break;
    }
    case T_FUNC: {
      size_t len;
      int i, nup;
      memcpy(&len, take(d, sizeof len), sizeof len);
      if (luaL_loadbufferx(L, take(d, len), len, "=(copied function)", "b")
          != LUA_OK)
        lua_error(L);
      record(d);
      nup = (uint8_t)*take(d, 1);
      for (i = 1; i <= nup; i++) {
        if (*take(d, 1) == 'e')
          lua_pushglobaltable(L);
        else {  /* a module: the one this state has, else required */
          size_t nlen = (uint8_t)*take(d, 1);
          const char *name = take(d, nlen);
          luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
          lua_pushlstring(L, name, nlen);
          if (lua_rawget(L, -2) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_getglobal(L, "require");
            lua_pushlstring(L, name, nlen);
            lua_call(L, 1, 1);
          }
          lua_remove(L, -2);
        }
        lua_setupvalue(L, -2, i);
      }
      break;
    }
    case T_REF:
      lua_rawgeti(L, d->ids, (lua_Integer)takeu32(d));
      break;
    case T_SHARED:
      loom__shared_push(L, d->b->sh[takeu32(d)]);
      break;
    default:
      luaL_error(L, "corrupt copy buffer (tag %d)", tag);
  }
}

/*
** Pushes the values of the blob; returns how many. The blob is left as it
** was (it may be decoded again). Raises only when memory runs out.
** [-0, +n, m]
*/
int loom__copy_decode (lua_State *L, const loom_blob *b) {
  decstate d;
  int i, base;
  luaL_checkstack(L, b->nvals + 10, "too many values to copy");
  if (b->hasrefs)
    lua_newtable(L);  /* ids, below the values */
  else
    lua_pushnil(L);
  base = lua_gettop(L);
  d.L = L;
  d.b = b;
  d.pos = 0;
  d.ids = base;
  d.nids = 0;
  d.depth = 0;
  for (i = 0; i < b->nvals; i++)
    decode(&d);
  lua_remove(L, base);
  return b->nvals;
}

/*
** Pushes the values of the blob and frees it, also when decoding fails
** (then the error propagates). Returns how many. [-0, +n, m]
*/
int loom__copy_take (lua_State *L, loom_blob *b) {
  loom_blob **box;
  int n, top = lua_gettop(L);
  box = loom__blob_box(L);
  *box = b;
  n = loom__copy_decode(L, b);
  *box = NULL;
  loom__blob_free(b);
  lua_remove(L, top + 1);
  return n;
}

/* }====================================================== */


/*
** {======================================================
** Lua functions (for the specs)
** =======================================================
*/

/* _copy(...): the values copied through a blob, in the same state. */
static int core_copy (lua_State *L) {
  static const loom_copywhere where = {1, 0, NULL};
  int n = lua_gettop(L);
  loom_blob *b = loom__copy_encode(L, 1, n, &where);
  lua_settop(L, 0);
  return loom__copy_take(L, b);
}

static const luaL_Reg copy_functions[] = {
  {"_copy", core_copy},
  {NULL, NULL}
};

int loom__open_copy (lua_State *L) {
  luaL_setfuncs(L, copy_functions, 0);
  return 0;
}

/* }====================================================== */
