/*
** signal.c
** Unix signal handlers of a loop: add_signal_handler, remove_signal_handler.
*/

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
** One uv_signal_t per (loop, signal) with a handler, malloc'd and owned by
** the loop: loop->signal_state points to a sigstate, made on first use,
** whose slots are indexed by signal number. A handle is uv_unref'd, so it
** never keeps a loop alive (a virtual-time loop still jumps its clock),
** and it is freed only by its close callback (STYLE 3, scheme a).
**
** The Lua side, callback and arguments, lives in a table per loop: entry
** [signum] = {cb, arg1, ..., argn, n = n}. These tables sit in one
** weak-keyed table in the registry, keyed by the loop userdata, not in a
** luaL_ref: a callback that captures its loop (the common case) would
** otherwise pin the loop forever, and a loop with handlers could never be
** collected. Being an ephemeron, the entry lives exactly as long as the
** loop; the shutdown hook clears it at close().
*/

typedef struct sigslot {
  uv_signal_t h;            /* first: the close callback frees the slot */
  loom_loop *loop;
} sigslot;

typedef struct sigstate {
  int nslots;               /* handlers installed */
  sigslot *slot[NSIG];      /* by signal number; NULL: no handler */
} sigstate;

/* Registry keys: the weak table of per-loop tables, the fire function. */
static const char statekey = 0;
static const char firekey = 0;

/*
** {======================================================
** Signal names
** =======================================================
*/

static const struct { const char *name; int num; } signames[] = {
  {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
  {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"IOT", SIGABRT}, {"BUS", SIGBUS},
  {"FPE", SIGFPE}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
  {"SEGV", SIGSEGV}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},
  {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"CHLD", SIGCHLD},
  {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
  {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG},
  {"XCPU", SIGXCPU}, {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM},
  {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
  {"SYS", SIGSYS},
#ifdef SIGPOLL
  {"POLL", SIGPOLL},
#endif
#ifdef SIGPWR
  {"PWR", SIGPWR},
#endif
#ifdef SIGSTKFLT
  {"STKFLT", SIGSTKFLT},
#endif
#ifdef SIGINFO
  {"INFO", SIGINFO},
#endif
  {NULL, 0}
};

/* Raises "bad argument #argno to 'fname' (msg)" whatever way the function
** was called (luaL_argerror says '?' for loop.add_signal_handler(loop,
** ...) under pcall). Methods number their arguments after self. */
static int argerr (lua_State *L, const char *fname, int argno,
                   const char *msg) {
  return luaL_error(L, "bad argument #%d to '%s' (%s)", argno, fname, msg);
}

/* The signal number of a name ("SIGTERM", "TERM", any case), or 0. */
static int signum_of (const char *s, size_t len) {
  char up[16];
  size_t i;
  if (len >= sizeof(up))
    return 0;
  for (i = 0; i < len; i++) {
    char c = s[i];
    up[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
  }
  up[len] = '\0';
  s = up;
  if (strncmp(s, "SIG", 3) == 0)
    s += 3;
  for (i = 0; signames[i].name != NULL; i++)
    if (strcmp(s, signames[i].name) == 0)
      return signames[i].num;
  return 0;
}

/*
** The signal at idx: a number in 1 .. NSIG-1 or a known name. Raises
** naming fname and argument argno otherwise. With zero_ok, 0 (kill's
** existence check) is accepted too.
*/
static int checksignal (lua_State *L, int idx, const char *fname, int argno,
                        int zero_ok) {
  int isint;
  lua_Integer n;
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    int sig;
    if (strlen(s) != len)
      argerr(L, fname, argno, "signal name contains a zero byte");
    sig = signum_of(s, len);
    if (sig == 0)
      argerr(L, fname, argno, lua_pushfstring(L, "unknown signal name '%s'",
                                            s));
    return sig;
  }
  n = lua_tointegerx(L, idx, &isint);
  if (!isint)
    argerr(L, fname, argno, lua_pushfstring(L,
           "signal number or name expected, got %s", luaL_typename(L, idx)));
  if (n < (zero_ok ? 0 : 1) || n >= NSIG)
    argerr(L, fname, argno, lua_pushfstring(L, "invalid signal number %I",
                                            n));
  return (int)n;
}

/* The signal at idx for other files (process.c's send_signal): a
** number in 1 .. NSIG-1 or a name, as add_signal_handler takes it. */
int loom__signal_check (lua_State *L, int idx, const char *fname,
                        int argno) {
  return checksignal(L, idx, fname, argno, 0);
}

/* }====================================================== */


/*
** {======================================================
** The per-loop Lua table
** =======================================================
*/


/* }====================================================== */


/*
** {======================================================
** Delivery
** =======================================================
*/

/*
** _fire(loop, signum), run under lua_pcall by signal_cb: queues a new
** handle for the signal's callback and arguments on the ready queue, as
** call_soon would. Does nothing when the handler is gone.
*/
static int signal_fire (lua_State *L) {
  loom_loop *loop = (loom_loop *)lua_touserdata(L, 1);
  int signum = (int)lua_tointeger(L, 2);
  int i, n;
  if (loop == NULL || loop->closed || !loom__loop_table(L, 1, &statekey, 0))
    return 0;
  if (lua_rawgeti(L, 3, signum) != LUA_TTABLE)  /* 4: {cb, args..., n=} */
    return 0;
  lua_getfield(L, 4, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n + 2, "too many arguments for a signal handler");
  for (i = 1; i <= n + 1; i++)
    lua_rawgeti(L, 4, i);  /* cb at 5, args after it */
  loom__newhandle(L, loop, LOOM_KHANDLE, 5, n, 0);
  loom__ready_push(L, loop, 1, -1);
  return 0;
}

/*
** The libuv callback: runs inside the loop's uv_run, where loop->L runs
** the loop and the loop is reachable through self_ref. Calls no Lua code
** but _fire, under lua_pcall, so no error ever unwinds through libuv; the
** pushes before the call allocate nothing. An error there (out of
** memory) loses this delivery.
*/
static void signal_cb (uv_signal_t *h, int signum) {
  loom_loop *loop = ((sigslot *)h)->loop;
  lua_State *L = loop->L;
  int top;
  if (L == NULL || loop->closed || loop->self_ref == LUA_NOREF
      || !lua_checkstack(L, 4))
    return;
  top = lua_gettop(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &firekey) == LUA_TFUNCTION) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
    lua_pushinteger(L, signum);
    lua_pcall(L, 2, 0, 0);
  }
  lua_settop(L, top);
}

static void free_cb (uv_handle_t *h) {
  free(h);
}

/* Stops and closes the handle of signum, if any; it is freed later, by
** its close callback. */
static int dropslot (loom_loop *loop, int signum) {
  sigstate *st = (sigstate *)loop->signal_state;
  sigslot *s;
  if (st == NULL || (s = st->slot[signum]) == NULL)
    return 0;
  st->slot[signum] = NULL;
  st->nslots--;
  loop->nsignals--;
  uv_close((uv_handle_t *)&s->h, free_cb);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Loop methods and module functions
** =======================================================
*/

/*
** loop:add_signal_handler(sig, cb, ...): cb(...) runs as a loop callback
** each time signal sig arrives; replaces the handler sig had. The Lua
** entry is stored first, so a failure to start the libuv handle only has
** to take it out again.
*/
static int loop_add_signal_handler (lua_State *L) {
  static const char fname[] = "add_signal_handler";
  loom_loop *loop = loom__checkopen(L, 1, fname);
  int signum = checksignal(L, 2, fname, 1, 0);
  int i, nargs = lua_gettop(L) - 3;
  sigstate *st;
  if (signum == SIGKILL || signum == SIGSTOP)
    return argerr(L, fname, 1, signum == SIGKILL ? "SIGKILL cannot be caught"
                                                 : "SIGSTOP cannot be caught");
  if (lua_type(L, 3) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, 3, "__call") == LUA_TNIL)
      return argerr(L, fname, 2, lua_pushfstring(L,
                    "function expected, got %s", luaL_typename(L, 3)));
    lua_pop(L, 1);
  }
  if (nargs < 0)
    nargs = 0;
  lua_settop(L, nargs + 3);
  lua_createtable(L, nargs + 1, 1);  /* the entry */
  for (i = 0; i <= nargs; i++) {
    lua_pushvalue(L, 3 + i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  loom__loop_table(L, 1, &statekey, 1);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, signum);
  st = (sigstate *)loop->signal_state;
  if (st == NULL) {
    st = (sigstate *)calloc(1, sizeof(sigstate));
    if (st == NULL) {
      lua_pushnil(L);
      lua_rawseti(L, -2, signum);
      return luaL_error(L, "%s: not enough memory", fname);
    }
    loop->signal_state = st;
  }
  if (st->slot[signum] == NULL) {
    sigslot *s = (sigslot *)malloc(sizeof(sigslot));
    int r = s == NULL ? UV_ENOMEM : uv_signal_init(&loop->uv, &s->h);
    if (r == 0) {
      s->loop = loop;
      r = uv_signal_start(&s->h, signal_cb, signum);
      if (r < 0)
        uv_close((uv_handle_t *)&s->h, free_cb);
    }
    else
      free(s);
    if (r < 0) {
      lua_pushnil(L);
      lua_rawseti(L, -2, signum);
      return luaL_error(L, "%s: %s", fname, uv_strerror(r));
    }
    uv_unref((uv_handle_t *)&s->h);
    st->slot[signum] = s;
    st->nslots++;
    loop->nsignals++;
  }
  return 0;
}

/*
** loop:remove_signal_handler(sig): true if sig had a handler (now gone),
** false otherwise. A closed loop has no handlers: false.
*/
static int loop_remove_signal_handler (lua_State *L) {
  static const char fname[] = "remove_signal_handler";
  loom_loop *loop = loom__checkloop(L, 1);
  int signum = checksignal(L, 2, fname, 1, 0);
  int had = dropslot(loop, signum);
  if (had && loom__loop_table(L, 1, &statekey, 0)) {
    lua_pushnil(L);
    lua_rawseti(L, -2, signum);
  }
  lua_pushboolean(L, had);
  return 1;
}

/* _getpid(): the process id (private, for the specs). */
static int core_getpid (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  return 1;
}

/*
** _kill(pid, sig): sends signal sig (number or name; 0 checks that the
** process exists) to process pid. Returns true, or nil, message and
** error code. Private, for the specs.
*/
static int core_kill (lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int signum = checksignal(L, 2, "_kill", 2, 1);
  int r = uv_kill((int)pid, signum);
  if (r < 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", uv_err_name(r), uv_strerror(r));
    lua_pushstring(L, uv_err_name(r));
    return 3;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================== */


static const luaL_Reg signal_loop_methods[] = {
  {"add_signal_handler", loop_add_signal_handler},
  {"remove_signal_handler", loop_remove_signal_handler},
  {NULL, NULL}
};

static const luaL_Reg signal_functions[] = {
  {"_getpid", core_getpid},
  {"_kill", core_kill},
  {NULL, NULL}
};

static const luaL_Reg signal_private[] = {
  {"_fire", signal_fire},
  {NULL, NULL}
};

/*
** Closes every signal handle of the loop (their close callbacks, run by
** the loop's last uv_run, free them), frees the slot table, and drops the
** loop's handler table when the loop is at index 1, as it is in close()
** and __gc; otherwise the weak table lets it go with the loop.
*/
void loom__signal_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  sigstate *st = (sigstate *)loop->signal_state;
  int i;
  if (st != NULL) {
    for (i = 1; i < NSIG; i++)
      dropslot(loop, i);
    free(st);
    loop->signal_state = NULL;
  }
  loom__loop_table_drop(L, loopidx, &statekey);
}

int loom__open_signal (lua_State *L) {
  loom__loop_methods(L, signal_loop_methods);
  loom__setfuncs(L, signal_functions);  /* into the module table */
  lua_newtable(L);
  loom__setfuncs(L, signal_private);
  lua_getfield(L, -1, "_fire");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &firekey);
  lua_pop(L, 1);
  return 0;
}
