/*
** fs.c
** Files off the loop thread: the requests of loom.fs on libuv's thread
** pool (uv_fs_*), the File type with its read buffer, and the native
** path of loop:sendfile (sendfile(2) on the pool).
*/

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream.h"

/*
** Memory and lifetime. A request is malloc'd, listed in the loop's list
** of requests in flight (loop->fs_state), and anchors in its loop the
** future it completes (loom__anchor, so that a dropped loop is still
** collected), and in the registry the string a write writes, until its
** callback. A File userdata points to a malloc'd fs_file that the
** request in flight on it also counts (nrefs): a pool thread reads into
** the file's buffer, so the buffer lives as long as the request does,
** whatever happens to the userdata. A request works on its own copy of
** the descriptor number, and a file closed (or collected) while a
** request on it is in flight keeps its descriptor open (the zombie)
** until that request ends, so no pool thread ever uses a number the
** process may have reused.
**
** At loop shutdown (loom__fs_shutdown) the requests in flight are
** detached: loop NULL, future reference released. The loop's last uv_run
** then runs their callbacks, which free them without calling Lua. The
** string a write holds is released in its callback through the main
** thread (as stream.c's writes are), since a pool thread may still be
** reading it.
**
** Lua is called from the callbacks only while the loop runs, on
** loop->L, under lua_pcall.
*/

#define FILE_MT "loom.File"

#define RBUFSIZE (64 * 1024)          /* one refill of a read buffer */
#define MAXFILL  (64 * 1024 * 1024)   /* the largest refill a read asks */
#define MAXKEEP  (16 * 1024 * 1024)   /* a larger empty buffer is freed */
#define MAXREQ   (1024 * 1024 * 1024) /* bytes one read or write asks */
#define SF_CHUNK (16 * 1024 * 1024)   /* bytes one sendfile(2) call asks */
#define SF_ROUND (64 * 1024 * 1024)   /* bytes one pool job sends at most */

typedef struct fs_file {
  int fd;                   /* -1 once closed */
  int zombie;               /* closed while busy: closed when the request
                               in flight ends, or -1 */
  int nrefs;                /* the userdata, plus the request in flight */
  int64_t pos;              /* file offset of rbuf[roff] */
  char *rbuf;               /* read buffer: unread bytes rbuf[roff..rlen) */
  size_t roff, rlen, rcap;
  size_t scanned;           /* bytes from roff known to hold no newline */
  uint8_t busy;             /* a request on the file is in flight */
  uint8_t append;           /* opened with "a": writes go to the end */
  uint8_t atend;            /* pos unknown: at the end after an append */
  uint8_t stream;           /* not seekable (pipe, socket, terminal) */
  uint8_t eof;              /* the last refill read nothing */
  uint8_t own;              /* the descriptor is closed with the file */
  char path[1];             /* for messages; "" when there is none */
} fs_file;

typedef struct file_ud {
  fs_file *f;               /* NULL once collected */
} file_ud;

/* What the loop's list holds: requests and sendfiles. */
enum { PK_FS, PK_SENDFILE };

typedef struct pending {
  struct pending *prev, *next;
  loom_loop *loop;          /* NULL once detached by shutdown */
  loom_future *fut;         /* anchored by fut_ref; NULL once detached */
  int fut_ref;              /* the future's anchor (loom__anchor), or
                               LUA_NOREF */
  lua_State *mainL;         /* for releasing str_ref without a task */
  uint64_t id;              /* for the cancel callback to find it */
  uint8_t kind;             /* PK_* */
} pending;

typedef struct fs_state {
  pending *head;
  uint64_t ids;
} fs_state;

enum { OP_OPEN, OP_OPENSTAT, OP_CLOSE, OP_FILL, OP_WRITE, OP_FSYNC,
       OP_FSTAT, OP_STAT, OP_LSTAT, OP_MKDIR, OP_RMDIR, OP_UNLINK,
       OP_RENAME, OP_SCANDIR, OP_MKDTEMP, OP_COPYFILE, OP_READLINK,
       OP_REALPATH, OP_CHMOD };

typedef struct fs_req {
  pending p;                /* first: the list holds pending pointers */
  uv_fs_t fs;
  fs_file *file;            /* counted, or NULL */
  const char *what;         /* the function, for messages */
  int fd;                   /* the descriptor it works on */
  int status;               /* 0 or a libuv error, for the completion */
  int str_ref;              /* the string a write writes, or LUA_NOREF */
  char *data;               /* write: the bytes; refill: where they go */
  size_t len, done;         /* write: bytes to write, written */
  int64_t off;              /* first file offset, or -1: current one */
  uint8_t op;               /* OP_* */
  char *path2;              /* second path (rename, copyfile), or NULL */
  char paths[1];            /* the path(s), for messages */
} fs_req;

/* A native sendfile in progress (struct loom_sendfile of stream.h). */
typedef struct loom_sendfile {
  pending p;                /* first */
  uv_work_t work;           /* sendfile(2) calls on the pool */
  uv_poll_t poll;           /* on outfd: the socket can take more */
  loom_conn *c;             /* NULL once the transport closed */
  fs_file *file;            /* counted, or NULL for a bare descriptor */
  int infd, outfd;          /* our duplicates of the file and the socket */
  int64_t off;              /* next file offset */
  int64_t left;             /* bytes still to send, -1: up to the end */
  int64_t sent;
  int err;                  /* 0 or a libuv error */
  int pollerr;              /* the last poll's error, or 0 */
  int wait_ref;             /* _sendfile_wait's future, or LUA_NOREF */
  uint8_t working;          /* a pool job is queued or running */
  uint8_t again;            /* the last job found the socket full */
  uint8_t eof;              /* the last job reached the end of the file */
  uint8_t notavail;         /* sendfile(2) refused this pair */
  uint8_t ending;           /* no more jobs; the poll handle is closing */
  uint8_t pollclosed;
  uint8_t filedone;         /* the file was given back */
} sf_req;

static void fs_cb (uv_fs_t *req);


/*
** {======================================================
** Helpers
** =======================================================
*/

/* The thread running the loop inside uv_run, or NULL when Lua must not
** be called (loop closed, not running, or detached). */
static lua_State *usable (loom_loop *loop) {
  return (loop != NULL && loop->L != NULL && !loop->closed) ? loop->L
                                                            : NULL;
}

static lua_State *mainthread (lua_State *L) {
  lua_State *M;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  M = lua_tothread(L, -1);
  lua_pop(L, 1);
  return M;
}

/*
** Pushes the OSError of a failed request: code and errno as
** loom__push_oserror gives them, filename (and filename2) the path(s),
** the message "what: CODE: text: path" ("path -> path2" for two).
** [-0, +1, m]
*/
static void pushfserror (lua_State *L, int err, const char *what,
                         const char *path, const char *path2) {
  int hascls;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  hascls = lua_istable(L, -1) && lua_getfield(L, -1, "OSError") != LUA_TNIL;
  if (hascls)
    lua_remove(L, -2);
  else
    lua_pop(L, lua_istable(L, -1) ? 2 : 1);
  if (path2 != NULL)
    lua_pushfstring(L, "%s: %s: %s: %s -> %s", what, uv_err_name(err),
                    uv_strerror(err), path, path2);
  else if (path != NULL && *path != '\0')
    lua_pushfstring(L, "%s: %s: %s: %s", what, uv_err_name(err),
                    uv_strerror(err), path);
  else
    lua_pushfstring(L, "%s: %s: %s", what, uv_err_name(err),
                    uv_strerror(err));
  if (!hascls)
    return;
  lua_createtable(L, 0, 4);
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  if (path != NULL && *path != '\0') {
    lua_pushstring(L, path);
    lua_setfield(L, -2, "filename");
  }
  if (path2 != NULL) {
    lua_pushstring(L, path2);
    lua_setfield(L, -2, "filename2");
  }
  lua_call(L, 2, 1);
}

static int fserror (lua_State *L, int err, const char *what,
                    const char *path) {
  pushfserror(L, err, what, path, NULL);
  return lua_error(L);
}

/*
** The path at arg: a string with no NUL byte (the system would cut it
** short there). [-0, +0, v]
*/
static const char *checkpath (lua_State *L, int arg) {
  size_t len;
  const char *s = luaL_checklstring(L, arg, &len);
  if (memchr(s, '\0', len) != NULL)
    luaL_argerror(L, arg, "path contains a NUL byte");
  return s;
}

/*
** A permission mode at idx: an integer 0..07777, or a string of octal
** digits ("755"), Lua having no octal literals. [-0, +0, v]
*/
static int toperm (lua_State *L, int idx, int arg, const char *what) {
  lua_Integer m = -1;
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int isint;
    m = lua_tointegerx(L, idx, &isint);
    if (!isint)
      m = -1;
  }
  else if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len, i;
    const char *s = lua_tolstring(L, idx, &len);
    if (len > 0 && len <= 5) {
      m = 0;
      for (i = 0; i < len && m >= 0; i++)
        m = (s[i] >= '0' && s[i] <= '7') ? m * 8 + (s[i] - '0') : -1;
    }
  }
  if (m < 0 || m > 07777)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s must be an integer "
                                          "0..4095 or a string of octal "
                                          "digits (\"755\")", what));
  return (int)m;
}

/* The options table at arg (nil: none), checked against names. Returns
** whether there is one. */
static int checkopts (lua_State *L, int arg, const char *const names[]) {
  if (lua_isnoneornil(L, arg))
    return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  loom__checkkeys(L, arg, arg, NULL, names);
  return 1;
}

/* opts.mode of the options table at arg (checked), or dflt. */
static int optperm (lua_State *L, int arg, int dflt) {
  int m = dflt;
  if (!lua_istable(L, arg))
    return dflt;
  if (lua_getfield(L, arg, "mode") != LUA_TNIL)
    m = toperm(L, -1, arg, "mode");
  lua_pop(L, 1);
  return m;
}

/* opts[name] of the options table at arg: nil (false) or a boolean. */
static int optbool (lua_State *L, int arg, const char *name) {
  int b = 0, t;
  if (!lua_istable(L, arg))
    return 0;
  t = lua_getfield(L, arg, name);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s must be a boolean, got %s",
                                          name, luaL_typename(L, -1)));
  b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

/*
** The running loop, which the caller (a task of it, which can await)
** submits to; pushes it and leaves its index in *loopidx. [-0, +1, v]
*/
static loom_loop *taskloop (lua_State *L, const char *fname, int *loopidx) {
  loom_loop *loop = loom__running();
  if (loop == NULL || loop->self_ref == LUA_NOREF || loop->closed)
    luaL_error(L, "%s: no running event loop", fname);
  if (loop->current == NULL)
    luaL_error(L, "%s: not inside a task", fname);
  if (loop->current->co != L)
    luaL_error(L, "%s: called from a coroutine that is not a task "
               "(a plain coroutine inside a task cannot await)", fname);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  *loopidx = lua_gettop(L);
  return loop;
}

/* Whether L is a task of the running loop that can await here. */
static int canawait (lua_State *L) {
  loom_loop *loop = loom__running();
  return loop != NULL && !loop->closed && loop->self_ref != LUA_NOREF
         && loop->current != NULL && loop->current->co == L
         && lua_isyieldable(L);
}

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

/* Awaits the future on top, dropping it and its results; then goes on
** with k (also when the await did not yield). */
static int await_then (lua_State *L, lua_KContext ctx, lua_KFunction k) {
  lua_getfield(L, -1, "await");
  lua_insert(L, -2);
  lua_callk(L, 1, 0, ctx, k);
  return k(L, LUA_OK, ctx);
}

/* }====================================================== */


/*
** {======================================================
** Files: the C side
** =======================================================
*/

static void orphan_cb (uv_fs_t *req) {
  uv_fs_req_cleanup(req);
  free(req);
}

/*
** Closes fd without waiting for it: on the pool of loop when it can take
** a request, else here (no loop runs, so none is blocked). Calls no Lua.
*/
static void closefd (loom_loop *loop, int fd) {
  uv_fs_t *req;
  if (fd < 0)
    return;
  if (loop != NULL && !loop->closed && loop->uvinit
      && (req = (uv_fs_t *)malloc(sizeof *req)) != NULL) {
    if (uv_fs_close(&loop->uv, req, fd, orphan_cb) == 0)
      return;
    free(req);
  }
  close(fd);
}

/* A new file structure with one reference, closed; NULL without
** memory. */
static fs_file *allocfile (const char *path) {
  size_t len = strlen(path);
  fs_file *f = (fs_file *)malloc(sizeof(fs_file) + len);
  if (f == NULL)
    return NULL;
  memset(f, 0, sizeof *f);
  f->fd = f->zombie = -1;
  f->nrefs = 1;
  f->own = 1;
  memcpy(f->path, path, len + 1);
  return f;
}

/* Drops a reference; the last one closes what is still open and frees. */
static void file_unref (loom_loop *loop, fs_file *f) {
  if (--f->nrefs > 0)
    return;
  if (f->own) {
    closefd(loop, f->fd);
    closefd(loop, f->zombie);
  }
  free(f->rbuf);
  free(f);
}

/* The request in flight on f ended: it is free again, and a descriptor
** closed meanwhile is closed now. */
static void settle (loom_loop *loop, fs_file *f) {
  f->busy = 0;
  if (f->zombie >= 0) {
    closefd(loop, f->zombie);
    f->zombie = -1;
  }
}

/* Forgets the unread bytes (a write, a seek: pos is where they began). */
static void dropbuf (fs_file *f) {
  f->roff = f->rlen = f->scanned = 0;
  f->eof = 0;
  if (f->rcap > MAXKEEP) {
    free(f->rbuf);
    f->rbuf = NULL;
    f->rcap = 0;
  }
}

/* Consumes k unread bytes. */
static void consume (fs_file *f, size_t k) {
  f->roff += k;
  f->pos += (int64_t)k;
  f->scanned = 0;
  if (f->roff == f->rlen) {
    f->roff = f->rlen = 0;
    if (f->rcap > MAXKEEP) {
      free(f->rbuf);
      f->rbuf = NULL;
      f->rcap = 0;
    }
  }
}

/* Pushes the next k unread bytes and consumes them. [-0, +1, m] */
static void take (lua_State *L, fs_file *f, size_t k) {
  lua_pushlstring(L, k > 0 ? f->rbuf + f->roff : "", k);
  consume(f, k);
}

/* Makes room for want more bytes after the unread ones. */
static int reserve (fs_file *f, size_t want) {
  size_t avail = f->rlen - f->roff;
  if (f->roff > 0) {
    memmove(f->rbuf, f->rbuf + f->roff, avail);
    f->roff = 0;
    f->rlen = avail;
  }
  if (f->rcap - f->rlen < want) {
    char *b = (char *)realloc(f->rbuf, f->rlen + want);
    if (b == NULL)
      return 0;
    f->rbuf = b;
    f->rcap = f->rlen + want;
  }
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Requests
** =======================================================
*/

static fs_state *getstate (lua_State *L, loom_loop *loop) {
  if (loop->fs_state == NULL) {
    fs_state *st = (fs_state *)calloc(1, sizeof *st);
    if (st == NULL)
      luaL_error(L, "not enough memory");
    loop->fs_state = st;
  }
  return (fs_state *)loop->fs_state;
}

static void listp (pending *p) {
  fs_state *st = (fs_state *)p->loop->fs_state;
  p->prev = NULL;
  p->next = st->head;
  if (st->head)
    st->head->prev = p;
  st->head = p;
}

static void unlistp (pending *p) {
  fs_state *st;
  if (p->loop == NULL)
    return;
  st = (fs_state *)p->loop->fs_state;
  if (p->prev)
    p->prev->next = p->next;
  else
    st->head = p->next;
  if (p->next)
    p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void sf_cancel (sf_req *sf);

/*
** Done callback of a request's future: when the future was cancelled
** (its task was), asks libuv to drop the request if no thread has
** started it. Upvalue: the request's id. The request may be gone.
*/
static int cancel_cb (lua_State *L) {
  loom_future *f = loom__tofuture(L, 1);
  uint64_t id = (uint64_t)lua_tointeger(L, lua_upvalueindex(LOOM_TCOUNT + 1));
  fs_state *st;
  pending *p;
  if (f == NULL || f->state != LOOM_CANCELLED || f->loop->closed)
    return 0;
  st = (fs_state *)f->loop->fs_state;
  for (p = st ? st->head : NULL; p != NULL; p = p->next) {
    if (p->id == id) {
      if (p->kind == PK_FS)
        uv_cancel((uv_req_t *)&((fs_req *)p)->fs);  /* UV_EBUSY: running */
      else
        sf_cancel((sf_req *)p);
      break;
    }
  }
  return 0;
}

/*
** Fills in p (on the C stack: nothing is malloc'd yet, so an error leaks
** nothing) for the loop at loopidx: a new pending future (pushed) with
** the cancel callback, and its anchor in the loop. [-0, +1, m]
*/
static void newpending (lua_State *L, loom_loop *loop, int loopidx,
                        pending *p, int kind) {
  fs_state *st = getstate(L, loop);
  int i, fidx;
  loom__future_new(L, loop, loopidx);
  fidx = lua_gettop(L);
  for (i = 1; i <= LOOM_TCOUNT; i++)
    lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushinteger(L, (lua_Integer)(st->ids + 1));
  lua_pushcclosure(L, cancel_cb, LOOM_TCOUNT + 1);
  loom__future_add_callback(L, (loom_future *)lua_touserdata(L, fidx), fidx,
                            -1, LOOM_CBLUA);
  lua_pop(L, 1);
  lua_pushvalue(L, fidx);
  p->fut_ref = loom__anchor(L, loopidx);
  p->fut = (loom_future *)lua_touserdata(L, fidx);
  p->loop = loop;
  p->mainL = mainthread(L);
  p->id = ++st->ids;
  p->kind = (uint8_t)kind;
}

/*
** Makes a request of the loop at loopidx (its future pushed), for op,
** with the path(s) kept for messages. Not yet submitted nor listed.
** [-0, +1, m]
*/
static fs_req *newreq (lua_State *L, loom_loop *loop, int loopidx, int op,
                       const char *what, const char *path,
                       const char *path2) {
  size_t l1 = path ? strlen(path) : 0, l2 = path2 ? strlen(path2) : 0;
  pending p;
  fs_req *r;
  newpending(L, loop, loopidx, &p, PK_FS);
  r = (fs_req *)malloc(sizeof(fs_req) + l1 + l2 + 1);
  if (r == NULL) {
    loom__unanchor(L, loop, p.fut_ref);
    luaL_error(L, "not enough memory");
  }
  memset(r, 0, sizeof *r);
  r->p = p;
  r->str_ref = LUA_NOREF;
  r->fd = -1;
  r->op = (uint8_t)op;
  r->what = what;
  r->fs.data = r;
  if (path)
    memcpy(r->paths, path, l1 + 1);
  if (path2) {
    r->path2 = r->paths + l1 + 1;
    memcpy(r->path2, path2, l2 + 1);
  }
  return r;
}

/* Releases a finished request: references, libuv's memory, the file. */
static void freereq (loom_loop *loop, fs_req *r) {
  loom__unanchor(usable(loop), loop, r->p.fut_ref);
  if (r->str_ref != LUA_NOREF)
    luaL_unref(r->p.mainL, LUA_REGISTRYINDEX, r->str_ref);
  uv_fs_req_cleanup(&r->fs);
  if (r->file != NULL)
    file_unref(loop, r->file);
  free(r);
}

/*
** After the submission returned err: lists the request, or, when it
** failed (no callback will come), frees it and raises the OSError.
*/
static void submitted (lua_State *L, fs_req *r, int err) {
  if (err < 0) {
    loom_loop *loop = r->p.loop;
    const char *what = r->what;
    lua_pushstring(L, r->paths);  /* the paths outlive the request */
    if (r->path2)
      lua_pushstring(L, r->path2);
    else
      lua_pushnil(L);
    freereq(loop, r);
    pushfserror(L, err, what, lua_tostring(L, -2), lua_tostring(L, -1));
    lua_error(L);
  }
  listp(&r->p);
}

/* Pushes a File userdata for f (one more reference). [-0, +1, m] */
static void newfile (lua_State *L, fs_file *f) {
  file_ud *u = (file_ud *)lua_newuserdatauv(L, sizeof(file_ud), 0);
  u->f = NULL;
  luaL_setmetatable(L, FILE_MT);
  u->f = f;
  f->nrefs++;
}

static const char *typename (unsigned long mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "link";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char";
    case S_IFBLK: return "block";
    default: return "unknown";
  }
}

static void settime (lua_State *L, const char *k, const uv_timespec_t *t) {
  lua_pushnumber(L, (lua_Number)t->tv_sec + (lua_Number)t->tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void setint (lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* Pushes the table of a stat result. [-0, +1, m] */
static void pushstat (lua_State *L, const uv_stat_t *s) {
  lua_createtable(L, 0, 17);
  lua_pushstring(L, typename((unsigned long)s->st_mode));
  lua_setfield(L, -2, "type");
  setint(L, "size", s->st_size);
  setint(L, "mode", s->st_mode);
  setint(L, "perm", s->st_mode & 07777);
  setint(L, "ino", s->st_ino);
  setint(L, "dev", s->st_dev);
  setint(L, "rdev", s->st_rdev);
  setint(L, "nlink", s->st_nlink);
  setint(L, "uid", s->st_uid);
  setint(L, "gid", s->st_gid);
  setint(L, "blksize", s->st_blksize);
  setint(L, "blocks", s->st_blocks);
  settime(L, "atime", &s->st_atim);
  settime(L, "mtime", &s->st_mtim);
  settime(L, "ctime", &s->st_ctim);
  if (s->st_birthtim.tv_sec != 0 || s->st_birthtim.tv_nsec != 0)
    settime(L, "birthtime", &s->st_birthtim);
}

static const char *direnttype (uv_dirent_type_t t) {
  switch (t) {
    case UV_DIRENT_FILE: return "file";
    case UV_DIRENT_DIR: return "directory";
    case UV_DIRENT_LINK: return "link";
    case UV_DIRENT_FIFO: return "fifo";
    case UV_DIRENT_SOCKET: return "socket";
    case UV_DIRENT_CHAR: return "char";
    case UV_DIRENT_BLOCK: return "block";
    default: return "unknown";
  }
}

/* Pushes the names and the types of a scandir result (two lists).
** [-0, +2, m] */
static void pushdir (lua_State *L, uv_fs_t *req) {
  uv_dirent_t ent;
  int n = 0;
  lua_createtable(L, req->result > 0 ? (int)req->result : 0, 0);
  lua_createtable(L, req->result > 0 ? (int)req->result : 0, 0);
  while (uv_fs_scandir_next(req, &ent) != UV_EOF) {
    n++;
    lua_pushstring(L, ent.name);
    lua_rawseti(L, -3, n);
    lua_pushstring(L, direnttype(ent.type));
    lua_rawseti(L, -2, n);
  }
}

/*
** Completes the request (light userdata 1) whose callback ran: sets the
** future's results or its OSError. Runs under lua_pcall: it allocates.
*/
static int complete (lua_State *L) {
  fs_req *r = (fs_req *)lua_touserdata(L, 1);
  int n = 0;
  loom__anchored(L, r->p.loop, r->p.fut_ref);  /* 2: future */
  if (r->status < 0) {
    lua_getfield(L, 2, "set_exception");
    lua_pushvalue(L, 2);
    pushfserror(L, r->status, r->what, r->paths, r->path2);
    lua_call(L, 2, 0);
    return 0;
  }
  lua_getfield(L, 2, "set_result");
  lua_pushvalue(L, 2);
  switch (r->op) {
    case OP_OPEN: case OP_OPENSTAT:
      newfile(L, r->file);
      n = 1;
      break;
    case OP_FSTAT: case OP_STAT: case OP_LSTAT:
      pushstat(L, &r->fs.statbuf);
      n = 1;
      break;
    case OP_SCANDIR:
      pushdir(L, &r->fs);
      n = 2;
      break;
    case OP_MKDTEMP:
      lua_pushstring(L, r->fs.path);
      n = 1;
      break;
    case OP_READLINK: case OP_REALPATH:
      lua_pushstring(L, (const char *)r->fs.ptr);
      n = 1;
      break;
    case OP_FILL: case OP_WRITE: case OP_FSYNC:
      break;  /* the continuation reads the file's state */
    default:
      lua_pushboolean(L, 1);
      n = 1;
  }
  lua_call(L, n + 1, 0);
  return 0;
}

/* Sets the error at 2 (raised by complete) as the future's. */
static int complete_error (lua_State *L) {
  fs_req *r = (fs_req *)lua_touserdata(L, 1);
  loom__anchored(L, r->p.loop, r->p.fut_ref);
  lua_getfield(L, -1, "set_exception");
  lua_insert(L, -2);
  lua_pushvalue(L, 2);
  lua_call(L, 2, 0);
  return 0;
}

/*
** The end of every request, inside the loop's uv_run. A detached request
** (the loop is closing) or one whose future is no longer pending is only
** freed; otherwise its future is completed under lua_pcall on the
** thread running the loop, so no Lua error escapes into libuv.
*/
static void finish (fs_req *r) {
  loom_loop *loop = r->p.loop;
  lua_State *L = usable(loop);
  unlistp(&r->p);
  if (r->file != NULL && r->op != OP_OPEN && r->op != OP_OPENSTAT)
    settle(loop, r->file);
  if (L != NULL && r->p.fut != NULL && r->p.fut->state == LOOM_PENDING
      && lua_checkstack(L, 8)) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, complete);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK
        && r->p.fut->state == LOOM_PENDING) {
      lua_pushcfunction(L, complete_error);
      lua_pushlightuserdata(L, r);
      lua_pushvalue(L, -3);
      lua_pcall(L, 2, 0, 0);
    }
    lua_settop(L, top);
  }
  freereq(loop, r);
}

/* Submits the next part of a write: at most MAXREQ bytes. */
static int submit_write (loom_loop *loop, fs_req *r) {
  fs_file *f = r->file;
  size_t k = r->len - r->done;
  uv_buf_t b;
  if (k > MAXREQ)
    k = MAXREQ;
  b = uv_buf_init(r->data + r->done, (unsigned int)k);
  r->fs.data = r;
  return uv_fs_write(&loop->uv, &r->fs, r->fd, &b, 1,
                     (f->stream || f->append) ? -1
                     : r->off + (int64_t)r->done, fs_cb);
}

/* Submits a refill of the read buffer (r->len bytes at r->data). */
static int submit_fill (loom_loop *loop, fs_req *r) {
  uv_buf_t b = uv_buf_init(r->data, (unsigned int)r->len);
  r->fs.data = r;
  return uv_fs_read(&loop->uv, &r->fs, r->fd, &b, 1,
                    r->file->stream ? -1 : r->off, fs_cb);
}

/*
** Submits the request again as op (the next step of an open, the rest
** of a write, a read retried without an offset), unless the loop is
** closing or nobody waits any more. Returns whether it did; when the
** submission fails, the error becomes the request's status.
*/
static int again (fs_req *r, int op) {
  loom_loop *loop = r->p.loop;
  int err;
  if (loop == NULL || loop->closed || r->p.fut == NULL
      || r->p.fut->state != LOOM_PENDING)
    return 0;
  uv_fs_req_cleanup(&r->fs);
  r->op = (uint8_t)op;
  r->fs.data = r;
  if (op == OP_OPENSTAT)
    err = uv_fs_fstat(&loop->uv, &r->fs, r->fd, fs_cb);
  else if (op == OP_FILL)
    err = submit_fill(loop, r);
  else
    err = submit_write(loop, r);
  if (err < 0) {
    r->status = err;
    return 0;
  }
  return 1;
}

/*
** The libuv callback of every request. What the file's state learns
** (descriptor, bytes read, position) is recorded here, whether or not
** anybody still waits; then the request ends (finish), or goes on.
*/
static void fs_cb (uv_fs_t *req) {
  fs_req *r = (fs_req *)req->data;
  fs_file *f = r->file;
  ssize_t res = req->result;
  r->status = res < 0 ? (int)res : 0;
  switch (r->op) {
    case OP_OPEN:
      if (res >= 0) {
        f->fd = r->fd = (int)res;
        if (again(r, OP_OPENSTAT))
          return;
        r->status = 0;  /* opened, even if the fstat could not start */
      }
      break;
    case OP_OPENSTAT:  /* an fstat that fails does not fail the open */
      if (res == 0)
        f->stream = S_ISFIFO(req->statbuf.st_mode)
                    || S_ISSOCK(req->statbuf.st_mode);
      r->status = 0;
      break;
    case OP_FILL:
      if (res == UV_ESPIPE && !f->stream) {
        f->stream = 1;
        if (again(r, OP_FILL))
          return;
      }
      if (res > 0)
        f->rlen += (size_t)res;
      else if (res == 0)
        f->eof = 1;
      break;
    case OP_WRITE:
      if (res == UV_ESPIPE && !f->stream && r->done == 0) {
        f->stream = 1;
        if (again(r, OP_WRITE))
          return;
      }
      if (res >= 0) {
        r->done += (size_t)res;
        if (!f->append && !f->stream)
          f->pos += res;
        if (r->done < r->len) {
          if (res > 0 && again(r, OP_WRITE))
            return;
          if (r->status == 0)
            r->status = res == 0 ? UV_EIO : UV_ECANCELED;
        }
      }
      if (f->append && r->done > 0)
        f->atend = 1;
      break;
    case OP_FSTAT:
      if (res == 0 && f->atend) {  /* the end is known again */
        f->pos = (int64_t)req->statbuf.st_size;
        f->atend = 0;
      }
      break;
    default:
      break;
  }
  finish(r);
}

/* }====================================================== */


/*
** {======================================================
** Module functions
** =======================================================
*/

/* Raises for open's mode string unless it is io.open's: [rwa]+?b*, and
** loom also takes "x" (C11's exclusive create) with "w" or "a". */
static int checkmode (lua_State *L, int arg, const char *mode, int *append) {
  int flags, plus = 0, excl = 0;
  const char *p = mode;
  char kind = *p;
  if (kind != 'r' && kind != 'w' && kind != 'a')
    luaL_argerror(L, arg, "invalid mode");
  p++;
  if (*p == '+') {
    plus = 1;
    p++;
  }
  for (; *p != '\0'; p++) {
    if (*p == 'x' && kind != 'r')
      excl = 1;
    else if (*p != 'b')
      luaL_argerror(L, arg, "invalid mode");
  }
  if ((size_t)(p - mode) != lua_rawlen(L, arg))
    luaL_argerror(L, arg, "invalid mode");
  *append = kind == 'a';
  switch (kind) {
    case 'r': flags = plus ? O_RDWR : O_RDONLY; break;
    case 'w': flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC; break;
    default: flags = (plus ? O_RDWR : O_WRONLY) | O_CREAT | O_APPEND;
  }
  if (excl)
    flags |= O_EXCL;
  return flags;
}

/* open(path, [mode], [opts]) -> file: opts.mode, the permissions of a
** file it creates (default 0666, less the umask). */
static int fs_open (lua_State *L) {
  static const char *const keys[] = {"mode", NULL};
  const char *path = checkpath(L, 1);
  int append, flags, perm, loopidx, err;
  loom_loop *loop;
  fs_file *f;
  fs_req *r;
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 3);
    lua_pushliteral(L, "r");
    lua_replace(L, 2);
  }
  flags = checkmode(L, 2, luaL_checkstring(L, 2), &append);
  checkopts(L, 3, keys);
  perm = optperm(L, 3, 0666);
  loop = taskloop(L, "open", &loopidx);
  r = newreq(L, loop, loopidx, OP_OPEN, "open", path, NULL);
  lua_remove(L, loopidx);
  f = allocfile(path);
  if (f == NULL) {
    freereq(loop, r);
    return luaL_error(L, "not enough memory");
  }
  f->append = (uint8_t)append;
  r->file = f;
  err = uv_fs_open(&loop->uv, &r->fs, path, flags, perm, fs_cb);
  submitted(L, r, err);
  return await_top(L);
}

/* Submits a request on one path and awaits it: the body of most
** functions. */
#define PATHREQ(L, op, what, path, path2, call) do {                    \
    int loopidx_, err_;                                                 \
    loom_loop *loop = taskloop(L, what, &loopidx_);                     \
    fs_req *r = newreq(L, loop, loopidx_, op, what, path, path2);       \
    lua_remove(L, loopidx_);                                            \
    err_ = (call);                                                      \
    submitted(L, r, err_);                                              \
    return await_top(L);                                                \
  } while (0)

static int fs_stat (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_STAT, "stat", path, NULL,
          uv_fs_stat(&loop->uv, &r->fs, path, fs_cb));
}

static int fs_lstat (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_LSTAT, "lstat", path, NULL,
          uv_fs_lstat(&loop->uv, &r->fs, path, fs_cb));
}

/* mkdir(path, [opts]): opts.mode (default 0777, less the umask);
** opts.parents is loom.fs's (lua/loom/fs.lua). */
static int fs_mkdir (lua_State *L) {
  static const char *const keys[] = {"mode", "parents", NULL};
  const char *path = checkpath(L, 1);
  int perm;
  checkopts(L, 2, keys);
  perm = optperm(L, 2, 0777);
  optbool(L, 2, "parents");
  PATHREQ(L, OP_MKDIR, "mkdir", path, NULL,
          uv_fs_mkdir(&loop->uv, &r->fs, path, perm, fs_cb));
}

static int fs_rmdir (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_RMDIR, "rmdir", path, NULL,
          uv_fs_rmdir(&loop->uv, &r->fs, path, fs_cb));
}

static int fs_unlink (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_UNLINK, "unlink", path, NULL,
          uv_fs_unlink(&loop->uv, &r->fs, path, fs_cb));
}

static int fs_rename (lua_State *L) {
  const char *from = checkpath(L, 1);
  const char *to = checkpath(L, 2);
  PATHREQ(L, OP_RENAME, "rename", from, to,
          uv_fs_rename(&loop->uv, &r->fs, from, to, fs_cb));
}

/* scandir(path) -> names, types: two lists (loom.fs makes the
** iterator). */
static int fs_scandir (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_SCANDIR, "scandir", path, NULL,
          uv_fs_scandir(&loop->uv, &r->fs, path, 0, fs_cb));
}

/* mkdtemp(template) -> path: the template ends in XXXXXX. */
static int fs_mkdtemp (lua_State *L) {
  const char *tpl = checkpath(L, 1);
  size_t len = lua_rawlen(L, 1);
  if (len < 6 || strcmp(tpl + len - 6, "XXXXXX") != 0)
    luaL_argerror(L, 1, "template must end in XXXXXX");
  PATHREQ(L, OP_MKDTEMP, "mkdtemp", tpl, NULL,
          uv_fs_mkdtemp(&loop->uv, &r->fs, tpl, fs_cb));
}

/* copyfile(src, dst, [opts]): opts.exclusive (fail when dst exists),
** opts.ficlone (try a copy-on-write clone first). */
static int fs_copyfile (lua_State *L) {
  static const char *const keys[] = {"exclusive", "ficlone", NULL};
  const char *from = checkpath(L, 1);
  const char *to = checkpath(L, 2);
  int flags = 0;
  checkopts(L, 3, keys);
  if (optbool(L, 3, "exclusive"))
    flags |= UV_FS_COPYFILE_EXCL;
  if (optbool(L, 3, "ficlone"))
    flags |= UV_FS_COPYFILE_FICLONE;
  PATHREQ(L, OP_COPYFILE, "copyfile", from, to,
          uv_fs_copyfile(&loop->uv, &r->fs, from, to, flags, fs_cb));
}

static int fs_readlink (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_READLINK, "readlink", path, NULL,
          uv_fs_readlink(&loop->uv, &r->fs, path, fs_cb));
}

static int fs_realpath (lua_State *L) {
  const char *path = checkpath(L, 1);
  PATHREQ(L, OP_REALPATH, "realpath", path, NULL,
          uv_fs_realpath(&loop->uv, &r->fs, path, fs_cb));
}

/* chmod(path, mode): mode an integer or a string of octal digits. */
static int fs_chmod (lua_State *L) {
  const char *path = checkpath(L, 1);
  int perm;
  luaL_checkany(L, 2);
  perm = toperm(L, 2, 2, "mode");
  PATHREQ(L, OP_CHMOD, "chmod", path, NULL,
          uv_fs_chmod(&loop->uv, &r->fs, path, perm, fs_cb));
}

/* _fdfile(fd) -> file: a File over a descriptor it does not own (close
** and collection leave the descriptor open); loop:sendfile reads a bare
** descriptor through one. */
static int fs_fdfile (lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  file_ud *u;
  fs_file *f;
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1,
                "file descriptor must be a non-negative integer");
  u = (file_ud *)lua_newuserdatauv(L, sizeof(file_ud), 0);
  u->f = NULL;
  luaL_setmetatable(L, FILE_MT);
  f = allocfile("");
  if (f == NULL)
    return luaL_error(L, "not enough memory");
  f->fd = (int)fd;
  f->own = 0;
  u->f = f;  /* the userdata's reference */
  return 1;
}

/* _pending(loop): the number of requests in flight (for the specs). */
static int fs_pending (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  fs_state *st = (fs_state *)loop->fs_state;
  lua_Integer n = 0;
  pending *p;
  for (p = st ? st->head : NULL; p != NULL; p = p->next)
    n++;
  lua_pushinteger(L, n);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** File methods
** =======================================================
*/

/* The file structure of the File at 1, open and free. */
static fs_file *checkfile (lua_State *L, const char *fname) {
  file_ud *u = (file_ud *)luaL_checkudata(L, 1, FILE_MT);
  fs_file *f = u->f;
  if (f == NULL || f->fd < 0)
    luaL_error(L, "attempt to use a closed file");
  if (f->busy)
    luaL_error(L, "%s: the file is busy (a request on it is in flight)",
               fname);
  return f;
}

/* The file structure of the File at 1 after an await: it must still be
** open. */
static fs_file *stillopen (lua_State *L) {
  fs_file *f = ((file_ud *)lua_touserdata(L, 1))->f;
  if (f == NULL || f->fd < 0)
    luaL_error(L, "attempt to use a closed file");
  return f;
}

/*
** A request on the open, free file f, of the running loop (its future
** pushed); the file is busy until it ends. [-0, +1, v]
*/
static fs_req *filereq (lua_State *L, fs_file *f, int op,
                        const char *what, loom_loop **loopp) {
  int loopidx;
  loom_loop *loop = taskloop(L, what, &loopidx);
  fs_req *r = newreq(L, loop, loopidx, op, what, f->path, NULL);
  lua_remove(L, loopidx);
  r->file = f;
  f->nrefs++;
  r->fd = f->fd;
  *loopp = loop;
  return r;
}

/* Submitted: lists the request and marks the file busy, or raises. */
static void filesubmitted (lua_State *L, fs_req *r, int err) {
  fs_file *f = r->file;
  submitted(L, r, err);
  f->busy = 1;
}

enum { FMT_COUNT, FMT_ALL, FMT_LINE, FMT_LINENL };

/* The read format at i, as io.read has them; n gets a count. */
static int checkformat (lua_State *L, int i, lua_Integer *n) {
  const char *p;
  if (lua_type(L, i) == LUA_TNUMBER) {
    *n = luaL_checkinteger(L, i);
    luaL_argcheck(L, *n >= 0, i, "count must be >= 0");
    return FMT_COUNT;
  }
  p = luaL_checkstring(L, i);
  if (*p == '*')
    p++;  /* the formats of Lua 5.1 and 5.2 */
  switch (*p) {
    case 'a': return FMT_ALL;
    case 'l': return FMT_LINE;
    case 'L': return FMT_LINENL;
    case 'n':
      return luaL_argerror(L, i, "format 'n' is not supported");
    default:
      return luaL_argerror(L, i, "invalid format");
  }
}

/*
** Reads the format at i from the buffer: pushes the value (nil at the end
** of the file) and returns 1, or returns 0 with the bytes to read first
** in *want.
*/
static int readone (lua_State *L, fs_file *f, int i, size_t *want) {
  lua_Integer n = 0;
  size_t avail = f->rlen - f->roff;
  int fmt = checkformat(L, i, &n);
  switch (fmt) {
    case FMT_COUNT:
      if (n == 0) {  /* io.read(0): "" unless at the end */
        if (avail == 0 && !f->eof) {
          *want = RBUFSIZE;
          return 0;
        }
        if (avail == 0)
          lua_pushnil(L);
        else
          lua_pushliteral(L, "");
        return 1;
      }
      if ((lua_Unsigned)n <= avail || f->eof) {
        if (avail == 0)
          lua_pushnil(L);
        else
          take(L, f, (lua_Unsigned)n < avail ? (size_t)n : avail);
        return 1;
      }
      /* what is missing, in one request up to MAXFILL: a huge count
      ** on a small file must not allocate its size */
      *want = (lua_Unsigned)n - avail < RBUFSIZE ? RBUFSIZE
              : (lua_Unsigned)n - avail > MAXFILL ? MAXFILL
              : (size_t)((lua_Unsigned)n - avail);
      return 0;
    case FMT_LINE: case FMT_LINENL: {
      const char *nl = avail > f->scanned
                       ? (const char *)memchr(f->rbuf + f->roff + f->scanned,
                                              '\n', avail - f->scanned)
                       : NULL;
      if (nl != NULL) {
        size_t len = (size_t)(nl - (f->rbuf + f->roff));
        lua_pushlstring(L, f->rbuf + f->roff, len + (fmt == FMT_LINENL));
        consume(f, len + 1);
        return 1;
      }
      if (f->eof) {
        if (avail == 0)
          lua_pushnil(L);
        else
          take(L, f, avail);
        return 1;
      }
      f->scanned = avail;
      *want = RBUFSIZE;
      return 0;
    }
    default:  /* FMT_ALL */
      if (f->eof) {
        take(L, f, avail);
        return 1;
      }
      *want = avail < RBUFSIZE ? RBUFSIZE : avail > MAXFILL ? MAXFILL : avail;
      return 0;
  }
}

static int readk (lua_State *L, int status, lua_KContext ctx);

/* Starts the request that read (continuing in readk) awaits: the end of
** the file after an append (fstat), or a refill of want bytes. */
static int readmore (lua_State *L, fs_file *f, size_t want,
                     lua_KContext ctx) {
  loom_loop *loop;
  fs_req *r;
  int err;
  if (f->atend && !f->stream) {
    r = filereq(L, f, OP_FSTAT, "read", &loop);
    err = uv_fs_fstat(&loop->uv, &r->fs, r->fd, fs_cb);
  }
  else {
    if (want > MAXREQ)
      want = MAXREQ;
    if (!reserve(f, want))
      return luaL_error(L, "read: not enough memory");
    r = filereq(L, f, OP_FILL, "read", &loop);
    r->data = f->rbuf + f->rlen;
    r->len = want;
    r->off = f->pos + (int64_t)(f->rlen - f->roff);
    err = submit_fill(loop, r);
  }
  filesubmitted(L, r, err);
  return await_then(L, ctx, readk);
}

/*
** The loop of read: the file at 1, the formats at 2..ctx, the values
** read so far above them. Each format is read from the buffer, refilled
** from the file as needed; the first that fails (end of file) gives nil
** and ends the read, as io.read.
*/
static int readk (lua_State *L, int status, lua_KContext ctx) {
  int nargs = (int)ctx;
  (void)status;
  for (;;) {
    int i = lua_gettop(L) - nargs + 2;  /* the next format */
    fs_file *f;
    size_t want = 0;
    if (i > nargs)
      break;
    f = stillopen(L);
    if ((f->atend && !f->stream) || !readone(L, f, i, &want))
      return readmore(L, f, want, ctx);
    if (lua_isnil(L, -1))
      break;
  }
  return lua_gettop(L) - nargs;
}

/* file:read(...): io.read's formats: a count, "a", "l", "L"; "l" by
** default. */
static int file_read (lua_State *L) {
  fs_file *f = checkfile(L, "read");
  int n = lua_gettop(L), i;
  lua_Integer cnt;
  if (n == 1) {
    lua_pushliteral(L, "l");
    n = 2;
  }
  for (i = 2; i <= n; i++)
    checkformat(L, i, &cnt);
  f->eof = 0;  /* a file may have grown since the last read saw its end */
  return readk(L, LUA_OK, (lua_KContext)n);
}

static int self_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_settop(L, 1);
  return 1;
}

/* file:write(...): strings and numbers, as io.write; returns the file. */
static int file_write (lua_State *L) {
  fs_file *f = checkfile(L, "write");
  int n = lua_gettop(L), i;
  loom_loop *loop;
  fs_req *r;
  size_t len;
  for (i = 2; i <= n; i++)
    if (lua_type(L, i) != LUA_TNUMBER)
      luaL_checklstring(L, i, NULL);
  if (n > 2 || (n == 2 && lua_type(L, 2) != LUA_TSTRING)) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (i = 2; i <= n; i++) {
      if (lua_type(L, i) == LUA_TNUMBER) {
        char num[64];
        int k = lua_isinteger(L, i)
                ? snprintf(num, sizeof num, LUA_INTEGER_FMT,
                           (LUAI_UACINT)lua_tointeger(L, i))
                : snprintf(num, sizeof num, LUA_NUMBER_FMT,
                           (LUAI_UACNUMBER)lua_tonumber(L, i));
        luaL_addlstring(&b, num, (size_t)k);
      }
      else {
        size_t l;
        const char *s = lua_tolstring(L, i, &l);
        luaL_addlstring(&b, s, l);
      }
    }
    luaL_pushresult(&b);
  }
  else if (n < 2)
    lua_pushliteral(L, "");
  else
    lua_pushvalue(L, 2);
  lua_tolstring(L, -1, &len);
  if (len == 0) {
    lua_settop(L, 1);
    return 1;
  }
  dropbuf(f);
  r = filereq(L, f, OP_WRITE, "write", &loop);  /* future above the data */
  lua_pushvalue(L, -2);
  r->str_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r->data = (char *)lua_tostring(L, -2);  /* anchored by str_ref */
  r->len = len;
  r->off = f->pos;
  filesubmitted(L, r, submit_write(loop, r));
  return await_then(L, 0, self_k);
}

static int setpos (lua_State *L, fs_file *f, int64_t base, lua_Integer off) {
  if ((off > 0 && base > INT64_MAX - off) || base + off < 0)
    return fserror(L, UV_EINVAL, "seek", f->path);
  f->pos = base + off;
  f->atend = 0;
  dropbuf(f);
  lua_pushinteger(L, (lua_Integer)f->pos);
  return 1;
}

/* After the fstat of seek: the file at 1, whence at 2, offset at 3, the
** stat table at 4. */
static int seek_k (lua_State *L, int status, lua_KContext ctx) {
  fs_file *f = stillopen(L);
  int64_t size;
  (void)status; (void)ctx;
  lua_getfield(L, 4, "size");
  size = (int64_t)lua_tointeger(L, -1);
  return setpos(L, f, lua_tointeger(L, 2) == 2 ? size : f->pos,
                lua_tointeger(L, 3));
}

/* file:seek([whence [, offset]]) -> position, as io's seek: "set",
** "cur" (default), "end". */
static int file_seek (lua_State *L) {
  static const char *const whences[] = {"set", "cur", "end", NULL};
  fs_file *f = checkfile(L, "seek");
  size_t wlen;
  const char *w = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &wlen)
                                                : NULL;
  int op;
  if (w != NULL && strlen(w) != wlen)
    luaL_argerror(L, 2, "whence contains a zero byte");
  op = luaL_checkoption(L, 2, "cur", whences);
  lua_Integer off = luaL_optinteger(L, 3, 0);
  loom_loop *loop;
  fs_req *r;
  if (f->stream)
    return fserror(L, UV_ESPIPE, "seek", f->path);
  if (op == 0)
    return setpos(L, f, 0, off);
  if (op == 1 && !f->atend)
    return setpos(L, f, f->pos, off);
  lua_settop(L, 1);
  lua_pushinteger(L, op);
  lua_pushinteger(L, off);
  r = filereq(L, f, OP_FSTAT, "seek", &loop);
  filesubmitted(L, r, uv_fs_fstat(&loop->uv, &r->fs, r->fd, fs_cb));
  lua_getfield(L, -1, "await");
  lua_insert(L, -2);
  lua_callk(L, 1, 1, 0, seek_k);
  return seek_k(L, LUA_OK, 0);
}

/* file:sync(): fsync(2); returns the file. */
static int file_sync (lua_State *L) {
  fs_file *f = checkfile(L, "sync");
  loom_loop *loop;
  fs_req *r = filereq(L, f, OP_FSYNC, "sync", &loop);
  filesubmitted(L, r, uv_fs_fsync(&loop->uv, &r->fs, r->fd, fs_cb));
  return await_then(L, 0, self_k);
}

/* file:flush(): writes go straight to the system, so there is nothing to
** flush; returns the file, as io's flush. */
static int file_flush (lua_State *L) {
  checkfile(L, "flush");
  lua_settop(L, 1);
  return 1;
}

/* file:stat() -> table (fstat). */
static int file_stat (lua_State *L) {
  fs_file *f = checkfile(L, "stat");
  loom_loop *loop;
  fs_req *r = filereq(L, f, OP_FSTAT, "stat", &loop);
  filesubmitted(L, r, uv_fs_fstat(&loop->uv, &r->fs, r->fd, fs_cb));
  return await_top(L);
}

static int file_fileno (lua_State *L) {
  file_ud *u = (file_ud *)luaL_checkudata(L, 1, FILE_MT);
  if (u->f == NULL || u->f->fd < 0)
    return luaL_error(L, "attempt to use a closed file");
  lua_pushinteger(L, u->f->fd);
  return 1;
}

/*
** Closes f without waiting: a descriptor a request in flight uses waits
** for it to end (the zombie); else it is closed on the pool of loop, or
** here when no loop can take it.
*/
static void release (loom_loop *loop, fs_file *f) {
  if (f->fd < 0)
    return;
  if (f->own) {
    if (f->busy)
      f->zombie = f->fd;
    else
      closefd(loop, f->fd);
  }
  f->fd = -1;
  if (!f->busy) {
    dropbuf(f);
    free(f->rbuf);
    f->rbuf = NULL;
    f->rcap = 0;
  }
}

static int true_k (lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_pushboolean(L, 1);
  return 1;
}

/*
** file:close() -> true. Inside a task it waits for close(2) and raises
** its error; elsewhere, or while a request on the file is in flight, the
** close happens without waiting. Closing a closed file does nothing.
*/
static int file_close (lua_State *L) {
  file_ud *u = (file_ud *)luaL_checkudata(L, 1, FILE_MT);
  fs_file *f = u->f;
  loom_loop *loop;
  fs_req *r;
  int fd, err;
  if (f == NULL || f->fd < 0)
    return true_k(L, LUA_OK, 0);
  if (!f->own || f->busy || !canawait(L)) {
    release(loom__running(), f);
    return true_k(L, LUA_OK, 0);
  }
  lua_settop(L, 1);
  r = filereq(L, f, OP_CLOSE, "close", &loop);
  fd = f->fd;
  err = uv_fs_close(&loop->uv, &r->fs, fd, fs_cb);
  if (err < 0)  /* a descriptor is closed whatever happens */
    close(fd);
  f->fd = -1;
  dropbuf(f);
  filesubmitted(L, r, err);
  return await_then(L, 0, true_k);
}

/* __close: close(), which waits inside a task. */
static int file_tbc (lua_State *L) {
  lua_settop(L, 1);
  return file_close(L);
}

/* __gc: closes the descriptor without waiting, drops the reference. */
static int file_gc (lua_State *L) {
  file_ud *u = (file_ud *)lua_touserdata(L, 1);
  fs_file *f = u->f;
  loom_loop *loop = loom__running();
  if (f == NULL)
    return 0;
  u->f = NULL;
  release(loop, f);
  file_unref(loop, f);
  return 0;
}

static int file_tostring (lua_State *L) {
  file_ud *u = (file_ud *)luaL_checkudata(L, 1, FILE_MT);
  if (u->f == NULL || u->f->fd < 0)
    lua_pushfstring(L, "%s (closed) %p", FILE_MT, (void *)u);
  else if (u->f->path[0] != '\0')
    lua_pushfstring(L, "%s (%s) %p", FILE_MT, u->f->path, (void *)u);
  else
    lua_pushfstring(L, "%s (fd %d) %p", FILE_MT, u->f->fd, (void *)u);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** sendfile
** =======================================================
*/

/*
** loop:sendfile's native path. libuv's uv_fs_sendfile cannot serve here:
** on Linux, 1.44 tries copy_file_range first, which refuses a socket,
** and falls back to copying 8 KiB at a time, blocking the pool thread in
** poll() while the peer does not read. So the pool runs sendfile(2)
** itself, on duplicates of both descriptors (the transport may close
** meanwhile; our socket descriptor stays valid, and the numbers are never
** reused under a pool thread): each job sends until the socket is full
** (EAGAIN, it is non-blocking) or 64 MiB are sent, and a uv_poll_t on the
** duplicate waits until the socket takes more before the next job. The
** transport's write queue is empty when it starts (loom.fs waits for it
** first), and writes raise until it ends, so bytes never interleave.
*/

static int sf_cancelled (sf_req *sf) {
  return sf->p.fut == NULL || sf->p.fut->state != LOOM_PENDING;
}

/*
** One pool job. sendfile(2) has no MSG_NOSIGNAL: on a socket the peer
** reset, the kernel sends this thread SIGPIPE, which would kill the
** process where nobody ignores it (a plain lua5.4). So SIGPIPE is blocked
** in this thread for the job, and one it raised is taken back with
** sigtimedwait before the mask is restored.
*/
static void sf_work (uv_work_t *w) {
  sf_req *sf = (sf_req *)w->data;
  int64_t round = 0;
  sigset_t pipeset, oldset, pend;
  int pipe_was_pending;
  sigemptyset(&pipeset);
  sigaddset(&pipeset, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipeset, &oldset);
  sigpending(&pend);
  pipe_was_pending = sigismember(&pend, SIGPIPE);
  sf->again = 0;
  while (sf->left != 0 && round < SF_ROUND) {
    size_t n = (sf->left < 0 || sf->left > SF_CHUNK) ? SF_CHUNK
                                                     : (size_t)sf->left;
    off_t o = (off_t)sf->off;
    ssize_t k = sendfile(sf->outfd, sf->infd, &o, n);
    if (k > 0) {
      sf->off = (int64_t)o;
      sf->sent += k;
      round += k;
      if (sf->left > 0)
        sf->left -= k;
    }
    else if (k == 0) {
      sf->eof = 1;
      break;
    }
    else if (errno == EAGAIN) {
      sf->again = 1;
      break;
    }
    else if (errno != EINTR) {
      /* as asyncio: a failure before any byte went means sendfile(2)
      ** cannot send this file (not mmap-able, a pipe: ESPIPE, ...): the
      ** caller falls back to reading and writing */
      if (sf->sent == 0 && (errno == EINVAL || errno == ENOSYS
                            || errno == EOPNOTSUPP || errno == ENOTSOCK
                            || errno == ESPIPE))
        sf->notavail = 1;
      sf->err = -errno;
      break;
    }
  }
  if (sf->err == -EPIPE && !pipe_was_pending) {
    struct timespec zero = {0, 0};
    sigtimedwait(&pipeset, NULL, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &oldset, NULL);
}

static int sf_complete (lua_State *L) {
  sf_req *sf = (sf_req *)lua_touserdata(L, 1);
  if (sf->wait_ref != LUA_NOREF) {
    loom__anchored(L, sf->p.loop, sf->wait_ref);
    lua_getfield(L, -1, "set_result");
    lua_insert(L, -2);
    lua_call(L, 1, 0);
  }
  if (sf_cancelled(sf))
    return 0;
  loom__anchored(L, sf->p.loop, sf->p.fut_ref);  /* 2 */
  if (sf->notavail || sf->err < 0 || (sf->left != 0 && !sf->eof)) {
    lua_getfield(L, 2, "set_exception");
    lua_pushvalue(L, 2);
    if (sf->notavail) {
      lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
      lua_getfield(L, -1, "SendfileNotAvailableError");
      lua_remove(L, -2);
      lua_pushfstring(L, "sendfile(2) cannot send this file: %s",
                      uv_strerror(sf->err));
      lua_call(L, 1, 1);
    }
    else  /* an error, or the transport closed first */
      pushfserror(L, sf->err < 0 ? sf->err : UV_EPIPE, "sendfile", NULL,
                  NULL);
    lua_call(L, 2, 0);
    return 0;
  }
  lua_getfield(L, 2, "set_result");
  lua_pushvalue(L, 2);
  lua_pushinteger(L, (lua_Integer)sf->sent);
  lua_call(L, 2, 0);
  return 0;
}

static void sf_givefile (sf_req *sf);

/* The end, once the pool job is over and the poll handle closed: closes
** our descriptors, completes the futures, frees. */
static void sf_final (sf_req *sf) {
  loom_loop *loop = sf->p.loop;
  lua_State *L = usable(loop);
  close(sf->outfd);
  close(sf->infd);
  unlistp(&sf->p);
  sf_givefile(sf);
  if (L != NULL && lua_checkstack(L, 8)) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, sf_complete);
    lua_pushlightuserdata(L, sf);
    lua_pcall(L, 1, 0, 0);
    lua_settop(L, top);
  }
  loom__unanchor(L, loop, sf->p.fut_ref);
  loom__unanchor(L, loop, sf->wait_ref);
  if (sf->file != NULL)
    file_unref(loop, sf->file);
  free(sf);
}

static void sf_close_cb (uv_handle_t *h) {
  sf_req *sf = (sf_req *)h->data;
  sf->pollclosed = 1;
  if (!sf->working)
    sf_final(sf);
}

/* Gives the file back, once: it is where the sent bytes end. */
static void sf_givefile (sf_req *sf) {
  if (sf->file == NULL || sf->filedone)
    return;
  sf->filedone = 1;
  sf->file->pos = sf->off;
  dropbuf(sf->file);
  settle(sf->p.loop, sf->file);
}

/*
** No more jobs: gives the transport and the file back (the file is where
** the sent bytes end, whatever the outcome, as in asyncio), closes the
** poll handle; the rest waits for the job in flight, which only the
** shutdown leaves running here. Calls no Lua.
*/
static void sf_end (sf_req *sf) {
  if (sf->ending)
    return;
  sf->ending = 1;
  if (sf->c != NULL) {
    sf->c->sending = NULL;
    sf->c = NULL;
  }
  if (!sf->working)
    sf_givefile(sf);
  uv_close((uv_handle_t *)&sf->poll, sf_close_cb);
}

static void sf_after (uv_work_t *w, int status);

static void sf_queue (sf_req *sf) {
  int r = uv_queue_work(&sf->p.loop->uv, &sf->work, sf_work, sf_after);
  if (r < 0) {
    sf->err = r;
    sf_end(sf);
  }
  else
    sf->working = 1;
}

/* The socket takes more, or has an error (libuv reports POLLERR as
** UV_EBADF): the next job goes on, or meets the socket's own error. */
static void sf_poll_cb (uv_poll_t *h, int status, int events) {
  sf_req *sf = (sf_req *)h->data;
  (void)events;
  uv_poll_stop(h);
  if (status < 0)
    sf->pollerr = status;
  if (sf->c == NULL || sf_cancelled(sf))
    sf_end(sf);
  else
    sf_queue(sf);
}

static void sf_after (uv_work_t *w, int status) {
  sf_req *sf = (sf_req *)w->data;
  int r;
  sf->working = 0;
  if (status == UV_ECANCELED && sf->err == 0)
    sf->err = UV_ECANCELED;
  if (sf->ending) {
    if (sf->pollclosed)
      sf_final(sf);
    return;
  }
  if (sf->err < 0 || sf->eof || sf->left == 0 || sf->c == NULL
      || sf->p.loop == NULL || sf_cancelled(sf)) {
    sf_end(sf);
    return;
  }
  if (!sf->again) {  /* sent a round: let the loop breathe, go on */
    sf_queue(sf);
    return;
  }
  if (sf->pollerr < 0) {  /* full after the poll saw an error: give up */
    sf->err = sf->pollerr;
    sf_end(sf);
    return;
  }
  r = uv_poll_start(&sf->poll, UV_WRITABLE, sf_poll_cb);
  if (r < 0) {
    sf->err = r;
    sf_end(sf);
  }
}

/* The future was cancelled: stops after the job in flight. */
static void sf_cancel (sf_req *sf) {
  if (sf->working)
    uv_cancel((uv_req_t *)&sf->work);  /* UV_EBUSY: running */
  else
    sf_end(sf);
}

/* stream.c: the transport closed (its close callback). No Lua here. */
void loom__sendfile_lost (sf_req *sf) {
  sf->c = NULL;
  if (!sf->working)
    sf_end(sf);
}

/*
** _sendfile(transport, file, offset, [count]) -> bytes sent: the native
** path of loop:sendfile (lua/loom/fs.lua checks the arguments and falls
** back to reading and writing on SendfileNotAvailableError). file is a
** File or a descriptor. Returns false without sending when the
** transport's write queue is not empty yet. Awaits.
*/
static int fs_sendfile (lua_State *L) {
  loom_tcp_ud *u = (loom_tcp_ud *)luaL_testudata(L, 1, TRANSPORT_MT);
  file_ud *fu = (file_ud *)luaL_testudata(L, 2, FILE_MT);
  lua_Integer off = luaL_checkinteger(L, 3);
  lua_Integer count = luaL_optinteger(L, 4, -1);
  fs_file *f = NULL;
  loom_conn *c;
  loom_loop *loop;
  pending p;
  sf_req *sf;
  int srcfd, sockfd, infd, outfd, loopidx, r;
  if (u == NULL)
    return luaL_typeerror(L, 1, TRANSPORT_MT);
  if (fu != NULL) {
    f = fu->f;
    if (f == NULL || f->fd < 0)
      return luaL_error(L, "attempt to use a closed file");
    if (f->busy)
      return luaL_error(L, "sendfile: the file is busy (a request on it "
                        "is in flight)");
    srcfd = f->fd;
  }
  else {
    lua_Integer fd = luaL_checkinteger(L, 2);
    luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 2,
                  "file descriptor must be a non-negative integer");
    srcfd = (int)fd;
  }
  luaL_argcheck(L, off >= 0, 3, "offset must be >= 0");
  luaL_argcheck(L, count == -1 || count > 0, 4, "count must be > 0");
  c = u->c;
  if (c == NULL || c->closing || c->closed)
    return luaL_error(L, "sendfile: the transport is closing");
  if (c->sending != NULL)
    return luaL_error(L, "sendfile: another sendfile on this transport is "
                      "in progress");
  if (c->nwrites > 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  loop = taskloop(L, "sendfile", &loopidx);
  r = uv_fileno((uv_handle_t *)&c->h, &sockfd);
  if (r < 0)
    return fserror(L, r, "sendfile", NULL);
  newpending(L, loop, loopidx, &p, PK_SENDFILE);
  lua_remove(L, loopidx);
  sf = (sf_req *)calloc(1, sizeof *sf);
  infd = sf == NULL ? -1 : fcntl(srcfd, F_DUPFD_CLOEXEC, 0);
  outfd = infd < 0 ? -1 : fcntl(sockfd, F_DUPFD_CLOEXEC, 0);
  r = sf == NULL ? UV_ENOMEM
      : outfd < 0 ? uv_translate_sys_error(errno)
      : uv_poll_init(&loop->uv, &sf->poll, outfd);
  if (r < 0) {
    if (infd >= 0)
      close(infd);
    if (outfd >= 0)
      close(outfd);
    free(sf);
    loom__unanchor(L, loop, p.fut_ref);
    return fserror(L, r, "sendfile", NULL);
  }
  sf->p = p;
  sf->wait_ref = LUA_NOREF;
  sf->infd = infd;
  sf->outfd = outfd;
  sf->poll.data = sf->work.data = sf;
  sf->off = off;
  sf->left = count;
  r = uv_queue_work(&loop->uv, &sf->work, sf_work, sf_after);
  if (r < 0) {  /* the close callback frees it: unlisted, no Lua */
    sf->p.loop = NULL;
    sf->ending = 1;
    uv_close((uv_handle_t *)&sf->poll, sf_close_cb);
    return fserror(L, r, "sendfile", NULL);
  }
  sf->working = 1;
  listp(&sf->p);
  sf->c = c;
  c->sending = sf;
  if (f != NULL) {
    sf->file = f;
    f->nrefs++;
    f->busy = 1;
  }
  return await_top(L);
}

/*
** _sendfile_wait(transport) -> a future completed once the sendfile in
** progress on the transport has ended (its pool job over), or nil when
** none is. loop:sendfile waits on it after a cancellation, as asyncio's
** sendfile gives the transport back before it raises.
*/
static int fs_sendfile_wait (lua_State *L) {
  loom_tcp_ud *u = (loom_tcp_ud *)luaL_checkudata(L, 1, TRANSPORT_MT);
  sf_req *sf = u->c != NULL ? u->c->sending : NULL;
  int loopidx;
  loom_loop *loop;
  if (sf == NULL || sf->ending)
    return 0;
  loop = taskloop(L, "sendfile", &loopidx);
  if (sf->p.loop != loop)
    return 0;
  if (sf->wait_ref == LUA_NOREF) {
    loom__future_new(L, loop, loopidx);
    sf->wait_ref = loom__anchor(L, loopidx);
  }
  loom__anchored(L, loop, sf->wait_ref);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Shutdown and registration
** =======================================================
*/

/*
** Called by close() and __gc of the loop, marked closed, before its last
** uv_run: asks libuv to drop every request not started, forgets the
** futures' anchors (their table went with the loop's user values) and
** detaches the requests; their callbacks, run by that uv_run, only free
** them. Sendfiles give their transports back and close their poll
** handles now, before the loop closes every handle left. Must run before
** loom__stream_shutdown, whose close callbacks would otherwise reach
** the sendfiles.
*/
void loom__fs_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  fs_state *st = (fs_state *)loop->fs_state;
  pending *p, *next;
  (void)L;
  (void)loopidx;
  if (st == NULL)
    return;
  for (p = st->head; p != NULL; p = next) {
    next = p->next;
    if (p->kind == PK_FS)
      uv_cancel((uv_req_t *)&((fs_req *)p)->fs);
    p->fut_ref = LUA_NOREF;  /* its table went with the loop's */
    if (p->kind == PK_SENDFILE)
      ((sf_req *)p)->wait_ref = LUA_NOREF;
    p->fut = NULL;
    p->loop = NULL;
    p->prev = p->next = NULL;
    if (p->kind == PK_SENDFILE) {
      sf_req *sf = (sf_req *)p;
      if (sf->working)
        uv_cancel((uv_req_t *)&sf->work);
      sf_end(sf);
    }
  }
  free(st);
  loop->fs_state = NULL;
}

static const luaL_Reg file_methods[] = {
  {"read", file_read},
  {"write", file_write},
  {"seek", file_seek},
  {"sync", file_sync},
  {"flush", file_flush},
  {"stat", file_stat},
  {"fileno", file_fileno},
  {"close", file_close},
  {NULL, NULL}
};

static const luaL_Reg file_metamethods[] = {
  {"__gc", file_gc},
  {"__close", file_tbc},
  {"__tostring", file_tostring},
  {NULL, NULL}
};

static const luaL_Reg fs_functions[] = {
  {"open", fs_open},
  {"stat", fs_stat},
  {"lstat", fs_lstat},
  {"mkdir", fs_mkdir},
  {"rmdir", fs_rmdir},
  {"unlink", fs_unlink},
  {"rename", fs_rename},
  {"scandir", fs_scandir},
  {"mkdtemp", fs_mkdtemp},
  {"copyfile", fs_copyfile},
  {"readlink", fs_readlink},
  {"realpath", fs_realpath},
  {"chmod", fs_chmod},
  {"_fdfile", fs_fdfile},
  {"_sendfile", fs_sendfile},
  {"_sendfile_wait", fs_sendfile_wait},
  {"_pending", fs_pending},
  {NULL, NULL}
};

/* Opens the File type and the table fs (of the C functions) into the
** module table on top. */
int loom__open_fs (lua_State *L) {
  luaL_newmetatable(L, FILE_MT);
  loom__setfuncs(L, file_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, file_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  lua_newtable(L);
  loom__setfuncs(L, fs_functions);
  lua_setfield(L, -2, "fs");
  return 0;
}

/* }====================================================== */
