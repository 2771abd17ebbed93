/*
** process.c
** Child processes with asyncio's subprocess protocol API:
** loop:subprocess_exec, loop:subprocess_shell and the
** loom.SubprocessTransport. The child's stdio pipes are stream transports
** of stream.c; libuv reaps the child (its SIGCHLD watcher) and reports
** the exit.
*/

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stream.h"

#define PROC_MT "loom.SubprocessTransport"
#define PIPEPROTO_MT "loom.SubprocessPipeProtocol"

/* What opts.stdin, stdout and stderr take: asyncio's values. */
#define LOOM_PIPE    (-1)
#define LOOM_STDOUT  (-2)
#define LOOM_DEVNULL (-3)
#define LOOM_INHERIT 0        /* nil */

/*
** Memory and lifetime (STYLE 3, scheme a). The transport userdata (proc)
** points to a malloc'd phandle holding the uv_process_t while the child
** runs; the exit callback closes the handle (libuv has reaped the child
** then) and the close callback frees it. The pid and the return code
** stay in the userdata.
**
** A transport is pinned from the spawn until it is finished: the child
** exited and every pipe transport is lost; then connection_lost is
** called and the pin dropped. The pin is an entry [light userdata proc]
** = transport in a table the loop keeps for this file
** (loom__loop_table), so the exit callback finds the transport, and the
** shutdown hook finds every live one when the loop closes.
**
** Each pipe transport (stream.c) has a loom.SubprocessPipeProtocol,
** whose methods forward to the subprocess protocol with the pipe's fd.
** Protocol methods are called in protected calls; an error goes to the
** loop's exception handler and nothing else happens (asyncio runs them
** as loop callbacks).
**
** A child whose handle is closed before its exit (the loop closes, or
** goes away with lua_close) is killed and listed as an orphan: libuv no
** longer waits for it, so this file reaps it (waitpid on its pid only,
** never -1, which would steal other handles' children from libuv).
*/

typedef struct proc proc;

typedef struct phandle {
  uv_process_t h;           /* first: the close callback frees it */
  proc *p;                  /* NULL once the userdata is finalized */
} phandle;

struct proc {
  phandle *ph;              /* the handle while the child runs, or NULL */
  loom_loop *loop;
  int pid;
  int returncode;           /* once exited */
  int npipes;               /* pipe transports not yet lost */
  uint8_t exited;           /* the exit was reported */
  uint8_t closed;           /* close() was called, or the loop closed */
  uint8_t pinned;           /* in the loop's table */
  uint8_t finished;         /* connection_lost was called, or never will */
};

/* User values of a transport. */
enum { PUV_PROTO = 1, PUV_LOOP, PUV_PIPE0, PUV_COUNT = PUV_PIPE0 + 2 };

typedef struct pipeproto {
  int fd;                   /* 0, 1 or 2 */
  int lost;                 /* connection_lost came */
} pipeproto;                /* user value 1: the subprocess transport */

static const char prockey = 0;  /* the loop's table of live transports */


/*
** {======================================================
** Orphans
** =======================================================
*/

static uv_once_t orphan_once = UV_ONCE_INIT;
static uv_mutex_t orphan_mutex;
static int *orphans;        /* pids to reap; shared by every thread */
static int norphans, orphancap;

static void orphan_init (void) {
  if (uv_mutex_init(&orphan_mutex) != 0)
    abort();
}

/*
** Kills the child pid, whose handle is being closed before its exit was
** seen, and lists it to be reaped. Without memory for the list it stays
** a zombie until the program exits.
*/
static void orphan (int pid) {
  uv_kill(pid, SIGKILL);
  uv_once(&orphan_once, orphan_init);
  uv_mutex_lock(&orphan_mutex);
  if (norphans == orphancap) {
    int cap = orphancap ? 2 * orphancap : 16;
    int *a = (int *)realloc(orphans, (size_t)cap * sizeof(int));
    if (a != NULL) {
      orphans = a;
      orphancap = cap;
    }
  }
  if (norphans < orphancap)
    orphans[norphans++] = pid;
  uv_mutex_unlock(&orphan_mutex);
}

/* Reaps the orphans that have exited; returns how many are left. */
static int reap_orphans (void) {
  int i = 0, left;
  uv_once(&orphan_once, orphan_init);
  uv_mutex_lock(&orphan_mutex);
  while (i < norphans) {
    pid_t r = waitpid(orphans[i], NULL, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR))
      i++;
    else  /* reaped, or not a child of ours any more */
      orphans[i] = orphans[--norphans];
  }
  if (norphans == 0 && orphans != NULL) {
    free(orphans);
    orphans = NULL;
    orphancap = 0;
  }
  left = norphans;
  uv_mutex_unlock(&orphan_mutex);
  return left;
}

/*
** Gives the children killed by a loop that closes a moment to die, so
** that closing a loop leaves no zombie behind: polls every millisecond,
** for at most 100 ms. What is left is reaped by later spawns and exits.
*/
static void reap_soon (void) {
  struct timespec ms = {0, 1000000};
  int i;
  for (i = 0; i < 100 && reap_orphans() > 0; i++)
    nanosleep(&ms, NULL);
}

/* }====================================================== */


/*
** {======================================================
** Protocol calls
** =======================================================
*/

/* The thread running the loop inside uv_run, or NULL when Lua must not
** be called (loop closed or not running). */
static lua_State *usable (loom_loop *loop) {
  return (loop->L != NULL && !loop->closed) ? loop->L : NULL;
}

/* callproto(proto, lname, args...): proto[name](proto, args...), name
** the C string in light userdata lname; nothing when it is missing. */
static int callproto (lua_State *L) {
  const char *name = (const char *)lua_touserdata(L, 2);
  int n = lua_gettop(L) - 2;
  if (lua_getfield(L, 1, name) == LUA_TNIL)
    return 0;
  lua_insert(L, 1);   /* method, proto, lname, args */
  lua_remove(L, 3);   /* method, proto, args */
  lua_call(L, n + 1, 0);
  return 0;
}

/* report(loop, err, transport, proto, lname): reports a failed protocol
** call (err as loom__traceback wraps it) to the loop's handler. */
static int report (lua_State *L) {
  lua_settop(L, 5);
  lua_pushfstring(L, "Exception in protocol.%s() of a subprocess "
                  "transport", (const char *)lua_touserdata(L, 5));
  return loom__protocol_report(L);
}

/*
** Calls the method name of the protocol of the transport at tidx with
** the nargs values on top, protected; an error goes to the loop's
** exception handler. Allocates nothing outside protected calls, but for
** the stack. [-nargs, +0, -]
*/
static void protocall (lua_State *L, int tidx, const char *name, int nargs) {
  int base;
  tidx = lua_absindex(L, tidx);
  base = lua_gettop(L) - nargs;
  if (!lua_checkstack(L, 10)) {
    lua_settop(L, base);
    return;
  }
  lua_pushcfunction(L, loom__traceback);
  lua_insert(L, base + 1);
  lua_pushcfunction(L, callproto);
  lua_insert(L, base + 2);
  lua_getiuservalue(L, tidx, PUV_PROTO);
  lua_insert(L, base + 3);
  lua_pushlightuserdata(L, (void *)name);
  lua_insert(L, base + 4);
  if (lua_pcall(L, nargs + 2, 0, base + 1) != LUA_OK) {
    lua_pushcfunction(L, report);   /* base + 2: the wrapped error */
    lua_getiuservalue(L, tidx, PUV_LOOP);
    lua_pushvalue(L, base + 2);
    lua_pushvalue(L, tidx);
    lua_getiuservalue(L, tidx, PUV_PROTO);
    lua_pushlightuserdata(L, (void *)name);
    lua_pcall(L, 5, 0, 0);
  }
  lua_settop(L, base);
}

/* Pins the transport p at tidx in the table of the loop at loopidx.
** [-0, +0, m] */
static void pin (lua_State *L, proc *p, int tidx, int loopidx) {
  tidx = lua_absindex(L, tidx);
  loom__loop_table(L, loopidx, &prockey, 1);
  lua_pushvalue(L, tidx);
  lua_rawsetp(L, -2, p);
  lua_pop(L, 1);
  p->pinned = 1;
}

static void unpin (lua_State *L, proc *p, int tidx) {
  if (!p->pinned)
    return;
  p->pinned = 0;
  lua_getiuservalue(L, tidx, PUV_LOOP);
  if (loom__loop_table(L, -1, &prockey, 0)) {
    lua_pushnil(L);
    lua_rawsetp(L, -2, p);
  }
  lua_pop(L, 2);
}

/* Once the child exited and every pipe is lost: connection_lost(nil),
** and the transport is no longer pinned. */
static void try_finish (lua_State *L, proc *p, int tidx) {
  if (p->finished || !p->exited || p->npipes > 0)
    return;
  p->finished = 1;
  lua_pushnil(L);
  protocall(L, tidx, "connection_lost", 1);
  unpin(L, p, tidx);
}

/* }====================================================== */


/*
** {======================================================
** Exit
** =======================================================
*/

static void free_cb (uv_handle_t *h) {
  free(h);
}

/* report_exit(p): the transport's process_exited, then maybe its
** connection_lost. Runs under pcall inside uv_run. */
static int report_exit (lua_State *L) {
  proc *p = (proc *)lua_touserdata(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->loop->self_ref);  /* 2 */
  if (!loom__loop_table(L, 2, &prockey, 0))              /* 3 */
    return 0;
  if (lua_rawgetp(L, 3, p) != LUA_TUSERDATA)             /* 4 */
    return 0;
  protocall(L, 4, "process_exited", 0);
  try_finish(L, p, 4);
  return 0;
}

/*
** libuv reaped the child. The handle has no more use: it is closed here.
** The return code is the exit status, or minus the signal that killed
** the child (as asyncio gives it).
*/
static void exit_cb (uv_process_t *h, int64_t status, int sig) {
  phandle *ph = (phandle *)h;
  proc *p = ph->p;
  lua_State *L;
  uv_close((uv_handle_t *)h, free_cb);
  reap_orphans();
  if (p == NULL)
    return;
  p->ph = NULL;
  p->exited = 1;
  p->returncode = sig != 0 ? -sig : (int)status;
  L = usable(p->loop);
  if (L != NULL && p->pinned && p->loop->self_ref != LUA_NOREF
      && lua_checkstack(L, 4)) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, report_exit);
    lua_pushlightuserdata(L, p);
    lua_pcall(L, 1, 0, 0);
    lua_settop(L, top);
  }
}

/* }====================================================== */


/*
** {======================================================
** The pipe protocol
** =======================================================
*/

static pipeproto *checkpp (lua_State *L) {
  return (pipeproto *)luaL_checkudata(L, 1, PIPEPROTO_MT);
}

/* pipe:data_received(data) -> protocol:pipe_data_received(fd, data).
** Data a child writes on its stdin is dropped (the stdin pipe is read
** only to see the child close it). */
static int pipe_data_received (lua_State *L) {
  pipeproto *pp = checkpp(L);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  if (pp->fd == 0)
    return 0;
  lua_getiuservalue(L, 1, 1);  /* 3: the subprocess transport */
  lua_pushinteger(L, pp->fd);
  lua_pushvalue(L, 2);
  protocall(L, 3, "pipe_data_received", 2);
  return 0;
}

/* pipe:connection_lost(err) -> protocol:pipe_connection_lost(fd, err);
** the transport may be finished then. */
static int pipe_connection_lost (lua_State *L) {
  pipeproto *pp = checkpp(L);
  proc *p;
  lua_settop(L, 2);
  if (pp->lost || lua_getiuservalue(L, 1, 1) != LUA_TUSERDATA)  /* 3 */
    return 0;
  pp->lost = 1;
  p = (proc *)lua_touserdata(L, 3);
  p->npipes--;
  lua_pushinteger(L, pp->fd);
  lua_pushvalue(L, 2);
  protocall(L, 3, "pipe_connection_lost", 2);
  try_finish(L, p, 3);
  return 0;
}

/* Flow control of the stdin pipe goes to the protocol, as asyncio's. */
static int pipeflow (lua_State *L, const char *name) {
  checkpp(L);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1);
  protocall(L, 2, name, 0);
  return 0;
}

static int pipe_pause_writing (lua_State *L) {
  return pipeflow(L, "pause_writing");
}

static int pipe_resume_writing (lua_State *L) {
  return pipeflow(L, "resume_writing");
}

/* Pushes a pipe protocol for fd of the transport at tidx. [-0, +1, m] */
static void newpipeproto (lua_State *L, int fd, int tidx) {
  pipeproto *pp;
  tidx = lua_absindex(L, tidx);
  pp = (pipeproto *)lua_newuserdatauv(L, sizeof(pipeproto), 1);
  pp->fd = fd;
  pp->lost = 0;
  luaL_setmetatable(L, PIPEPROTO_MT);
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, -2, 1);
}

/* }====================================================== */


/*
** {======================================================
** Spawning
** =======================================================
*/

/* How argument errors read: the function named, and the level luaL_where
** looks at (1: the caller of a loop method; 2: the caller of the Lua
** function that called _spawn). */
typedef struct argctx {
  const char *fname;
  int level;
} argctx;

/* Raises "bad argument #argno to 'fname' (msg)", whatever way the
** function was called (a method, or through the Lua layer). */
static int argerr (lua_State *L, const argctx *ac, int argno,
                   const char *msg) {
  luaL_where(L, ac->level);
  lua_pushfstring(L, "bad argument #%d to '%s' (%s)", argno, ac->fname, msg);
  lua_concat(L, 2);
  return lua_error(L);
}

/* The string (or number) at idx, without NUL bytes: what execvp gets.
** [-0, +0, v] */
static const char *checkstr (lua_State *L, int idx, const argctx *ac,
                             int argno, const char *what) {
  size_t len;
  const char *s;
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER)
    argerr(L, ac, argno, lua_pushfstring(L, "string expected, got %s",
                                            luaL_typename(L, idx)));
  s = lua_tolstring(L, idx, &len);
  if (memchr(s, '\0', len) != NULL)
    argerr(L, ac, argno, lua_pushfstring(L, "%s contains a NUL byte",
                                            what));
  return s;
}

typedef struct spawnopts {
  int mode[3];              /* LOOM_PIPE, LOOM_STDOUT, LOOM_DEVNULL, 0 */
  const char *cwd;
  int envidx;               /* stack index of the list of "k=v", or 0 */
} spawnopts;

/* opts.stdin, stdout or stderr: loom.PIPE, loom.DEVNULL, loom.STDOUT
** (stderr only) or nil. */
static int checkstdio (lua_State *L, int oidx, int argno, const argctx *ac,
                       int fd) {
  static const char *const names[] = {"stdin", "stdout", "stderr"};
  lua_Integer v;
  int isint;
  if (lua_getfield(L, oidx, names[fd]) == LUA_TNIL) {
    lua_pop(L, 1);
    return LOOM_INHERIT;
  }
  v = lua_tointegerx(L, -1, &isint);
  lua_pop(L, 1);
  if (isint && (v == LOOM_PIPE || v == LOOM_DEVNULL
                || (v == LOOM_STDOUT && fd == 2)))
    return (int)v;
  return argerr(L, ac, argno, lua_pushfstring(L, "opts.%s must be "
                "loom.PIPE, loom.DEVNULL%s or nil", names[fd],
                fd == 2 ? ", loom.STDOUT" : ""));
}

/*
** opts.env: a table name -> value that replaces the environment. Pushes
** the list of "name=value" strings and leaves its index in so->envidx.
*/
static void checkenv (lua_State *L, int argno, const argctx *ac,
                      spawnopts *so) {
  int eidx = lua_gettop(L), n = 0;
  if (!lua_istable(L, eidx))
    argerr(L, ac, argno, lua_pushfstring(L, "opts.env must be a table, "
                                            "got %s", luaL_typename(L, eidx)));
  lua_newtable(L);
  so->envidx = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, eidx)) {
    size_t klen, vlen;
    const char *k, *v;
    if (lua_type(L, -2) != LUA_TSTRING)
      argerr(L, ac, argno, "opts.env names must be strings");
    k = lua_tolstring(L, -2, &klen);
    if (klen == 0 || memchr(k, '=', klen) != NULL
        || memchr(k, '\0', klen) != NULL)
      argerr(L, ac, argno, lua_pushfstring(L, "opts.env name '%s' is "
             "empty or contains '=' or a NUL byte", k));
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
      argerr(L, ac, argno, lua_pushfstring(L, "opts.env value of '%s' "
             "must be a string, got %s", k, luaL_typename(L, -1)));
    lua_pushvalue(L, -1);   /* a copy to convert, not the key's value */
    v = lua_tolstring(L, -1, &vlen);
    if (memchr(v, '\0', vlen) != NULL)
      argerr(L, ac, argno, lua_pushfstring(L, "opts.env value of '%s' "
             "contains a NUL byte", k));
    lua_pushvalue(L, -3);
    lua_pushliteral(L, "=");
    lua_pushvalue(L, -3);
    lua_concat(L, 3);
    lua_rawseti(L, so->envidx, ++n);
    lua_pop(L, 2);
  }
}

/* Reads the options table at oidx (argno for messages) into so. */
static void checkopts (lua_State *L, int oidx, int argno, const argctx *ac,
                       spawnopts *so) {
  static const char *const keys[] = {"stdin", "stdout", "stderr", "cwd",
                                     "env", NULL};
  int i;
  lua_pushnil(L);
  while (lua_next(L, oidx)) {
    int ok = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (i = 0; keys[i] != NULL && !ok; i++)
        ok = strcmp(keys[i], lua_tostring(L, -1)) == 0;
    if (!ok)
      argerr(L, ac, argno, lua_pushfstring(L, "unknown option '%s'",
                                              luaL_tolstring(L, -1, NULL)));
  }
  for (i = 0; i < 3; i++)
    so->mode[i] = checkstdio(L, oidx, argno, ac, i);
  if (lua_getfield(L, oidx, "cwd") != LUA_TNIL) {
    size_t len;
    if (lua_type(L, -1) != LUA_TSTRING)
      argerr(L, ac, argno, lua_pushfstring(L, "opts.cwd must be a string, "
                                              "got %s", luaL_typename(L, -1)));
    so->cwd = lua_tolstring(L, -1, &len);  /* stays on the stack */
    if (memchr(so->cwd, '\0', len) != NULL)
      argerr(L, ac, argno, "opts.cwd contains a NUL byte");
  }
  else
    lua_pop(L, 1);
  if (lua_getfield(L, oidx, "env") != LUA_TNIL)
    checkenv(L, argno, ac, so);  /* leaves env and the list */
  else
    lua_pop(L, 1);
}

/* Calls method of the value at idx with no argument. */
static void callmethod (lua_State *L, int idx, const char *method) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, method);
  lua_pushvalue(L, idx);
  lua_call(L, 1, 0);
}

/*
** The spawn failed (libuv error r; no child runs): discards the pipe
** transports of the transport at tidx and raises the OSError. When a cwd
** was given and is not a directory we can enter, the error names it
** (the child cannot tell which of chdir and exec failed).
*/
static int spawn_failed (lua_State *L, int tidx, int r, const char *fname,
                         const char *file, const char *cwd) {
  struct stat st;
  int i;
  for (i = 0; i < 3; i++) {
    if (lua_getiuservalue(L, tidx, PUV_PIPE0 + i) == LUA_TUSERDATA)
      callmethod(L, -1, "abort");
    lua_pop(L, 1);
  }
  if (cwd != NULL && (stat(cwd, &st) != 0 || !S_ISDIR(st.st_mode)
                      || access(cwd, X_OK) != 0))
    lua_pushfstring(L, "%s: cwd '%s'", fname, cwd);
  else
    lua_pushfstring(L, "%s: '%s'", fname, file);
  loom__push_oserror(L, r, lua_tostring(L, -1));
  return lua_error(L);
}

/*
** Spawns a child for the loop at 1: the program at pidx with its
** arguments after it (shell: the command at pidx for /bin/sh -c), the
** protocol factory at pidx - 1, an options table (or nil) last. An
** argument at stack index i is numbered i - shift in messages, which
** name fname. Pushes the transport and the protocol. [-0, +2, e]
*/
static int spawn (lua_State *L, int shell, const argctx *ac, int pidx,
                  int shift) {
  const char *fname = ac->fname;
  loom_loop *loop = loom__checkopen(L, 1, fname);
  int top = lua_gettop(L), oidx = 0, nargs, i, r, tidx, protoidx;
  int sp[2] = {-1, -1};
  spawnopts so;
  const char **argv, **envp = NULL;
  loom_conn *pipes[3] = {NULL, NULL, NULL};
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  phandle *ph;
  proc *p;
  memset(&so, 0, sizeof so);
  if (lua_type(L, pidx - 1) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, pidx - 1, "__call") == LUA_TNIL)
      argerr(L, ac, pidx - 1 - shift, lua_pushfstring(L, "function "
             "expected, got %s", luaL_typename(L, pidx - 1)));
    lua_pop(L, 1);
  }
  if (top > pidx && lua_istable(L, top))
    oidx = top--;
  else if (top > pidx && lua_isnil(L, top))
    top--;  /* opts = nil */
  if (shell && top > pidx)
    argerr(L, ac, pidx + 1 - shift, lua_pushfstring(L, "table expected, "
           "got %s", luaL_typename(L, pidx + 1)));
  if (top < pidx)
    top = pidx;  /* no program: the check below raises */
  for (i = pidx; i <= top; i++)
    checkstr(L, i, ac, i - shift, i > pidx ? "argument"
             : shell ? "command" : "program");
  if (oidx)
    checkopts(L, oidx, oidx - shift, ac, &so);
  nargs = shell ? 3 : top - pidx + 1;
  argv = (const char **)lua_newuserdatauv(L, (size_t)(nargs + 1)
                                          * sizeof(char *), 0);
  if (shell) {
    argv[0] = "/bin/sh";
    argv[1] = "-c";
    argv[2] = lua_tostring(L, pidx);
  }
  else
    for (i = 0; i < nargs; i++)
      argv[i] = lua_tostring(L, pidx + i);
  argv[nargs] = NULL;
  if (so.envidx) {
    int n = (int)lua_rawlen(L, so.envidx);
    envp = (const char **)lua_newuserdatauv(L, (size_t)(n + 1)
                                            * sizeof(char *), 0);
    for (i = 0; i < n; i++) {
      lua_rawgeti(L, so.envidx, i + 1);
      envp[i] = lua_tostring(L, -1);  /* anchored by the list */
      lua_pop(L, 1);
    }
    envp[n] = NULL;
  }
  /* asyncio's order: the protocol first; its error leaves nothing made */
  lua_pushvalue(L, pidx - 1);
  lua_call(L, 0, 1);
  protoidx = lua_gettop(L);
  p = (proc *)lua_newuserdatauv(L, sizeof(proc), PUV_COUNT);
  tidx = lua_gettop(L);
  memset(p, 0, sizeof *p);
  p->closed = p->finished = 1;  /* until the child runs */
  p->loop = loop;
  luaL_setmetatable(L, PROC_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, tidx, PUV_LOOP);
  lua_pushvalue(L, protoidx);
  lua_setiuservalue(L, tidx, PUV_PROTO);
  for (i = 0; i < 3; i++) {
    if (so.mode[i] == LOOM_PIPE) {
      pipes[i] = loom__stream_newpipe(L, loop, 1);
      lua_setiuservalue(L, tidx, PUV_PIPE0 + i);
    }
  }
  /* stderr into stdout's pipe: one socket pair for both, made here (the
  ** pipe libuv makes has no descriptor before the fork) */
  if (so.mode[2] == LOOM_STDOUT && so.mode[1] == LOOM_PIPE) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
      return spawn_failed(L, tidx, uv_translate_sys_error(errno), fname,
                          argv[0], NULL);
    r = uv_pipe_open(&pipes[1]->h.pipe, sp[0]);
    if (r < 0) {
      close(sp[0]);
      close(sp[1]);
      return spawn_failed(L, tidx, r, fname, argv[0], NULL);
    }
  }
  for (i = 0; i < 3; i++) {
    int m = so.mode[i];
    if (i == 2 && m == LOOM_STDOUT) {
      m = so.mode[1];
      if (m == LOOM_INHERIT) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = 1;
        continue;
      }
    }
    if (m == LOOM_PIPE && sp[1] >= 0) {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = sp[1];
    }
    else if (m == LOOM_PIPE) {
      /* the parent's end of stdin is readable too: reading it shows when
      ** the child closes its end (asyncio watches it the same way) */
      stdio[i].flags = (uv_stdio_flags)(UV_CREATE_PIPE | UV_WRITABLE_PIPE
                       | (i == 0 ? UV_READABLE_PIPE : 0));
      stdio[i].data.stream = (uv_stream_t *)&pipes[i]->h;
    }
    else if (m == LOOM_DEVNULL)
      stdio[i].flags = UV_IGNORE;  /* libuv opens /dev/null for 0..2 */
    else {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = i;
    }
  }
  ph = (phandle *)malloc(sizeof *ph);
  if (ph == NULL) {
    if (sp[1] >= 0)
      close(sp[1]);
    return spawn_failed(L, tidx, UV_ENOMEM, fname, argv[0], NULL);
  }
  memset(ph, 0, sizeof *ph);
  memset(&o, 0, sizeof o);
  o.exit_cb = exit_cb;
  o.file = argv[0];
  o.args = (char **)argv;
  o.env = (char **)envp;
  o.cwd = so.cwd;
  o.stdio_count = 3;
  o.stdio = stdio;
  r = uv_spawn(&loop->uv, &ph->h, &o);
  if (sp[1] >= 0)
    close(sp[1]);
  if (r < 0) {
    uv_close((uv_handle_t *)&ph->h, free_cb);  /* libuv wants it closed */
    return spawn_failed(L, tidx, r, fname, argv[0], so.cwd);
  }
  ph->p = p;
  p->ph = ph;
  p->pid = ph->h.pid;
  p->closed = p->finished = 0;
  pin(L, p, tidx, 1);
  for (i = 0; i < 3; i++) {
    if (pipes[i] == NULL)
      continue;
    p->npipes++;
    lua_getiuservalue(L, tidx, PUV_PIPE0 + i);
    newpipeproto(L, i, tidx);
    loom__stream_pipe_start(L, pipes[i], -2);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, tidx);
  protocall(L, tidx, "connection_made", 1);
  reap_orphans();
  lua_pushvalue(L, tidx);
  lua_pushvalue(L, protoidx);
  return 2;
}

/*
** loop:subprocess_exec(protocol_factory, program, arg..., [opts]) ->
** transport, protocol. program is searched in PATH as execvp does (in
** opts.env's PATH when env is given); no shell. opts: stdin, stdout,
** stderr (loom.PIPE, loom.DEVNULL, loom.STDOUT for stderr, nil to
** inherit), cwd, env (replaces the environment). Raises the OSError of a
** failed spawn (ENOENT for a missing program or cwd).
*/
static int loop_subprocess_exec (lua_State *L) {
  static const argctx ac = {"subprocess_exec", 1};
  return spawn(L, 0, &ac, 3, 1);
}

/* loop:subprocess_shell(protocol_factory, cmd, [opts]): /bin/sh -c cmd. */
static int loop_subprocess_shell (lua_State *L) {
  static const argctx ac = {"subprocess_shell", 1};
  return spawn(L, 1, &ac, 3, 1);
}

/*
** _spawn(loop, fname, shell, factory, program, ...): the same, for the
** Lua layer's create_subprocess_exec and create_subprocess_shell, whose
** arguments start at the program (argument #1 of fname).
*/
static int core_spawn (lua_State *L) {
  argctx ac;
  ac.fname = luaL_checkstring(L, 2);
  ac.level = 2;
  return spawn(L, lua_toboolean(L, 3), &ac, 5, 4);
}

/* _orphans(): reaps what it can; the number of killed children not yet
** reaped (for the specs). */
static int core_orphans (lua_State *L) {
  lua_pushinteger(L, reap_orphans());
  return 1;
}

/* _nfds(): the number of open file descriptors of the process, from
** /proc/self/fd (for the specs); nil where there is no such directory. */
static int core_nfds (lua_State *L) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  lua_Integer n = 0;
  if (d == NULL)
    return 0;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  lua_pushinteger(L, n - 1);  /* not d's own */
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Transport methods
** =======================================================
*/

static proc *checkproc (lua_State *L) {
  return (proc *)luaL_checkudata(L, 1, PROC_MT);
}

static int proc_get_pid (lua_State *L) {
  proc *p = checkproc(L);
  lua_pushinteger(L, p->pid);
  return 1;
}

/* The return code: nil while the child runs (or its exit is not yet
** seen), its exit status, or minus the signal that killed it. */
static int proc_get_returncode (lua_State *L) {
  proc *p = checkproc(L);
  if (p->exited)
    lua_pushinteger(L, p->returncode);
  else
    lua_pushnil(L);
  return 1;
}

/* get_pipe_transport(fd): the transport of the child's pipe fd (0, 1 or
** 2), or nil when that stream is not a pipe. */
static int proc_get_pipe_transport (lua_State *L) {
  lua_Integer fd;
  checkproc(L);
  fd = luaL_checkinteger(L, 2);
  if (fd < 0 || fd > 2)
    lua_pushnil(L);
  else
    lua_getiuservalue(L, 1, PUV_PIPE0 + (int)fd);
  return 1;
}

/* Sends sig to the child; an OSError ESRCH once its exit is known (its
** pid may belong to another process by then). */
static int dosignal (lua_State *L, proc *p, int sig, const char *fname) {
  int r = p->ph != NULL ? uv_process_kill(&p->ph->h, sig) : UV_ESRCH;
  if (r < 0) {
    loom__push_oserror(L, r, fname);
    return lua_error(L);
  }
  return 0;
}

static int proc_send_signal (lua_State *L) {
  proc *p = checkproc(L);
  return dosignal(L, p, loom__signal_check(L, 2, "send_signal", 1),
                  "send_signal");
}

static int proc_terminate (lua_State *L) {
  return dosignal(L, checkproc(L), SIGTERM, "terminate");
}

static int proc_kill (lua_State *L) {
  return dosignal(L, checkproc(L), SIGKILL, "kill");
}

/*
** close(): closes the pipes and, as asyncio, kills the child if it still
** runs (SIGKILL). Its exit is reaped in the background: process_exited
** and connection_lost still come. Idempotent; also __close.
*/
static int proc_close (lua_State *L) {
  proc *p = checkproc(L);
  int i;
  lua_settop(L, 1);
  if (p->closed)
    return 0;
  p->closed = 1;
  for (i = 0; i < 3; i++) {
    if (lua_getiuservalue(L, 1, PUV_PIPE0 + i) == LUA_TUSERDATA)
      callmethod(L, -1, "close");
    lua_pop(L, 1);
  }
  if (p->ph != NULL)
    uv_process_kill(&p->ph->h, SIGKILL);
  return 0;
}

static int proc_is_closing (lua_State *L) {
  lua_pushboolean(L, checkproc(L)->closed);
  return 1;
}

static int proc_get_protocol (lua_State *L) {
  checkproc(L);
  lua_getiuservalue(L, 1, PUV_PROTO);
  return 1;
}

static int proc_set_protocol (lua_State *L) {
  checkproc(L);
  loom__checkprotocol(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, PUV_PROTO);
  return 0;
}

static int proc_get_loop (lua_State *L) {
  checkproc(L);
  lua_getiuservalue(L, 1, PUV_LOOP);
  return 1;
}

/* get_extra_info(name, [default]): default (no extra information yet). */
static int proc_get_extra_info (lua_State *L) {
  checkproc(L);
  luaL_checkstring(L, 2);
  lua_settop(L, 3);
  return 1;
}

/*
** __gc: a pinned transport is collected only with its loop (lua_close,
** or a loop nobody references): a child still running is killed and
** left to the orphan reaping, as when the loop closes.
*/
static int proc_gc (lua_State *L) {
  proc *p = (proc *)lua_touserdata(L, 1);
  phandle *ph = p->ph;
  if (ph != NULL) {
    p->ph = NULL;
    ph->p = NULL;
    orphan(ph->h.pid);
    uv_close((uv_handle_t *)&ph->h, free_cb);
  }
  return 0;
}

static int proc_tostring (lua_State *L) {
  proc *p = checkproc(L);
  if (p->exited)
    lua_pushfstring(L, "%s (pid %d, returncode %d) %p", PROC_MT, p->pid,
                    p->returncode, (void *)p);
  else
    lua_pushfstring(L, "%s (pid %d, %s) %p", PROC_MT, p->pid,
                    p->finished ? "closed" : "running", (void *)p);
  return 1;
}

/* }====================================================== */


static const luaL_Reg proc_methods[] = {
  {"get_pid", proc_get_pid},
  {"get_returncode", proc_get_returncode},
  {"get_pipe_transport", proc_get_pipe_transport},
  {"send_signal", proc_send_signal},
  {"terminate", proc_terminate},
  {"kill", proc_kill},
  {"close", proc_close},
  {"is_closing", proc_is_closing},
  {"get_protocol", proc_get_protocol},
  {"set_protocol", proc_set_protocol},
  {"get_loop", proc_get_loop},
  {"get_extra_info", proc_get_extra_info},
  {NULL, NULL}
};

static const luaL_Reg proc_metamethods[] = {
  {"__gc", proc_gc},
  {"__close", proc_close},
  {"__tostring", proc_tostring},
  {NULL, NULL}
};

static const luaL_Reg pipe_methods[] = {
  {"data_received", pipe_data_received},
  {"connection_lost", pipe_connection_lost},
  {"pause_writing", pipe_pause_writing},
  {"resume_writing", pipe_resume_writing},
  {NULL, NULL}
};

static const luaL_Reg process_loop_methods[] = {
  {"subprocess_exec", loop_subprocess_exec},
  {"subprocess_shell", loop_subprocess_shell},
  {NULL, NULL}
};

static const luaL_Reg process_functions[] = {
  {"_spawn", core_spawn},
  {"_orphans", core_orphans},
  {"_nfds", core_nfds},
  {NULL, NULL}
};

/*
** Closes the loop's children without calling Lua: each one still
** running is killed, its handle closed (freed by the close callback the
** loop's last uv_run runs) and its pid left to the orphan reaping; every
** transport is marked closed and unpinned. The pipes are stream.c's,
** closed by its own hook.
*/
void loom__process_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  (void)loop;
  if (loom__loop_table(L, loopidx, &prockey, 0)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      proc *p = (proc *)lua_touserdata(L, -1);
      p->closed = p->finished = 1;
      p->pinned = 0;
      if (p->ph != NULL) {
        phandle *ph = p->ph;
        p->ph = NULL;
        ph->p = NULL;
        orphan(ph->h.pid);
        uv_close((uv_handle_t *)&ph->h, free_cb);
      }
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  loom__loop_table_drop(L, loopidx, &prockey);
  if (reap_orphans() > 0)  /* ours, or killed by a finalizer before */
    reap_soon();
}

int loom__open_process (lua_State *L) {
  luaL_newmetatable(L, PROC_MT);
  luaL_setfuncs(L, proc_metamethods, 0);
  luaL_newlib(L, proc_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, PIPEPROTO_MT);
  luaL_newlib(L, pipe_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__loop_methods(L, process_loop_methods);
  loom__setfuncs(L, process_functions);  /* into the module table */
  lua_pushinteger(L, LOOM_PIPE);
  lua_setfield(L, -2, "PIPE");
  lua_pushinteger(L, LOOM_STDOUT);
  lua_setfield(L, -2, "STDOUT");
  lua_pushinteger(L, LOOM_DEVNULL);
  lua_setfield(L, -2, "DEVNULL");
  return 0;
}
