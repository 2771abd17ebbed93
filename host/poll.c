/*
** poll.c
** File-descriptor watching: add_reader, add_writer and their removal, on
** one uv_poll_t per (loop, fd); plus the private pipe helpers the specs
** use.
*/

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "internal.h"

/*
** One watcher per watched fd of a loop: a malloc'd uv_poll_t, owned by
** the loop (poll state), freed in its close callback. 'events' is what
** the Lua side wants (UV_READABLE | UV_WRITABLE); the poll runs with
** exactly that union. 'failed' is set when libuv reported an error and
** stopped the poll itself; the next add_reader/add_writer restarts it.
*/
typedef struct pollw {
  uv_poll_t h;
  loom_loop *loop;
  int fd;
  int events;
  int failed;
} pollw;

/* loop->poll_state: watchers indexed by fd (NULL: not watched). */
typedef struct pollstate {
  pollw **byfd;
  int cap;
} pollstate;

/*
** The callbacks live in Lua: the registry holds (under &watchers_key) an
** ephemeron table loop -> watchers table, whose entry 2*fd+1 is the
** reader's Handle and 2*fd+2 the writer's. A weak-keyed table, rather
** than a registry reference per loop, lets a loop whose callbacks capture
** the loop itself still be collected (its __gc closes the watchers).
** The entry is cleared when the loop shuts down.
*/
static const char watchers_key = 0;

#define READER 1
#define WRITER 2

static lua_Integer slotof (int fd, int which) {
  return 2 * (lua_Integer)fd + which;
}


/*
** {======================================================
** Watchers (C side)
** =======================================================
*/

static void free_cb (uv_handle_t *h) {
  free(h->data);
}

static pollw *findw (loom_loop *loop, int fd) {
  pollstate *ps = (pollstate *)loop->poll_state;
  if (ps == NULL || fd >= ps->cap)
    return NULL;
  return ps->byfd[fd];
}

/* Closes watcher w (its memory goes in the close callback) and forgets it. */
static void dropw (loom_loop *loop, pollw *w) {
  pollstate *ps = (pollstate *)loop->poll_state;
  ps->byfd[w->fd] = NULL;
  uv_close((uv_handle_t *)&w->h, free_cb);
}

static void poll_cb (uv_poll_t *h, int status, int events);

/*
** The watcher of fd, made when there is none. Returns 0, or a negative
** libuv code (UV_ENOMEM, or what uv_poll_init says: EBADF for a closed
** fd, EPERM for a regular file, EEXIST for an fd another handle of the
** loop watches). uv_poll_init runs before the array grows, so a bogus
** huge fd fails with EBADF instead of a huge allocation.
*/
static int watcher_for (loom_loop *loop, int fd, pollw **out) {
  pollstate *ps = (pollstate *)loop->poll_state;
  pollw *w;
  int r;
  if ((*out = findw(loop, fd)) != NULL)
    return 0;
  if (ps == NULL) {
    ps = (pollstate *)calloc(1, sizeof(pollstate));
    if (ps == NULL)
      return UV_ENOMEM;
    loop->poll_state = ps;
  }
  w = (pollw *)calloc(1, sizeof(pollw));
  if (w == NULL)
    return UV_ENOMEM;
  r = uv_poll_init(&loop->uv, &w->h, fd);
  if (r < 0) {  /* not a handle yet: nothing to close */
    free(w);
    return r;
  }
  w->h.data = w;
  w->loop = loop;
  w->fd = fd;
  if (fd >= ps->cap) {
    int ncap = ps->cap ? ps->cap : 16;
    pollw **p;
    while (ncap <= fd)
      ncap = ncap > INT_MAX / 2 ? INT_MAX : ncap * 2;
    p = (pollw **)realloc(ps->byfd, (size_t)ncap * sizeof(pollw *));
    if (p == NULL) {
      uv_close((uv_handle_t *)&w->h, free_cb);
      return UV_ENOMEM;
    }
    memset(p + ps->cap, 0, (size_t)(ncap - ps->cap) * sizeof(pollw *));
    ps->byfd = p;
    ps->cap = ncap;
  }
  ps->byfd[fd] = w;
  *out = w;
  return 0;
}

/*
** Polls w for 'events' (0: closes it). Returns 0 or a negative libuv
** code.
*/
static int setevents (loom_loop *loop, pollw *w, int events) {
  int r = 0;
  if (events == 0) {
    dropw(loop, w);
    return 0;
  }
  if (events != w->events || w->failed) {
    r = uv_poll_start(&w->h, events, poll_cb);
    if (r < 0)
      return r;
    w->failed = 0;
  }
  w->events = events;
  return r;
}

/* }====================================================== */


/*
** {======================================================
** Watchers (Lua side)
** =======================================================
*/


/*
** Protected part of poll_cb: queues the handles of the watcher (light
** userdata 1) for the events in 2. Runs on loop->L inside uv_run.
*/
static int fire (lua_State *L) {
  pollw *w = (pollw *)lua_touserdata(L, 1);
  int events = (int)lua_tointeger(L, 2);
  loom_loop *loop = w->loop;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);  /* 3: loop */
  if (!loom__loop_table(L, 3, &watchers_key, 0))  /* 4: watchers */
    return 0;
  if (events & UV_READABLE) {
    if (lua_rawgeti(L, 4, slotof(w->fd, READER)) == LUA_TUSERDATA)
      loom__ready_push(L, loop, 3, -1);
    lua_pop(L, 1);
  }
  if (events & UV_WRITABLE) {
    if (lua_rawgeti(L, 4, slotof(w->fd, WRITER)) == LUA_TUSERDATA)
      loom__ready_push(L, loop, 3, -1);
    lua_pop(L, 1);
  }
  return 0;
}

/*
** libuv's poll callback. It calls no Lua code: it queues the reader's
** and writer's handles on the ready queue, under lua_pcall so that not
** even a memory error escapes into libuv (the event is then dropped; a
** level-triggered poll reports it again). On an error (status < 0, e.g.
** EPOLLERR on a pipe whose other end is closed) libuv has stopped the
** poll; both callbacks are queued once so they can meet the error in
** their own read or write.
*/
static void poll_cb (uv_poll_t *h, int status, int events) {
  pollw *w = (pollw *)h->data;
  loom_loop *loop = w->loop;
  lua_State *L = loop->L;
  if (L == NULL || loop->closed || loop->self_ref == LUA_NOREF)
    return;
  if (status < 0) {
    w->failed = 1;
    events = UV_READABLE | UV_WRITABLE;
  }
  events &= w->events;
  if (events == 0 || !lua_checkstack(L, 8))
    return;
  lua_pushcfunction(L, fire);
  lua_pushlightuserdata(L, w);
  lua_pushinteger(L, events);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK)
    lua_pop(L, 1);
}

/*
** luaL_argerror, naming the function fname when the call site gives no
** name (a call through pcall, say).
*/
static int argerror (lua_State *L, int idx, const char *fname,
                     const char *msg) {
  lua_Debug ar;
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "n", &ar) && ar.name != NULL)
    return luaL_argerror(L, idx, msg);
  return luaL_error(L, "bad argument #%d to '%s' (%s)", idx, fname, msg);
}

/*
** Argument idx must be a file descriptor: a non-negative integer (a
** float with an integer value is accepted; a numeric string is not).
*/
static int checkfd (lua_State *L, int idx, const char *fname) {
  int isint = 0;
  lua_Integer fd = lua_type(L, idx) == LUA_TNUMBER
                   ? lua_tointegerx(L, idx, &isint) : 0;
  if (!isint || fd < 0 || fd > INT_MAX)
    argerror(L, idx, fname, lua_pushfstring(L, "file descriptor "
             "(non-negative integer) expected, got %s",
             lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx)
             : luaL_typename(L, idx)));
  return (int)fd;
}

static void checkcallable (lua_State *L, int idx, const char *fname) {
  if (lua_type(L, idx) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL)
      argerror(L, idx, fname, lua_pushfstring(L, "function expected, got %s",
               lua_isnone(L, idx) ? "no value" : luaL_typename(L, idx)));
    lua_pop(L, 1);
  }
}

/*
** add(loop, fd, cb, ...): installs cb(...) as the reader or writer of fd,
** replacing (and cancelling the handle of) the one before; leaves the new
** Handle on top. Raises on a closed loop, bad arguments, and as an
** OSError when libuv refuses the fd.
*/
static void addwatch (lua_State *L, int which, const char *fname) {
  loom_loop *loop = loom__checkopen(L, 1, fname);
  int fd = checkfd(L, 2, fname);
  int hidx, tbl, oldidx, r;
  pollw *w;
  checkcallable(L, 3, fname);
  hidx = loom__newhandle(L, loop, LOOM_KHANDLE, 3, lua_gettop(L) - 3, 0);
  loom__loop_table(L, 1, &watchers_key, 1);
  tbl = lua_gettop(L);
  lua_rawgeti(L, tbl, slotof(fd, which));
  oldidx = lua_gettop(L);
  lua_pushvalue(L, hidx);
  lua_rawseti(L, tbl, slotof(fd, which));  /* may raise: nothing else done */
  r = watcher_for(loop, fd, &w);
  if (r == 0)
    r = setevents(loop, w, w->events | which);
  if (r < 0) {
    if (w != NULL && w->events == 0)
      dropw(loop, w);
    lua_pushvalue(L, oldidx);  /* undo: the key exists, no allocation */
    lua_rawseti(L, tbl, slotof(fd, which));
    loom__push_oserror(L, r, fname);
    lua_error(L);
  }
  if (lua_type(L, oldidx) == LUA_TUSERDATA)
    ((loom_obj *)lua_touserdata(L, oldidx))->flags |= LOOM_FCANCELLED;
  lua_settop(L, hidx);
}

/*
** remove(loop, fd): true when a reader (writer) was installed; it is
** removed and its handle cancelled, so an event already queued does not
** run it. false on a closed loop, as asyncio.
*/
static int removewatch (lua_State *L, int which, const char *fname) {
  loom_loop *loop = loom__checkloop(L, 1);
  int fd = checkfd(L, 2, fname);
  pollw *w;
  if (loop->closed || !loom__loop_table(L, 1, &watchers_key, 0)
      || lua_rawgeti(L, -1, slotof(fd, which)) != LUA_TUSERDATA) {
    lua_pushboolean(L, 0);
    return 1;
  }
  ((loom_obj *)lua_touserdata(L, -1))->flags |= LOOM_FCANCELLED;
  lua_pushnil(L);
  lua_rawseti(L, -3, slotof(fd, which));
  w = findw(loop, fd);
  if (w != NULL) {
    int events = w->events & ~which;
    if (w->failed && events != 0)
      w->events = events;  /* stopped by libuv: stays stopped */
    else if (setevents(loop, w, events) < 0) {
      uv_poll_stop(&w->h);  /* cannot narrow it: stop it */
      w->failed = 1;
      w->events = events;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int loop_add_reader (lua_State *L) {
  addwatch(L, READER, "add_reader");
  return 0;
}

static int loop_add_writer (lua_State *L) {
  addwatch(L, WRITER, "add_writer");
  return 0;
}

/* Private: as add_reader, returning the Handle (for wait_readable). */
static int loop_add_reader_h (lua_State *L) {
  addwatch(L, READER, "add_reader");
  return 1;
}

static int loop_add_writer_h (lua_State *L) {
  addwatch(L, WRITER, "add_writer");
  return 1;
}

static int loop_remove_reader (lua_State *L) {
  return removewatch(L, READER, "remove_reader");
}

static int loop_remove_writer (lua_State *L) {
  return removewatch(L, WRITER, "remove_writer");
}

/*
** loop:_fd_watchers(): the number of watched fds (for the specs' leak
** checks).
*/
static int loop_fd_watchers (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  pollstate *ps = (pollstate *)loop->poll_state;
  int i, n = 0;
  if (ps != NULL)
    for (i = 0; i < ps->cap; i++)
      n += ps->byfd[i] != NULL;
  lua_pushinteger(L, n);
  return 1;
}

/*
** Closes every watcher of the loop (their memory goes in the close
** callbacks, which the loop runs next), frees the state and drops the
** loop's watchers table. Called by close() and __gc; never raises.
*/
void loom__poll_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  pollstate *ps = (pollstate *)loop->poll_state;
  if (ps != NULL) {
    int i;
    for (i = 0; i < ps->cap; i++)
      if (ps->byfd[i] != NULL)
        uv_close((uv_handle_t *)&ps->byfd[i]->h, free_cb);
    free(ps->byfd);
    free(ps);
    loop->poll_state = NULL;
  }
  loom__loop_table_drop(L, loopidx, &watchers_key);
}

/* }====================================================== */


/*
** {======================================================
** Private helpers for the specs: raw pipes and their I/O
** =======================================================
*/

/* Pushes nil, "CODE: message", "CODE" for errno e. */
static int syserror (lua_State *L, int e) {
  int err = uv_translate_sys_error(e);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", uv_err_name(err), uv_strerror(err));
  lua_pushstring(L, uv_err_name(err));
  return 3;
}

/* _pipe(): read fd, write fd (non-blocking, close-on-exec). */
static int core_pipe (lua_State *L) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
    return syserror(L, errno);
  lua_pushinteger(L, fds[0]);
  lua_pushinteger(L, fds[1]);
  return 2;
}

/* _write(fd, s): bytes written, or nil, msg, code. */
static int core_write (lua_State *L) {
  int fd = checkfd(L, 1, "_write");
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  ssize_t n = write(fd, s, len);
  if (n < 0)
    return syserror(L, errno);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* _read(fd, n): a string ("" at end of file), or nil, msg, code. */
static int core_read (lua_State *L) {
  int fd = checkfd(L, 1, "_read");
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_Buffer b;
  char *p;
  ssize_t got;
  luaL_argcheck(L, n > 0 && n <= (1 << 24), 2, "size out of range");
  p = luaL_buffinitsize(L, &b, (size_t)n);
  got = read(fd, p, (size_t)n);
  if (got < 0)
    return syserror(L, errno);
  luaL_pushresultsize(&b, (size_t)got);
  return 1;
}

/* _open(path): a read-only fd of the file, or nil, msg, code. */
static int core_open (lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  int fd;
  luaL_argcheck(L, memchr(path, '\0', len) == NULL, 1, "path contains NUL");
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return syserror(L, errno);
  lua_pushinteger(L, fd);
  return 1;
}

/* _close(fd): true, or nil, msg, code. */
static int core_close (lua_State *L) {
  int fd = checkfd(L, 1, "_close");
  if (close(fd) < 0)
    return syserror(L, errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* _listen(backlog): the fd of a TCP socket listening on 127.0.0.1 and
** its port, or nil, msg, code. Nothing accepts on it, so once its queue
** is full further connects stay pending: for the specs of timeouts. */
static int core_listen (lua_State *L) {
  lua_Integer backlog = luaL_checkinteger(L, 1);
  struct sockaddr_in sa;
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), err;
  luaL_argcheck(L, backlog >= 0 && backlog <= 128, 1, "backlog out of range");
  if (fd < 0)
    return syserror(L, errno);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0
      || listen(fd, (int)backlog) < 0
      || getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    err = errno;
    close(fd);
    return syserror(L, err);
  }
  lua_pushinteger(L, fd);
  lua_pushinteger(L, ntohs(sa.sin_port));
  return 2;
}

/* }====================================================== */


static const luaL_Reg poll_methods[] = {
  {"add_reader", loop_add_reader},
  {"remove_reader", loop_remove_reader},
  {"add_writer", loop_add_writer},
  {"remove_writer", loop_remove_writer},
  {"_add_reader", loop_add_reader_h},
  {"_add_writer", loop_add_writer_h},
  {"_fd_watchers", loop_fd_watchers},
  {NULL, NULL}
};

static const luaL_Reg poll_functions[] = {
  {"_pipe", core_pipe},
  {"_write", core_write},
  {"_read", core_read},
  {"_open", core_open},
  {"_close", core_close},
  {"_listen", core_listen},
  {NULL, NULL}
};

int loom__open_poll (lua_State *L) {
  loom__loop_methods(L, poll_methods);
  loom__setfuncs(L, poll_functions);  /* into the module table */
  return 0;
}
