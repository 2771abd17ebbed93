/*
** lua_echo_server.c - TCP echo server in C on libuv that hands every
** read to Lua: the least any Lua server can do per request, the floor of
** loom's echo below which only leaving Lua would go. The peers'
** echo/c_libuv.c is the floor of C; the gap between the two is what Lua
** itself costs, the gap between this and loom what loom's machinery does.
**
**   callback  (peer lua-c) read_cb makes a Lua string of the bytes and
**             calls a Lua function with it, which calls a C write
**             (uv_try_write, then a queued copy of the rest): the cheapest
**             data_received, with no protocol table, transport object or
**             protected call around it.
**   streams   (peer lua-c-streams) each connection has a coroutine that
**             yields for its next string and writes it. read_cb makes the
**             string (joined to one not yet taken) and queues the
**             connection; after the poll (uv_check) each queued coroutine
**             is resumed with its string: asyncio's order, in which a
**             reader's task runs after the poll that fed it, and loom's
**             read budget (at most 1 MiB read into waiting strings per
**             poll, the rest at the next poll), without futures, tasks or
**             a reader object.
**
** One Lua state whose allocator keeps freed blocks up to 4 KiB on free
** lists by size class (multiples of 16 bytes, carved from 64 KiB slabs)
** and takes larger ones from the C library, kept from giving memory back
** and from mapping blocks below 4 MiB: the loom executable's allocator,
** less its classes for large blocks. The generational collector is set as
** the loom executable sets it (50, 300).
**
** usage: lua_echo_server PORT [callback|streams]
** build: cc -O2 -o lua_echo_server lua_echo_server.c -llua5.4 -luv
**        (with pkg-config --cflags --libs lua5.4 libuv)
*/

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <uv.h>

#define BUDGET (1024 * 1024)
#define QUANTUM 16
#define SMALL_MAX 4096
#define SLAB (64 * 1024)

/* The allocator: free lists of small blocks, by size class. */
static void *freelist[SMALL_MAX / QUANTUM];
static char *slabcur, *slabend;

static void *l_alloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  size_t oc, nc;
  void *n;
  (void)ud;
  if (ptr == NULL)
    osize = 0;  /* the kind of object, not a size */
  oc = (osize + QUANTUM - 1) / QUANTUM;
  nc = (nsize + QUANTUM - 1) / QUANTUM;
  if (nsize == 0 || nsize > SMALL_MAX) {
    if (ptr != NULL && osize <= SMALL_MAX) {  /* small to none or large */
      n = nsize == 0 ? NULL : malloc(nsize);
      if (nsize != 0 && n == NULL)
        return NULL;
      if (n != NULL)
        memcpy(n, ptr, osize);
      *(void **)ptr = freelist[oc - 1];
      freelist[oc - 1] = ptr;
      return n;
    }
    if (nsize == 0) {
      free(ptr);
      return NULL;
    }
    return realloc(ptr, nsize);
  }
  if (ptr != NULL && osize <= SMALL_MAX && oc == nc)
    return ptr;
  if ((n = freelist[nc - 1]) != NULL)
    freelist[nc - 1] = *(void **)n;
  else {
    if ((size_t)(slabend - slabcur) < nc * QUANTUM) {  /* a new slab */
      if ((slabcur = (char *)malloc(SLAB)) == NULL)
        return NULL;
      slabend = slabcur + SLAB;
    }
    n = slabcur;
    slabcur += nc * QUANTUM;
  }
  if (ptr != NULL) {
    memcpy(n, ptr, osize < nsize ? osize : nsize);
    if (osize <= SMALL_MAX) {
      *(void **)ptr = freelist[oc - 1];
      freelist[oc - 1] = ptr;
    }
    else
      free(ptr);
  }
  return n;
}

typedef struct conn {
  uv_tcp_t h;
  struct conn *next;      /* in the queue of connections to resume */
  lua_State *co;          /* streams: the connection's coroutine */
  int coref;              /* its registry ref */
  int strref;             /* streams: the string read, not yet taken */
  int queued;
} conn;

typedef struct { uv_write_t req; char data[]; } wreq;

static char rbuf[1 << 18];
static lua_State *L;
static int fnref;               /* the Lua function of the mode */
static int streams;
static conn *queue, **qtail = &queue;
static size_t pollread;         /* streams: bytes read this poll */

static void on_close (uv_handle_t *h) {
  conn *c = (conn *)h;
  if (c->coref != LUA_NOREF)
    luaL_unref(L, LUA_REGISTRYINDEX, c->coref);
  if (c->strref != LUA_NOREF)
    luaL_unref(L, LUA_REGISTRYINDEX, c->strref);
  free(c);
}

static void drop (conn *c) {
  if (!uv_is_closing((uv_handle_t *)c))
    uv_close((uv_handle_t *)c, on_close);
}

static void on_write (uv_write_t *r, int status) {
  (void)status;
  free(r);
}

/* write(conn, s): the string back to the connection */
static int l_write (lua_State *S) {
  conn *c = (conn *)lua_touserdata(S, 1);
  size_t n, done;
  const char *s = lua_tolstring(S, 2, &n);
  uv_buf_t b = uv_buf_init((char *)s, (unsigned int)n);
  int w;
  if (uv_is_closing((uv_handle_t *)c))
    return 0;
  w = uv_try_write((uv_stream_t *)c, &b, 1);
  if (w < 0 && w != UV_EAGAIN) {
    drop(c);
    return 0;
  }
  done = w > 0 ? (size_t)w : 0;
  if (done < n) {
    wreq *q = (wreq *)malloc(sizeof *q + (n - done));
    if (q == NULL) {
      drop(c);
      return 0;
    }
    memcpy(q->data, s + done, n - done);
    b = uv_buf_init(q->data, (unsigned int)(n - done));
    if (uv_write(&q->req, (uv_stream_t *)c, &b, 1, on_write) < 0) {
      free(q);
      drop(c);
    }
  }
  return 0;
}

static void on_alloc (uv_handle_t *h, size_t size, uv_buf_t *b) {
  (void)h;
  (void)size;
  if (streams && pollread >= BUDGET)
    *b = uv_buf_init(NULL, 0);  /* UV_ENOBUFS: read at the next poll */
  else
    *b = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_read (uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  conn *c = (conn *)s;
  if (nread == UV_ENOBUFS || nread == 0)
    return;
  if (nread < 0) {
    drop(c);
    return;
  }
  if (!streams) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, fnref);
    lua_pushlightuserdata(L, c);
    lua_pushlstring(L, b->base, (size_t)nread);
    lua_call(L, 2, 0);
    return;
  }
  pollread += (size_t)nread;
  if (c->strref != LUA_NOREF) {  /* joined to what waits */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->strref);
    lua_pushlstring(L, b->base, (size_t)nread);
    lua_concat(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, c->strref);
  }
  else {
    lua_pushlstring(L, b->base, (size_t)nread);
    c->strref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  if (!c->queued) {
    c->queued = 1;
    c->next = NULL;
    *qtail = c;
    qtail = &c->next;
  }
}

/* After the poll: each queued coroutine takes its string. */
static void on_check (uv_check_t *h) {
  conn *c = queue;
  (void)h;
  queue = NULL;
  qtail = &queue;
  pollread = 0;
  while (c != NULL) {
    conn *next = c->next;
    int nres;
    c->queued = 0;
    if (!uv_is_closing((uv_handle_t *)c) && c->strref != LUA_NOREF) {
      lua_rawgeti(c->co, LUA_REGISTRYINDEX, c->strref);
      luaL_unref(L, LUA_REGISTRYINDEX, c->strref);
      c->strref = LUA_NOREF;
      if (lua_resume(c->co, L, 1, &nres) != LUA_YIELD) {
        fprintf(stderr, "lua_echo_server: %s\n", lua_tostring(c->co, -1));
        exit(1);
      }
      lua_pop(c->co, nres);
    }
    c = next;
  }
}

static void on_conn (uv_stream_t *srv, int status) {
  conn *c;
  int nres;
  if (status < 0)
    return;
  c = (conn *)calloc(1, sizeof *c);
  if (c == NULL)
    return;
  c->coref = c->strref = LUA_NOREF;
  uv_tcp_init(srv->loop, &c->h);
  if (uv_accept(srv, (uv_stream_t *)c) != 0) {
    drop(c);
    return;
  }
  uv_tcp_nodelay(&c->h, 1);
  if (streams) {  /* the coroutine runs to its first yield */
    c->co = lua_newthread(L);
    c->coref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(c->co, LUA_REGISTRYINDEX, fnref);
    lua_pushlightuserdata(c->co, c);
    if (lua_resume(c->co, L, 1, &nres) != LUA_YIELD) {
      fprintf(stderr, "lua_echo_server: %s\n", lua_tostring(c->co, -1));
      exit(1);
    }
  }
  uv_read_start((uv_stream_t *)c, on_alloc, on_read);
}

static const char callback_src[] =
  "local write = ...\n"
  "return function (c, s) write(c, s) end\n";

static const char streams_src[] =
  "local write = ...\n"
  "local yield = coroutine.yield\n"
  "return function (c)\n"
  "  while true do write(c, yield()) end\n"
  "end\n";

int main (int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t srv;
  uv_check_t check;
  struct sockaddr_in a;
  const char *mode = argc > 2 ? argv[2] : "callback";
  signal(SIGPIPE, SIG_IGN);
  if (strcmp(mode, "streams") == 0)
    streams = 1;
  else if (strcmp(mode, "callback") != 0) {
    fprintf(stderr, "usage: %s PORT [callback|streams]\n", argv[0]);
    return 2;
  }
#if defined(__GLIBC__)
  mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
#endif
  L = lua_newstate(l_alloc, NULL);
  if (L == NULL)
    return 1;
  luaL_openlibs(L);
  lua_gc(L, LUA_GCGEN, 50, 300);
  if (luaL_loadstring(L, streams ? streams_src : callback_src) != LUA_OK)
    return 1;
  lua_pushcfunction(L, l_write);
  lua_call(L, 1, 1);
  fnref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 25000, &a);
  uv_tcp_init(loop, &srv);
  uv_check_init(loop, &check);
  uv_check_start(&check, on_check);
  if (uv_tcp_bind(&srv, (const struct sockaddr *)&a, 0)
      || uv_listen((uv_stream_t *)&srv, 1024, on_conn))
    return 1;
  return uv_run(loop, UV_RUN_DEFAULT);
}
