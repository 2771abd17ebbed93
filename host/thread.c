/*
** thread.c
** Threads: pools of worker threads (to_thread, run_in_executor,
** ThreadPoolExecutor), OS threads that run a loop of their own
** (thread.start), concurrent futures, and the port through which other
** threads reach a loop (call_soon_threadsafe, run_coroutine_threadsafe).
**
** Every thread has its own Lua state: functions and values cross as
** copies (copy.c). What several threads touch is C memory under a mutex:
** a concurrent future (loom_cfut) is the outcome of work done in another
** thread, kept as a blob; a port is a loop's mailbox, a locked queue of
** messages and a uv_async_t that wakes the loop. A task awaits another
** thread through a future of its own loop that a message completes (the
** loop's table of waits maps each message to its future), so libuv never
** calls Lua from a foreign thread, and a loop that closes just stops
** listening: its port is marked closed and later messages are freed by
** whoever posts them.
**
** Lock order: executor, then concurrent future, then port. No Lua call
** and no last release happen with a lock held.
*/

#include <stdlib.h>
#include <string.h>

#include "lualib.h"

#include "internal.h"

int luaopen_loom_core (lua_State *L);  /* core.c */

#define THREADPOOL_MT "loom.ThreadPoolExecutor"
#define THREAD_MT     "loom.Thread"
#define KEEPER_MT     "loom.ThreadKeeper"

/* How often (in VM instructions) an interrupted worker looks at its
** interrupt flag: the hook costs nothing until a cancel installs it. */
#define INTERRUPT_COUNT 1000

/* Messages to a loop. */
enum {
  MSG_DONE = 1,   /* a concurrent future completed: complete the future */
  MSG_WAKE,       /* wake the task waiting on a channel */
  MSG_CALL,       /* call_soon_threadsafe: blob = function and arguments */
  MSG_TASK,       /* run_coroutine_threadsafe: blob = function and args,
                     owner = the concurrent future of its outcome */
  MSG_CANCEL      /* cancel the task of run_coroutine_threadsafe (owner) */
};

/* States of a concurrent future. */
enum { CF_PENDING = 0, CF_RUNNING, CF_DONE, CF_CANCELLED };

/* What cancelling a concurrent future does besides completing it. */
enum { CAN_NONE = 0, CAN_JOB, CAN_TASK };

static const char thread_key = 't';  /* per-loop table, loom__loop_table */
static const char keeper_key = 'k';  /* registry: this state's keeper */

typedef struct executor executor;
typedef struct worker worker;

typedef struct loom_port {
  loom_shared sh;
  uv_mutex_t mu;
  uv_async_t async;         /* closed at loop shutdown */
  int closed;               /* under mu: messages are refused */
  loom_msg *head, *tail;    /* under mu */
  loom_loop *loop;          /* loop thread only */
  int nwaits;               /* loop thread only: futures awaiting messages */
} loom_port;

typedef struct loom_cfut {
  loom_shared sh;
  uv_mutex_t mu;
  uv_cond_t cv;             /* signalled when it completes */
  int state;
  int failed;               /* done with an error */
  loom_blob *out;           /* results or the error value; NULL with */
  char *errtext;            /* ... a failure told as this text */
  char *traceback;          /* of the error, where it was raised */
  loom_msg *waiters;        /* MSG_DONE messages to post when done */
  int cankind;
  executor *ex;             /* job: its executor (retained) */
  worker *worker;           /* job: the worker running it (ex->mu) */
  loom_blob *in;            /* job: the function and its arguments */
  struct loom_cfut *qnext;  /* job: in the executor's queue (ex->mu) */
  loom_port *tport;         /* task: the loop that runs it (retained) */
} loom_cfut;

struct worker {
  uv_thread_t tid;
  executor *ex;
  lua_State *L;             /* written by the worker under ex->mu */
  char *err;                /* why its state could not be set up */
  loom_cfut *job;           /* the job it runs (ex->mu) */
  atomic_int interrupt;     /* set by a cancel while the job runs */
  worker *next;
};

struct executor {
  atomic_int refs;
  uv_mutex_t mu;
  uv_cond_t cv;             /* a job or the shutdown arrived */
  loom_cfut *qhead, *qtail; /* jobs not started */
  int nqueued;
  int max;                  /* at most this many threads */
  int nthreads;             /* started and not yet exited */
  int nidle;                /* waiting for a job */
  int shutdown;
  worker *workers;          /* started and not yet joined */
  loom_cfut *idle;          /* completed once shut down and no thread left */
  char *path, *cpath;       /* package.path and cpath for the workers */
};

/* A thread of thread.start. */
typedef struct lthread {
  uv_thread_t tid;
  loom_blob *in;            /* the function and its arguments */
  char *path, *cpath;
  loom_cfut *cf;            /* its outcome */
  int joined;
} lthread;

/* This state's list of threads to join when it closes (Python joins its
** threads at exit the same way). */
typedef struct keepitem {
  struct keepitem *next;
  lthread *t;               /* or */
  executor *ex;
} keepitem;

typedef struct keeper {
  keepitem *head;
  int closed;
} keeper;

static _Thread_local worker *current_worker;

/* Whether this thread is a worker whose job was cancelled: code that
** blocks in C (a channel) looks, since the hook cannot reach it. */
int loom__interrupted (void) {
  return current_worker != NULL && atomic_load(&current_worker->interrupt);
}

static void cf_release (loom_cfut *cf) {
  loom__shared_release(cf ? &cf->sh : NULL);
}


/*
** {======================================================
** States for other threads
** =======================================================
*/

/* Set once by the executable before any thread starts: how it makes a
** state (its allocator, its embedded modules) and closes one. */
static lua_State *(*hook_newstate)(void);
static void (*hook_closestate)(lua_State *L);

void loom__set_statehooks (lua_State *(*newstate)(void),
                           void (*closestate)(lua_State *L)) {
  hook_newstate = newstate;
  hook_closestate = closestate;
}

static char *dupstr (const char *s) {
  size_t n;
  char *d;
  if (s == NULL)
    return NULL;
  n = strlen(s) + 1;
  d = (char *)malloc(n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

/*
** Copies package.path and package.cpath of L into malloc'd strings, so a
** new state finds modules where this one does. Raises on lack of memory
** (the strings are then freed).
*/
static void capture_paths (lua_State *L, char **path, char **cpath) {
  *path = *cpath = NULL;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "path") == LUA_TSTRING)
      *path = dupstr(lua_tostring(L, -1));
    if (lua_getfield(L, -2, "cpath") == LUA_TSTRING)
      *cpath = dupstr(lua_tostring(L, -1));
    lua_pop(L, 2);
  }
  lua_pop(L, 2);
}

/* Sets up a new state: args path, cpath (light userdata), whether to
** open the standard libraries. Runs protected. */
static int setup_state (lua_State *L) {
  const char *path = (const char *)lua_touserdata(L, 1);
  const char *cpath = (const char *)lua_touserdata(L, 2);
  if (lua_toboolean(L, 3))
    luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
    if (path != NULL) {
      lua_pushstring(L, path);
      lua_setfield(L, -2, "path");
    }
    if (cpath != NULL) {
      lua_pushstring(L, cpath);
      lua_setfield(L, -2, "cpath");
    }
  }
  lua_pop(L, 2);
  /* this very core, whatever the paths say: shared objects made by one
  ** copy of the code must be handled by the same copy */
  luaL_requiref(L, "loom.core", luaopen_loom_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom");
  lua_call(L, 1, 1);
  lua_setglobal(L, "loom");
  return 0;
}

/*
** Makes the state of a new thread: the standard libraries, the paths of
** the state that started it, loom loaded (also as the global 'loom').
** NULL when out of memory. When the setup fails, *err gets the message
** (malloc'd) and the state is returned anyway.
*/
static lua_State *newstate (const char *path, const char *cpath,
                            char **err) {
  lua_State *L;
  *err = NULL;
  L = hook_newstate ? hook_newstate() : luaL_newstate();
  if (L == NULL)
    return NULL;
  lua_pushcfunction(L, setup_state);
  lua_pushlightuserdata(L, (void *)path);
  lua_pushlightuserdata(L, (void *)cpath);
  lua_pushboolean(L, hook_newstate == NULL);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    *err = dupstr(msg ? msg : "error setting up a thread's Lua state");
    lua_pop(L, 1);
  }
  return L;
}

static void closestate (lua_State *L) {
  if (L == NULL)
    return;
  if (hook_closestate)
    hook_closestate(L);
  else
    lua_close(L);
}

/* }====================================================== */


/*
** {======================================================
** Ports
** =======================================================
*/

static void port_destroy (loom_shared *s) {
  loom_port *p = (loom_port *)s;
  uv_mutex_destroy(&p->mu);
  free(p);
}

/* Frees a message and drops what it holds. */
void loom__msg_free (loom_msg *m) {
  if (m == NULL)
    return;
  loom__shared_release(m->owner);
  loom__shared_release(m->port ? &m->port->sh : NULL);
  loom__blob_free(m->blob);
  free(m);
}

static loom_msg *msg_new (int kind, loom_port *p, loom_shared *owner,
                          loom_blob *blob) {
  loom_msg *m = (loom_msg *)calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  m->kind = kind;
  m->port = p;
  loom__shared_retain(&p->sh);
  m->owner = owner;
  if (owner)
    loom__shared_retain(owner);
  m->blob = blob;
  return m;
}

/*
** Queues m on its port and wakes the loop; from any thread. A closed port
** refuses it: m is freed and 0 returned.
*/
static int port_post (loom_msg *m) {
  loom_port *p = m->port;
  int ok;
  m->next = NULL;
  uv_mutex_lock(&p->mu);
  ok = !p->closed;
  if (ok) {
    if (p->tail)
      p->tail->next = m;
    else
      p->head = m;
    p->tail = m;
    uv_async_send(&p->async);
  }
  uv_mutex_unlock(&p->mu);
  if (!ok)
    loom__msg_free(m);
  return ok;
}

void loom__msg_post (loom_msg *m) {
  port_post(m);
}

/* One more future awaits a message: the port keeps the loop alive. */
static void waits_add (loom_port *p, int d) {
  p->nwaits += d;
  if (d > 0 && p->nwaits == d)
    uv_ref((uv_handle_t *)&p->async);
  else if (d < 0 && p->nwaits == 0)
    uv_unref((uv_handle_t *)&p->async);
}

static void port_cb (uv_async_t *a);

/*
** The port of the loop at loopidx, made on first use; the loop holds one
** reference until its shutdown. Raises when the loop is closed.
*/
loom_shared *loom__loop_port (lua_State *L, int loopidx) {
  loom_loop *loop = (loom_loop *)luaL_checkudata(L, loopidx, LOOM_LOOP_MT);
  loom_port *p = (loom_port *)loop->thread_state;
  int r;
  if (loop->closed)
    luaL_error(L, "event loop is closed");
  if (p != NULL)
    return &p->sh;
  p = (loom_port *)calloc(1, sizeof *p);
  if (p == NULL)
    luaL_error(L, "not enough memory");
  if (uv_mutex_init(&p->mu) != 0) {
    free(p);
    luaL_error(L, "cannot make a mutex");
  }
  r = uv_async_init(&loop->uv, &p->async, port_cb);
  if (r < 0) {
    uv_mutex_destroy(&p->mu);
    free(p);
    luaL_error(L, "cannot make a port for the loop: %s", uv_strerror(r));
  }
  uv_unref((uv_handle_t *)&p->async);
  loom__shared_init(&p->sh, LOOM_SHPORT, port_destroy);
  p->loop = loop;
  loop->thread_state = p;
  return &p->sh;
}

static void port_close_cb (uv_handle_t *h) {
  loom_port *p = (loom_port *)((char *)h - offsetof(loom_port, async));
  loom__shared_release(&p->sh);  /* the loop's reference */
}

/* The loop's port as a loom_port (made if needed). */
static loom_port *getport (lua_State *L, int loopidx) {
  return (loom_port *)loom__loop_port(L, loopidx);
}

/* }====================================================== */


/*
** {======================================================
** Concurrent futures
** =======================================================
*/

static void ex_release (executor *ex);

static void cf_destroy (loom_shared *s) {
  loom_cfut *cf = (loom_cfut *)s;
  loom_msg *m, *next;
  for (m = cf->waiters; m != NULL; m = next) {
    next = m->next;
    loom__msg_free(m);  /* cannot happen: a waiter holds a reference */
  }
  loom__blob_free(cf->out);
  loom__blob_free(cf->in);
  free(cf->errtext);
  free(cf->traceback);
  if (cf->ex)
    ex_release(cf->ex);
  loom__shared_release(cf->tport ? &cf->tport->sh : NULL);
  uv_cond_destroy(&cf->cv);
  uv_mutex_destroy(&cf->mu);
  free(cf);
}

static loom_cfut *cf_new (void) {
  loom_cfut *cf = (loom_cfut *)calloc(1, sizeof *cf);
  if (cf == NULL)
    return NULL;
  if (uv_mutex_init(&cf->mu) != 0) {
    free(cf);
    return NULL;
  }
  if (uv_cond_init(&cf->cv) != 0) {
    uv_mutex_destroy(&cf->mu);
    free(cf);
    return NULL;
  }
  loom__shared_init(&cf->sh, LOOM_SHCFUT, cf_destroy);
  return cf;
}

static int cf_isdone (int state) {
  return state == CF_DONE || state == CF_CANCELLED;
}

/*
** Completes cf (state CF_DONE or CF_CANCELLED) with the outcome given,
** which it takes over; wakes the threads blocked on it and posts its
** waiters. Returns 0, freeing the outcome, when it was done already.
*/
static int cf_complete (loom_cfut *cf, int state, int failed, loom_blob *out,
                        char *errtext, char *tb) {
  loom_msg *w, *m, *next;
  uv_mutex_lock(&cf->mu);
  if (cf_isdone(cf->state)) {
    uv_mutex_unlock(&cf->mu);
    loom__blob_free(out);
    free(errtext);
    free(tb);
    return 0;
  }
  cf->state = state;
  cf->failed = failed;
  cf->out = out;
  cf->errtext = errtext;
  cf->traceback = tb;
  w = cf->waiters;
  cf->waiters = NULL;
  for (m = w; m != NULL; m = m->next)
    m->linked = 0;
  uv_cond_broadcast(&cf->cv);
  uv_mutex_unlock(&cf->mu);
  for (m = w; m != NULL; m = next) {
    next = m->next;
    port_post(m);
  }
  return 1;
}

/* Completes cf with a failure told as text. */
static int cf_fail (loom_cfut *cf, const char *text) {
  return cf_complete(cf, CF_DONE, 1, NULL, dupstr(text), NULL);
}

/* Takes m back from cf's waiters; 1 when it was there. */
static int cf_unlink (loom_cfut *cf, loom_msg *m) {
  int r = 0;
  uv_mutex_lock(&cf->mu);
  if (m->linked) {
    loom_msg **pp = &cf->waiters;
    while (*pp != NULL && *pp != m)
      pp = &(*pp)->next;
    if (*pp == m)
      *pp = m->next;
    m->linked = 0;
    m->next = NULL;
    r = 1;
  }
  uv_mutex_unlock(&cf->mu);
  return r;
}

static void ex_interrupt (worker *w);

/*
** Cancels cf: a job not started leaves the queue, a running one has its
** worker interrupted, a remote task is asked to cancel; then cf completes
** as cancelled. Returns 0 when cf was done already or cannot be
** cancelled (a thread's outcome).
*/
static int cf_cancel (loom_cfut *cf) {
  int kind;
  uv_mutex_lock(&cf->mu);
  kind = cf->cankind;
  if (cf_isdone(cf->state) || kind == CAN_NONE) {
    uv_mutex_unlock(&cf->mu);
    return 0;
  }
  uv_mutex_unlock(&cf->mu);
  if (kind == CAN_JOB) {
    executor *ex = cf->ex;  /* set before cf was shared, never changed */
    int queued = 0;
    uv_mutex_lock(&ex->mu);
    uv_mutex_lock(&cf->mu);
    if (cf->state == CF_PENDING) {
      loom_cfut **pp = &ex->qhead, *prev = NULL;
      while (*pp != NULL && *pp != cf) {
        prev = *pp;
        pp = &(*pp)->qnext;
      }
      if (*pp == cf) {
        *pp = cf->qnext;
        if (ex->qtail == cf)
          ex->qtail = prev;
        cf->qnext = NULL;
        ex->nqueued--;
        queued = 1;
      }
    }
    else if (cf->state == CF_RUNNING && cf->worker != NULL)
      ex_interrupt(cf->worker);
    uv_mutex_unlock(&cf->mu);
    uv_mutex_unlock(&ex->mu);
    if (queued) {
      int r = cf_complete(cf, CF_CANCELLED, 0, NULL, NULL, NULL);
      cf_release(cf);  /* the queue's reference; the caller holds one */
      return r;
    }
  }
  else {  /* CAN_TASK */
    loom_msg *m = msg_new(MSG_CANCEL, cf->tport, &cf->sh, NULL);
    if (m != NULL)
      port_post(m);
  }
  return cf_complete(cf, CF_CANCELLED, 0, NULL, NULL, NULL);
}

/* }====================================================== */


/*
** {======================================================
** Waiting on other threads from a task
** =======================================================
*/

/*
** Pushes the thread table of the loop at loopidx (with create, making
** it): waits = {message -> future}, tasks = {concurrent future -> task},
** executor = the default executor. [-0, +1, m]
*/
static int threadtable (lua_State *L, int loopidx, int create) {
  return loom__loop_table(L, loopidx, &thread_key, create);
}

/* Pushes field name (a table, made if needed) of the thread table at
** idx. [-0, +1, m] */
static void subtable (lua_State *L, int idx, const char *name) {
  if (lua_getfield(L, idx, name) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, idx, name);
  }
}

static int unlink_msg (loom_msg *m) {
  if (m->owner == NULL)
    return 0;
  if (m->owner->kind == LOOM_SHCFUT)
    return cf_unlink((loom_cfut *)m->owner, m);
  return loom__channel_unlink(m->owner, m);
}

/*
** Done callback of a future that awaits a message (upvalue: the message
** as a light userdata). When the future ended by other means than the
** message (it was cancelled), the wait is over: the message is taken
** back from its owner and freed, or, already on its way, freed by the
** port when it arrives; a concurrent future it waited on is cancelled.
*/
static int wait_done (lua_State *L) {
  loom_msg *m = (loom_msg *)lua_touserdata(L, lua_upvalueindex(LOOM_TCOUNT
                                                                + 1));
  loom_future *f = loom__tofuture(L, 1);
  int waits;
  if (f == NULL || f->loop->closed)
    return 0;
  lua_getiuservalue(L, 1, LOOM_FUV_LOOP);
  if (!threadtable(L, -1, 0))
    return 0;
  if (lua_getfield(L, -1, "waits") != LUA_TTABLE)
    return 0;
  waits = lua_gettop(L);
  lua_pushlightuserdata(L, m);
  if (lua_rawget(L, waits) != LUA_TUSERDATA || !lua_rawequal(L, -1, 1))
    return 0;  /* completed by the message: m is gone */
  lua_pushlightuserdata(L, m);
  lua_pushnil(L);
  lua_rawset(L, waits);
  waits_add((loom_port *)f->loop->thread_state, -1);
  if (unlink_msg(m)) {
    if (m->owner->kind == LOOM_SHCFUT)
      cf_cancel((loom_cfut *)m->owner);
    loom__msg_free(m);
  }
  return 0;
}

/*
** Makes a message of the given kind for the owner that completes a new
** future of the loop at loopidx, and pushes the future. The message is
** not linked anywhere yet. [-0, +1, m]
*/
static loom_msg *wait_new (lua_State *L, loom_loop *loop, int loopidx,
                           loom_shared *owner, int kind) {
  loom_port *p;
  loom_msg *m;
  int fidx;
  loopidx = lua_absindex(L, loopidx);
  p = getport(L, loopidx);
  threadtable(L, loopidx, 1);
  subtable(L, lua_gettop(L), "waits");
  loom__future_new(L, loop, loopidx);
  fidx = lua_gettop(L);
  m = msg_new(kind, p, owner, NULL);
  if (m == NULL)
    luaL_error(L, "not enough memory");
  {
    int i;  /* the closure: the core's upvalues, then the message */
    for (i = 1; i <= LOOM_TCOUNT; i++)
      lua_pushvalue(L, lua_upvalueindex(i));
    lua_pushlightuserdata(L, m);
    lua_pushcclosure(L, wait_done, LOOM_TCOUNT + 1);
  }
  loom__future_add_callback(L, (loom_future *)lua_touserdata(L, fidx), fidx,
                            -1, LOOM_CBLUA);
  lua_pop(L, 1);
  lua_pushlightuserdata(L, m);
  lua_pushvalue(L, fidx);
  lua_rawset(L, fidx - 1);  /* waits[m] = future */
  waits_add(p, 1);
  lua_replace(L, fidx - 2);  /* the future in place of the tables */
  lua_pop(L, 1);
  return m;
}

/* The loop running in this thread, with L inside one of its tasks. */
int loom__in_task (lua_State *L) {
  loom_loop *loop = loom__running();
  return loop != NULL && loop->current != NULL && loop->current->co == L
         && loop->self_ref != LUA_NOREF;
}

/*
** For channel.c: a WAKE message on owner for the running loop, whose
** future is pushed. The caller must be inside a task (loom__in_task).
*/
loom_msg *loom__wait_new (lua_State *L, loom_shared *owner) {
  loom_loop *loop = loom__running();
  loom_msg *m;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  m = wait_new(L, loop, -1, owner, MSG_WAKE);
  lua_remove(L, -2);
  return m;
}

/*
** Pushes a future of the loop at loopidx that completes as cf does (its
** results or error copied into this state; cancelled when cf is).
** Cancelling the future cancels cf. [-0, +1, m]
*/
static void wrap_cf (lua_State *L, loom_loop *loop, int loopidx,
                     loom_cfut *cf) {
  loom_msg *m = wait_new(L, loop, loopidx, &cf->sh, MSG_DONE);
  int done;
  uv_mutex_lock(&cf->mu);
  done = cf_isdone(cf->state);
  if (!done) {
    m->next = cf->waiters;
    cf->waiters = m;
    m->linked = 1;
  }
  uv_mutex_unlock(&cf->mu);
  if (done)
    port_post(m);  /* delivered by the port, as any completion is */
}

/*
** Pushes the outcome of the done cf: its results (returns how many) or,
** with raise, raises its error; without raise, pushes the error value
** and returns -1. [-0, +n, e]
*/
static int cf_push (lua_State *L, loom_cfut *cf, int raise) {
  if (cf->state == CF_CANCELLED) {
    loom__push_cancelled(L, 0);
    if (raise)
      lua_error(L);
    return -1;
  }
  if (cf->failed) {
    if (cf->out != NULL)
      loom__copy_decode(L, cf->out);
    else
      lua_pushstring(L, cf->errtext ? cf->errtext : "unknown error");
    if (raise)
      lua_error(L);
    return -1;
  }
  return cf->out ? loom__copy_decode(L, cf->out) : 0;
}

/* }====================================================== */


/*
** {======================================================
** Delivering messages on the loop thread
** =======================================================
*/

/* Calls method name of the object at idx with the n values on top. */
static void callmethod (lua_State *L, int idx, const char *name, int n) {
  idx = lua_absindex(L, idx);
  lua_getfield(L, idx, name);
  lua_pushvalue(L, idx);
  lua_rotate(L, -(n + 2), 2);
  lua_call(L, n + 1, 0);
}

/* Completes the future at fidx with the outcome of the done cf. */
static void deliver_cf (lua_State *L, int fidx, loom_cfut *cf) {
  int n;
  if (cf->state == CF_CANCELLED) {
    callmethod(L, fidx, "cancel", 0);
    return;
  }
  n = cf_push(L, cf, 0);
  if (n < 0)
    callmethod(L, fidx, "set_exception", 1);
  else
    callmethod(L, fidx, "set_result", n);
}

static void encode_outcome (lua_State *L, int first, int n, int failed,
                            loom_blob **out, char **errtext);

/*
** Done callback of the task of run_coroutine_threadsafe (upvalue: its
** concurrent future's box): copies the task's outcome into it.
*/
static int task_done (lua_State *L) {
  loom_cfut *cf = (loom_cfut *)*(loom_shared **)lua_touserdata(
                      L, lua_upvalueindex(LOOM_TCOUNT + 1));
  loom_blob *out = NULL;
  char *errtext = NULL;
  int top;
  lua_settop(L, 1);
  lua_getfield(L, 1, "get_loop");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  if (threadtable(L, 2, 0) && lua_getfield(L, 3, "tasks") == LUA_TTABLE) {
    lua_pushlightuserdata(L, cf);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_settop(L, 1);
  lua_getfield(L, 1, "cancelled");
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  if (lua_toboolean(L, -1)) {
    cf_complete(cf, CF_CANCELLED, 0, NULL, NULL, NULL);
    return 0;
  }
  lua_settop(L, 1);
  top = lua_gettop(L);
  lua_getfield(L, 1, "result");
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) == LUA_OK) {
    encode_outcome(L, top + 1, lua_gettop(L) - top, 0, &out, &errtext);
    cf_complete(cf, CF_DONE, errtext != NULL, out, errtext, NULL);
  }
  else {
    char *tb = NULL;
    int err = lua_gettop(L);
    if (lua_getiuservalue(L, 1, LOOM_FUV_EXTRA) == LUA_TTABLE
        && lua_getfield(L, -1, "traceback") == LUA_TSTRING)
      tb = dupstr(lua_tostring(L, -1));
    lua_settop(L, err);
    encode_outcome(L, err, 1, 1, &out, &errtext);
    cf_complete(cf, CF_DONE, 1, out, errtext, tb);
  }
  return 0;
}

/*
** Runs one message on the loop thread, protected: args the message
** (light userdata) and the loop.
*/
static int deliver (lua_State *L) {
  loom_msg *m = (loom_msg *)lua_touserdata(L, 1);
  loom_loop *loop = (loom_loop *)lua_touserdata(L, 2);
  switch (m->kind) {
    case MSG_DONE: case MSG_WAKE: {
      loom_future *f;
      if (!threadtable(L, 2, 0) || lua_getfield(L, 3, "waits") != LUA_TTABLE)
        return 0;
      lua_pushlightuserdata(L, m);
      if (lua_rawget(L, 4) != LUA_TUSERDATA)
        return 0;  /* the wait was cancelled */
      lua_pushlightuserdata(L, m);
      lua_pushnil(L);
      lua_rawset(L, 4);
      waits_add((loom_port *)loop->thread_state, -1);
      f = loom__tofuture(L, 5);
      if (f == NULL || f->state != LOOM_PENDING)
        return 0;
      if (m->kind == MSG_WAKE)
        callmethod(L, 5, "set_result", 0);
      else
        deliver_cf(L, 5, (loom_cfut *)m->owner);
      return 0;
    }
    case MSG_CALL: {
      int base = lua_gettop(L), n;
      loom_blob *b = m->blob;
      m->blob = NULL;
      n = loom__copy_take(L, b);
      loom__newhandle(L, loop, LOOM_KHANDLE, base + 1, n - 1, 0);
      loom__ready_push(L, loop, 2, -1);
      return 0;
    }
    case MSG_TASK: {
      loom_cfut *cf = (loom_cfut *)m->owner;
      int base, n, i;
      uv_mutex_lock(&cf->mu);
      n = cf->state == CF_PENDING;
      if (n)
        cf->state = CF_RUNNING;
      uv_mutex_unlock(&cf->mu);
      if (!n)
        return 0;  /* cancelled before it started */
      lua_getfield(L, 2, "create_task");  /* 3 */
      lua_pushvalue(L, 2);
      base = lua_gettop(L);
      {
        loom_blob *b = m->blob;
        m->blob = NULL;
        n = loom__copy_take(L, b);
      }
      lua_call(L, n + 1, 1);  /* 3: the task */
      threadtable(L, 2, 1);
      subtable(L, 4, "tasks");
      lua_pushlightuserdata(L, cf);
      lua_pushvalue(L, 3);
      lua_rawset(L, -3);
      lua_settop(L, 3);
      lua_getfield(L, 3, "add_done_callback");
      lua_pushvalue(L, 3);
      for (i = 1; i <= LOOM_TCOUNT; i++)
        lua_pushvalue(L, lua_upvalueindex(i));
      loom__shared_push(L, &cf->sh);
      lua_pushcclosure(L, task_done, LOOM_TCOUNT + 1);
      lua_call(L, 2, 0);
      (void)base;
      return 0;
    }
    case MSG_CANCEL:
      if (!threadtable(L, 2, 0) || lua_getfield(L, 3, "tasks") != LUA_TTABLE)
        return 0;
      lua_pushlightuserdata(L, m->owner);
      if (lua_rawget(L, 4) == LUA_TUSERDATA)
        callmethod(L, 5, "cancel", 0);
      return 0;
  }
  return 0;
}

/* Failure while running a message: a task that never started still has
** to complete its concurrent future. Args: message, error. */
static int deliver_failed (lua_State *L) {
  loom_msg *m = (loom_msg *)lua_touserdata(L, 1);
  char *errtext = NULL;
  loom_blob *out = NULL;
  if (m->kind == MSG_TASK) {
    encode_outcome(L, 2, 1, 1, &out, &errtext);
    cf_complete((loom_cfut *)m->owner, CF_DONE, 1, out, errtext, NULL);
  }
  return 0;
}

/*
** The port's async callback, inside the loop's uv_run (the loop runs:
** loop->L is set). Runs every message queued so far, each under its own
** protected call; a failure goes to the exception handler.
*/
static void port_cb (uv_async_t *a) {
  loom_port *p = (loom_port *)((char *)a - offsetof(loom_port, async));
  loom_loop *loop = p->loop;
  lua_State *L = loop->L;
  loom_msg *m, *next;
  int top, loopidx;
  if (L == NULL || loop->closed || loop->self_ref == LUA_NOREF
      || !lua_checkstack(L, 20))
    return;  /* the messages wait for the next run */
  uv_mutex_lock(&p->mu);
  m = p->head;
  p->head = p->tail = NULL;
  uv_mutex_unlock(&p->mu);
  top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  loopidx = lua_gettop(L);
  for (; m != NULL; m = next) {
    next = m->next;
    lua_pushcfunction(L, loom__traceback);
    loom__pushcfunction(L, deliver);
    lua_pushlightuserdata(L, m);
    lua_pushvalue(L, loopidx);
    if (lua_pcall(L, 2, 0, loopidx + 1) != LUA_OK) {
      int err = lua_gettop(L);
      lua_pushcfunction(L, deliver_failed);
      lua_pushlightuserdata(L, m);
      if (lua_istable(L, err))
        lua_getfield(L, err, "exception");
      else
        lua_pushvalue(L, err);
      lua_pcall(L, 2, 0, 0);
      lua_settop(L, err);
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "Exception delivering a message from another "
                      "thread");
      lua_setfield(L, -2, "message");
      if (lua_istable(L, err)) {
        lua_getfield(L, err, "exception");
        lua_setfield(L, -2, "exception");
        lua_getfield(L, err, "traceback");
        lua_setfield(L, -2, "traceback");
      }
      else {
        lua_pushvalue(L, err);
        lua_setfield(L, -2, "exception");
      }
      loom__report(L, loopidx, -1);
    }
    lua_settop(L, loopidx);
    loom__msg_free(m);
  }
  lua_settop(L, top);
}

/* }====================================================== */


/*
** {======================================================
** Outcomes copied out of a state
** =======================================================
*/

static int encode_values (lua_State *L) {
  static const loom_copywhere where = {0, 0, "result #"};
  int n = (int)lua_tointeger(L, 2);
  loom_blob **out = (loom_blob **)lua_touserdata(L, 1);
  *out = loom__copy_encode(L, 3, n, &where);
  return 0;
}

/* Turns the error value at 1 into text, as the executable prints it. */
static int error_text (lua_State *L) {
  char **text = (char **)lua_touserdata(L, 2);
  const char *s;
  if (lua_isnil(L, 1))
    s = "nil";
  else if (lua_type(L, 1) == LUA_TSTRING)
    s = lua_tostring(L, 1);
  else if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1))
    s = lua_tostring(L, -1);
  else
    s = lua_pushfstring(L, "(error object is a %s value)",
                        luaL_typename(L, 1));
  *text = dupstr(s);
  return 0;
}

/*
** Copies the n values from first (results, or with failed the error
** value) into *out. Values that cannot be copied make the outcome a
** failure told as text (*errtext): results the copy error; an error
** value its text (a nil error reads "nil"). Never raises.
*/
static void encode_outcome (lua_State *L, int first, int n, int failed,
                            loom_blob **out, char **errtext) {
  int i, top = lua_gettop(L);
  first = lua_absindex(L, first);
  *out = NULL;
  *errtext = NULL;
  if (!lua_checkstack(L, n + 5)) {
    *errtext = dupstr("too many values to copy");
    return;
  }
  if (failed && lua_isnil(L, first)) {
    *errtext = dupstr("nil");
    return;
  }
  lua_pushcfunction(L, encode_values);
  lua_pushlightuserdata(L, out);
  lua_pushinteger(L, n);
  for (i = 0; i < n; i++)
    lua_pushvalue(L, first + i);
  if (lua_pcall(L, n + 2, 0, 0) != LUA_OK) {
    *out = NULL;
    if (failed) {  /* the error value itself: its text will do */
      lua_pushcfunction(L, error_text);
      lua_pushvalue(L, first);
      lua_pushlightuserdata(L, errtext);
      if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        *errtext = NULL;
    }
    else {
      const char *msg = lua_tostring(L, -1);
      *errtext = dupstr(msg ? msg : "results cannot be copied");
    }
    if (*errtext == NULL)
      *errtext = dupstr("not enough memory");
  }
  lua_settop(L, top);
}

/* Message handler of jobs and threads: the error and its traceback in
** a table. */
static int job_msgh (lua_State *L) {
  return loom__traceback(L);
}

/*
** After a failed protected call with job_msgh at msgh: copies the error
** (and its traceback) into the outcome. [-1, +0, -]
*/
static void encode_failure (lua_State *L, int status, loom_blob **out,
                            char **errtext, char **tb) {
  int err = lua_gettop(L);
  *tb = NULL;
  if (status == LUA_ERRRUN && lua_istable(L, err)) {  /* job_msgh's */
    if (lua_getfield(L, err, "traceback") == LUA_TSTRING)
      *tb = dupstr(lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, err, "exception");
    lua_replace(L, err);
  }
  encode_outcome(L, err, 1, 1, out, errtext);
  lua_settop(L, err - 1);
}

/* }====================================================== */


/*
** {======================================================
** Executors and their workers
** =======================================================
*/

static void ex_release (executor *ex) {
  if (atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel) != 1)
    return;
  cf_release(ex->idle);
  free(ex->path);
  free(ex->cpath);
  uv_cond_destroy(&ex->cv);
  uv_mutex_destroy(&ex->mu);
  free(ex);
}

static void ex_retain (executor *ex) {
  atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
}

/* The hook a cancel installs in a worker: raises in the job's code until
** the job has unwound. */
static void interrupt_hook (lua_State *L, lua_Debug *ar) {
  worker *w = current_worker;
  (void)ar;
  if (w != NULL && atomic_load(&w->interrupt))
    luaL_error(L, "interrupted: the job was cancelled");
}

/*
** Interrupts the job w runs (ex->mu held): sets its flag and installs the
** count hook, lua_sethook being the one call Lua allows from another
** thread (lua.c uses it from a signal handler).
*/
static void ex_interrupt (worker *w) {
  atomic_store(&w->interrupt, 1);
  if (w->L != NULL)
    lua_sethook(w->L, interrupt_hook, LUA_MASKCOUNT, INTERRUPT_COUNT);
}

/* Interrupts every running job of ex. */
static void ex_interrupt_all (executor *ex) {
  worker *w;
  uv_mutex_lock(&ex->mu);
  for (w = ex->workers; w != NULL; w = w->next)
    if (w->job != NULL)
      ex_interrupt(w);
  uv_mutex_unlock(&ex->mu);
}

/* Runs a job in the worker's state, protected: arg the cf. */
static int job_body (lua_State *L) {
  loom_cfut *cf = (loom_cfut *)lua_touserdata(L, 1);
  int n = loom__copy_decode(L, cf->in);
  int base = 2;
  lua_call(L, n - 1, LUA_MULTRET);
  n = lua_gettop(L) - base + 1;
  {
    static const loom_copywhere where = {0, 0, "result #"};
    loom_blob *out = loom__copy_encode(L, base, n, &where);
    *(loom_blob **)lua_touserdata(L, lua_upvalueindex(1)) = out;
  }
  return 0;
}

/* Runs job cf in worker w and completes it. */
static void run_job (worker *w, loom_cfut *cf) {
  lua_State *L = w->L;
  loom_blob *out = NULL;
  char *errtext = NULL, *tb = NULL;
  int status;
  if (w->err != NULL) {
    cf_fail(cf, w->err);
    return;
  }
  lua_settop(L, 0);
  lua_pushcfunction(L, job_msgh);
  lua_pushlightuserdata(L, &out);
  lua_pushcclosure(L, job_body, 1);
  lua_pushlightuserdata(L, cf);
  status = lua_pcall(L, 1, 0, 1);
  if (status != LUA_OK) {
    loom__blob_free(out);
    out = NULL;
    encode_failure(L, status, &out, &errtext, &tb);
    cf_complete(cf, CF_DONE, 1, out, errtext, tb);
  }
  else
    cf_complete(cf, CF_DONE, 0, out, NULL, NULL);
  lua_settop(L, 0);
}

static void worker_newstate (worker *w) {
  lua_State *L;
  char *err;
  L = newstate(w->ex->path, w->ex->cpath, &err);
  if (L == NULL)
    err = dupstr("cannot create a Lua state: not enough memory");
  uv_mutex_lock(&w->ex->mu);
  w->L = L;
  free(w->err);
  w->err = err;
  uv_mutex_unlock(&w->ex->mu);
}

/*
** A worker thread: takes jobs from the queue until the executor shuts
** down and the queue is empty. After an interrupted job its state is
** replaced: the job may have left it half-changed.
*/
static void worker_main (void *arg) {
  worker *w = (worker *)arg;
  executor *ex = w->ex;
  loom_cfut *idle = NULL, *done = NULL;
  lua_State *L;
  current_worker = w;
  worker_newstate(w);
  uv_mutex_lock(&ex->mu);
  for (;;) {
    loom_cfut *cf;
    int interrupted;
    while (ex->qhead == NULL && !ex->shutdown) {
      ex->nidle++;
      uv_cond_wait(&ex->cv, &ex->mu);
      ex->nidle--;
    }
    cf = ex->qhead;
    if (cf == NULL)  /* shut down, nothing left */
      break;
    ex->qhead = cf->qnext;
    if (ex->qhead == NULL)
      ex->qtail = NULL;
    cf->qnext = NULL;
    ex->nqueued--;
    uv_mutex_lock(&cf->mu);
    cf->state = CF_RUNNING;
    cf->worker = w;
    uv_mutex_unlock(&cf->mu);
    w->job = cf;
    uv_mutex_unlock(&ex->mu);
    cf_release(done);  /* the queue's reference to the job before */
    run_job(w, cf);
    done = cf;
    uv_mutex_lock(&ex->mu);
    w->job = NULL;
    uv_mutex_lock(&cf->mu);
    cf->worker = NULL;
    uv_mutex_unlock(&cf->mu);
    interrupted = atomic_exchange(&w->interrupt, 0);
    if (interrupted) {
      L = w->L;
      w->L = NULL;  /* no cancel reaches it any more */
      uv_mutex_unlock(&ex->mu);
      if (L != NULL)
        lua_sethook(L, NULL, 0, 0);
      closestate(L);
      worker_newstate(w);
      uv_mutex_lock(&ex->mu);
    }
  }
  L = w->L;
  w->L = NULL;
  uv_mutex_unlock(&ex->mu);
  cf_release(done);
  closestate(L);
  uv_mutex_lock(&ex->mu);
  if (--ex->nthreads == 0 && ex->shutdown) {
    idle = ex->idle;
    loom__shared_retain(&idle->sh);
  }
  uv_mutex_unlock(&ex->mu);
  if (idle != NULL) {
    cf_complete(idle, CF_DONE, 0, NULL, NULL, NULL);
    cf_release(idle);
  }
  current_worker = NULL;
}

/* A new executor of at most max threads, with the paths of L. */
static executor *ex_new (lua_State *L, int max) {
  executor *ex = (executor *)calloc(1, sizeof *ex);
  if (ex == NULL)
    luaL_error(L, "not enough memory");
  if (uv_mutex_init(&ex->mu) != 0) {
    free(ex);
    luaL_error(L, "cannot make a mutex");
  }
  if (uv_cond_init(&ex->cv) != 0) {
    uv_mutex_destroy(&ex->mu);
    free(ex);
    luaL_error(L, "cannot make a condition variable");
  }
  atomic_init(&ex->refs, 1);
  ex->max = max;
  ex->idle = cf_new();
  if (ex->idle == NULL) {
    ex_release(ex);
    luaL_error(L, "not enough memory");
  }
  capture_paths(L, &ex->path, &ex->cpath);
  return ex;
}

/*
** Queues job cf (the executor takes a reference) and starts a thread when
** none is idle and fewer than max run. Returns 0 with ex->mu released, or
** a libuv error when no thread could start and none runs (the job is then
** not queued). Raises nothing.
*/
static int ex_submit (executor *ex, loom_cfut *cf) {
  int r = 0, wake;
  uv_mutex_lock(&ex->mu);
  if (ex->shutdown) {
    uv_mutex_unlock(&ex->mu);
    return UV_ECANCELED;
  }
  loom__shared_retain(&cf->sh);
  if (ex->qtail)
    ex->qtail->qnext = cf;
  else
    ex->qhead = cf;
  ex->qtail = cf;
  ex->nqueued++;
  wake = ex->nidle > 0;
  if (ex->nqueued > ex->nidle && ex->nthreads < ex->max) {
    /* more jobs wait than idle threads will take: one more thread (an
    ** idle thread counts as idle until it has woken and taken a job) */
    worker *w = (worker *)calloc(1, sizeof *w);
    r = UV_ENOMEM;
    if (w != NULL) {
      w->ex = ex;
      atomic_init(&w->interrupt, 0);
      r = uv_thread_create(&w->tid, worker_main, w);
      if (r == 0) {
        w->next = ex->workers;
        ex->workers = w;
        ex->nthreads++;
      }
      else
        free(w);
    }
    if (r != 0 && ex->nthreads > 0)
      r = 0;  /* the running ones will get to it */
    if (r != 0) {  /* take the job back */
      loom_cfut **pp = &ex->qhead, *prev = NULL;
      while (*pp != cf) {
        prev = *pp;
        pp = &(*pp)->qnext;
      }
      *pp = NULL;
      ex->qtail = prev;
      ex->nqueued--;
      wake = 0;
    }
  }
  uv_mutex_unlock(&ex->mu);
  if (wake)
    uv_cond_signal(&ex->cv);  /* unlocked: the woken thread takes the lock */
  if (r != 0)
    cf_release(cf);  /* not the last: the caller holds one */
  return r;
}

/*
** Shuts ex down: no new jobs; with cancel, the queued ones are cancelled.
** The threads exit once the queue is empty.
*/
static void ex_shutdown (executor *ex, int cancel) {
  loom_cfut *q = NULL, *next;
  int none;
  uv_mutex_lock(&ex->mu);
  ex->shutdown = 1;
  if (cancel) {
    q = ex->qhead;
    ex->qhead = ex->qtail = NULL;
    ex->nqueued = 0;
  }
  none = ex->nthreads == 0;
  uv_cond_broadcast(&ex->cv);
  uv_mutex_unlock(&ex->mu);
  for (; q != NULL; q = next) {
    next = q->qnext;
    q->qnext = NULL;
    cf_complete(q, CF_CANCELLED, 0, NULL, NULL, NULL);
    cf_release(q);
  }
  if (none)
    cf_complete(ex->idle, CF_DONE, 0, NULL, NULL, NULL);
}

/* Joins every thread ex started (it must be shut down). Blocks. */
static void ex_join (executor *ex) {
  worker *w, *next;
  uv_mutex_lock(&ex->mu);
  w = ex->workers;
  ex->workers = NULL;
  uv_mutex_unlock(&ex->mu);
  for (; w != NULL; w = next) {
    next = w->next;
    uv_thread_join(&w->tid);
    free(w->err);
    free(w);
  }
}

/* Nothing queued, nothing running. */
static int ex_isidle (executor *ex) {
  int r;
  uv_mutex_lock(&ex->mu);
  r = ex->qhead == NULL && ex->nidle == ex->nthreads;
  uv_mutex_unlock(&ex->mu);
  return r;
}

/* }====================================================== */


/*
** {======================================================
** The keeper: threads this state joins when it closes
** =======================================================
*/

static void lthread_free (lthread *t) {
  loom__blob_free(t->in);
  free(t->path);
  free(t->cpath);
  cf_release(t->cf);
  free(t);
}

static int keeper_gc (lua_State *L) {
  keeper *k = (keeper *)lua_touserdata(L, 1);
  keepitem *it, *next;
  for (it = k->head; it != NULL; it = next) {
    next = it->next;
    if (it->t != NULL) {
      uv_thread_join(&it->t->tid);
      lthread_free(it->t);
    }
    else {
      ex_join(it->ex);
      ex_release(it->ex);
    }
    free(it);
  }
  k->head = NULL;
  k->closed = 1;
  return 0;
}

/* Makes this state's keeper if there is none. Objects made after it are
** finalized before it, when the state closes. [-0, +0, m] */
static void keeper_make (lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &keeper_key) == LUA_TNIL) {
    keeper *k = (keeper *)lua_newuserdatauv(L, sizeof *k, 0);
    k->head = NULL;
    k->closed = 0;
    if (luaL_newmetatable(L, KEEPER_MT)) {
      lua_pushcfunction(L, keeper_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &keeper_key);
  }
  lua_pop(L, 1);
}

/*
** Hands a running thread or a busy executor to the keeper (from a __gc:
** allocates no Lua memory). Without a keeper, or when it is gone, joins
** at once.
*/
static void keep (lua_State *L, lthread *t, executor *ex) {
  keeper *k = NULL;
  keepitem *it;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &keeper_key) == LUA_TUSERDATA)
    k = (keeper *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  it = (k != NULL && !k->closed) ? (keepitem *)malloc(sizeof *it) : NULL;
  if (it == NULL) {
    if (t != NULL) {
      uv_thread_join(&t->tid);
      lthread_free(t);
    }
    else {
      ex_join(ex);
      ex_release(ex);
    }
    return;
  }
  it->t = t;
  it->ex = ex;
  it->next = k->head;
  k->head = it;
}

/* }====================================================== */


/*
** {======================================================
** Threads with a loop of their own
** =======================================================
*/

/* The thread's work in its state, protected: decodes the function and
** its arguments and runs loom._thread_main(fn, ...), which returns true
** and fn's results, or false, the error and its traceback. */
static int thread_body (lua_State *L) {
  lthread *t = (lthread *)lua_touserdata(L, 1);
  loom_blob **out = (loom_blob **)lua_touserdata(L, 2);
  char **errtext = (char **)lua_touserdata(L, 3);
  char **tb = (char **)lua_touserdata(L, 4);
  int *failed = (int *)lua_touserdata(L, 5);
  int base, n;
  lua_settop(L, 0);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom");
  lua_call(L, 1, 1);
  lua_getfield(L, 1, "_thread_main");
  base = lua_gettop(L);
  n = loom__copy_decode(L, t->in);
  lua_call(L, n, LUA_MULTRET);
  n = lua_gettop(L) - base;  /* ok, then n values */
  if (lua_toboolean(L, base)) {
    encode_outcome(L, base + 1, n, 0, out, errtext);
    *failed = *errtext != NULL;
  }
  else {
    if (lua_type(L, base + 2) == LUA_TSTRING)
      *tb = dupstr(lua_tostring(L, base + 2));
    encode_outcome(L, base + 1, 1, 1, out, errtext);
    *failed = 1;
  }
  return 0;
}

static void thread_main (void *arg) {
  lthread *t = (lthread *)arg;
  loom_blob *out = NULL;
  char *errtext = NULL, *tb = NULL, *err;
  int failed = 0;
  lua_State *L = newstate(t->path, t->cpath, &err);
  if (L == NULL)
    errtext = dupstr("cannot create a Lua state: not enough memory");
  else if (err != NULL)
    errtext = err;
  else {
    int status;
    lua_pushcfunction(L, job_msgh);
    lua_pushcfunction(L, thread_body);
    lua_pushlightuserdata(L, t);
    lua_pushlightuserdata(L, &out);
    lua_pushlightuserdata(L, &errtext);
    lua_pushlightuserdata(L, &tb);
    lua_pushlightuserdata(L, &failed);
    status = lua_pcall(L, 5, 0, 1);
    if (status != LUA_OK) {
      loom__blob_free(out);
      free(errtext);
      free(tb);
      encode_failure(L, status, &out, &errtext, &tb);
      failed = 1;
    }
  }
  closestate(L);
  if (errtext != NULL)
    failed = 1;
  cf_complete(t->cf, CF_DONE, failed, out, errtext, tb);
}

/* }====================================================== */


/*
** {======================================================
** Lua functions
** =======================================================
*/

/* Pushes a new empty box with the metatable named mt: a failure after
** it leaves nothing to free. [-0, +1, m] */
static void **newbox (lua_State *L, const char *mt) {
  void **box = (void **)lua_newuserdatauv(L, sizeof(void *), 0);
  *box = NULL;
  luaL_setmetatable(L, mt);
  return box;
}

static loom_cfut *checkcf (lua_State *L, int idx) {
  loom_shared **box = (loom_shared **)luaL_checkudata(L, idx, LOOM_CFUTURE_MT);
  return (loom_cfut *)*box;
}

static void checkfn (lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TFUNCTION);
}

/* The running loop with L inside one of its tasks; pushes the loop.
** Raises "<fname>: not inside a task" otherwise. */
static loom_loop *intask (lua_State *L, const char *fname) {
  loom_loop *loop = loom__running();
  if (!loom__in_task(L))
    luaL_error(L, "%s: not inside a task", fname);
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  return loop;
}

/* Continuation: the results of the await, above ctx values. */
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

/* Blocks this thread until cf is done or timeout (seconds, < 0: none)
** passes; returns whether it is done. Refuses inside a running loop,
** whose thread may be what cf waits for. */
static int cf_block (lua_State *L, loom_cfut *cf, double timeout,
                     const char *fname) {
  int done;
  uv_mutex_lock(&cf->mu);
  done = cf_isdone(cf->state);
  uv_mutex_unlock(&cf->mu);
  if (done)
    return 1;
  if (loom__running() != NULL)
    luaL_error(L, "%s: the future is not done, and blocking would stop the "
               "running event loop (await it inside a task)", fname);
  uv_mutex_lock(&cf->mu);
  if (timeout < 0) {
    while (!cf_isdone(cf->state))
      uv_cond_wait(&cf->cv, &cf->mu);
  }
  else {
    uint64_t end = uv_hrtime() + (uint64_t)(timeout * 1e9);
    while (!cf_isdone(cf->state)) {
      uint64_t now = uv_hrtime();
      if (now >= end || uv_cond_timedwait(&cf->cv, &cf->mu, end - now) != 0)
        break;
    }
  }
  done = cf_isdone(cf->state);
  uv_mutex_unlock(&cf->mu);
  return done;
}

static double opttimeout (lua_State *L, int idx) {
  double t;
  if (lua_isnoneornil(L, idx))
    return -1;
  t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t == t && t >= 0, idx, "timeout must be a non-negative "
                "number");
  return t;
}

static int raise_timeout (lua_State *L, const char *fname) {
  lua_pushfstring(L, "%s: the future did not complete in time", fname);
  loom__push_error(L, "TimeoutError", lua_tostring(L, -1));
  return lua_error(L);
}

/* cf:result([timeout]): the results, waiting for them outside a loop. */
static int cfut_result (lua_State *L) {
  loom_cfut *cf = checkcf(L, 1);
  if (!cf_block(L, cf, opttimeout(L, 2), "result"))
    return raise_timeout(L, "result");
  lua_settop(L, 1);
  return cf_push(L, cf, 1);
}

/* cf:exception([timeout]): the error, or nil. */
static int cfut_exception (lua_State *L) {
  loom_cfut *cf = checkcf(L, 1);
  if (!cf_block(L, cf, opttimeout(L, 2), "exception"))
    return raise_timeout(L, "exception");
  lua_settop(L, 1);
  if (cf->state == CF_CANCELLED)
    return cf_push(L, cf, 1);  /* raises CancelledError */
  if (!cf->failed)
    return 0;
  cf_push(L, cf, 0);
  return 1;
}

static int cfut_state (lua_State *L) {
  loom_cfut *cf = checkcf(L, 1);
  int s;
  uv_mutex_lock(&cf->mu);
  s = cf->state;
  uv_mutex_unlock(&cf->mu);
  return s;
}

static int cfut_done (lua_State *L) {
  lua_pushboolean(L, cf_isdone(cfut_state(L)));
  return 1;
}

static int cfut_cancelled (lua_State *L) {
  lua_pushboolean(L, cfut_state(L) == CF_CANCELLED);
  return 1;
}

static int cfut_running (lua_State *L) {
  lua_pushboolean(L, cfut_state(L) == CF_RUNNING);
  return 1;
}

static int cfut_cancel (lua_State *L) {
  lua_pushboolean(L, cf_cancel(checkcf(L, 1)));
  return 1;
}

/* cf:traceback(): where the error was raised, in the other thread. */
static int cfut_traceback (lua_State *L) {
  loom_cfut *cf = checkcf(L, 1);
  int done;
  uv_mutex_lock(&cf->mu);
  done = cf_isdone(cf->state);
  uv_mutex_unlock(&cf->mu);
  if (!done || cf->traceback == NULL)
    return 0;
  lua_pushstring(L, cf->traceback);
  return 1;
}

/* cf:await(): inside a task, its results. */
static int cfut_await (lua_State *L) {
  loom_cfut *cf = checkcf(L, 1);
  loom_loop *loop;
  lua_settop(L, 1);
  loop = intask(L, "await");
  wrap_cf(L, loop, 2, cf);
  lua_replace(L, 1);
  lua_settop(L, 1);
  return await_top(L);
}

static int cfut_gc (lua_State *L) {
  loom_shared **box = (loom_shared **)lua_touserdata(L, 1);
  loom__shared_release(*box);
  *box = NULL;
  return 0;
}

static int cfut_tostring (lua_State *L) {
  static const char *const names[] = {"pending", "running", "finished",
                                      "cancelled"};
  loom_cfut *cf = checkcf(L, 1);
  int s = cfut_state(L);
  lua_pushfstring(L, "loom.ConcurrentFuture (%s%s) %p", names[s],
                  s == CF_DONE && cf->failed ? ", error" : "", (void *)cf);
  return 1;
}

/* wrap_future(cf, [loop]): a future of the loop (the running one) that
** completes as cf. */
static int core_wrap_future (lua_State *L) {
  loom_cfut *cf = checkcf(L, 1);
  loom_loop *loop;
  if (lua_isnoneornil(L, 2)) {
    loop = loom__running();
    if (loop == NULL || loop->self_ref == LUA_NOREF)
      return luaL_error(L, "wrap_future: no running event loop");
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  }
  else
    loop = loom__checkopen(L, 2, "wrap_future");
  lua_settop(L, 2);
  wrap_cf(L, loop, 2, cf);
  return 1;
}

/* --- executors --- */

typedef struct exbox {
  executor *ex;
} exbox;

static executor *checkex (lua_State *L, int idx) {
  exbox *b = (exbox *)luaL_checkudata(L, idx, THREADPOOL_MT);
  return b->ex;
}

/* Pushes a new executor box with a new executor of at most max
** threads. [-0, +1, m] */
static executor *push_exbox (lua_State *L, int max) {
  exbox *b = (exbox *)newbox(L, THREADPOOL_MT);
  b->ex = ex_new(L, max);
  return b->ex;
}

static int default_workers (void) {
  int n = (int)uv_available_parallelism() + 4;
  return n > 32 ? 32 : n;
}

/* ThreadPoolExecutor([max_workers]) */
static int core_threadpool (lua_State *L) {
  int max;
  if (lua_isnoneornil(L, 1))
    max = default_workers();
  else {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 1024, 1, "max_workers must be in "
                  "1..1024");
    max = (int)n;
  }
  keeper_make(L);
  push_exbox(L, max);
  return 1;
}

/*
** Submits fn at first with the values after it (n in all) to ex; pushes
** the job's concurrent future. where names the arguments.
*/
static loom_cfut *submit (lua_State *L, executor *ex, int first, int n,
                          const loom_copywhere *where, const char *fname) {
  loom_blob *b;
  loom_cfut *cf;
  void **box;
  int r;
  uv_mutex_lock(&ex->mu);
  r = ex->shutdown;
  uv_mutex_unlock(&ex->mu);
  if (r)
    luaL_error(L, "%s: cannot schedule new futures after shutdown", fname);
  first = lua_absindex(L, first);
  box = newbox(L, LOOM_CFUTURE_MT);
  b = loom__copy_encode(L, first, n, where);
  cf = cf_new();
  if (cf == NULL) {
    loom__blob_free(b);
    luaL_error(L, "not enough memory");
  }
  cf->in = b;
  cf->cankind = CAN_JOB;
  cf->ex = ex;
  ex_retain(ex);
  *box = cf;  /* the box holds the reference cf_new made */
  r = ex_submit(ex, cf);
  if (r == UV_ECANCELED)
    luaL_error(L, "%s: cannot schedule new futures after shutdown", fname);
  if (r != 0)
    luaL_error(L, "%s: cannot start a thread: %s", fname, uv_strerror(r));
  return cf;
}

/* executor:submit(fn, ...) -> concurrent future */
static int ex_submit_m (lua_State *L) {
  static const loom_copywhere where = {2, 0, NULL};
  executor *ex = checkex(L, 1);
  if (ex == NULL)
    return luaL_error(L, "submit: cannot schedule new futures after "
                      "shutdown");
  checkfn(L, 2);
  submit(L, ex, 2, lua_gettop(L) - 1, &where, "submit");
  return 1;
}

/* Continuation of shutdown(true) inside a task: join. */
static int shutdown_k (lua_State *L, int status, lua_KContext ctx) {
  exbox *b = (exbox *)lua_touserdata(L, 1);
  (void)status; (void)ctx;
  if (b->ex != NULL)
    ex_join(b->ex);
  return 0;
}

/*
** executor:shutdown([wait], [opts]): no new jobs; opts.cancel_futures
** cancels the queued ones. With wait (the default), waits for the
** running jobs and joins the threads: inside a task it awaits, outside
** a running loop it blocks.
*/
static int ex_shutdown_m (lua_State *L) {
  exbox *b = (exbox *)luaL_checkudata(L, 1, THREADPOOL_MT);
  executor *ex = b->ex;
  int wait = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  int cancel = 0;
  if (!lua_isnoneornil(L, 3)) {
    static const char *const keys[] = {"cancel_futures", NULL};
    luaL_checktype(L, 3, LUA_TTABLE);
    loom__checkkeys(L, 3, 3, NULL, keys);
    lua_getfield(L, 3, "cancel_futures");
    cancel = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (ex == NULL)
    return 0;
  if (wait && !loom__in_task(L) && loom__running() != NULL
      && !ex_isidle(ex))
    return luaL_error(L, "shutdown: jobs are running, and waiting would "
                      "stop the running event loop (call it inside a "
                      "task, or with wait = false)");
  ex_shutdown(ex, cancel);
  if (!wait)
    return 0;
  if (loom__in_task(L)) {
    loom_loop *loop;
    lua_settop(L, 1);
    loop = intask(L, "shutdown");
    wrap_cf(L, loop, 2, ex->idle);
    lua_getfield(L, -1, "await");
    lua_insert(L, -2);
    lua_callk(L, 1, 0, 0, shutdown_k);
    return shutdown_k(L, LUA_OK, 0);
  }
  ex_join(ex);
  return 0;
}

/*
** __gc: an idle executor is joined at once; a busy one is shut down (its
** jobs go on) and handed to the keeper, which joins it when the state
** closes.
*/
static int ex_gc (lua_State *L) {
  exbox *b = (exbox *)lua_touserdata(L, 1);
  executor *ex = b->ex;
  int idle;
  b->ex = NULL;
  if (ex == NULL)
    return 0;
  idle = ex_isidle(ex);  /* before the idle threads start to leave */
  ex_shutdown(ex, 0);
  if (idle) {
    ex_join(ex);
    ex_release(ex);
  }
  else
    keep(L, NULL, ex);
  return 0;
}

/* <close>: shutdown(true) */
static int ex_close (lua_State *L) {
  lua_settop(L, 1);
  return ex_shutdown_m(L);
}

static int ex_tostring (lua_State *L) {
  executor *ex = checkex(L, 1);
  if (ex == NULL) {
    lua_pushliteral(L, "loom.ThreadPoolExecutor (collected)");
    return 1;
  }
  uv_mutex_lock(&ex->mu);
  lua_pushfstring(L, "loom.ThreadPoolExecutor (%d/%d threads%s) %p",
                  ex->nthreads, ex->max, ex->shutdown ? ", shut down" : "",
                  (void *)ex);
  uv_mutex_unlock(&ex->mu);
  return 1;
}

/* _executor_threads(ex): threads started and not exited (specs). */
static int ex_nthreads (lua_State *L) {
  executor *ex = checkex(L, 1);
  int n = 0;
  if (ex != NULL) {
    uv_mutex_lock(&ex->mu);
    n = ex->nthreads;
    uv_mutex_unlock(&ex->mu);
  }
  lua_pushinteger(L, n);
  return 1;
}

/*
** The default executor of the loop at loopidx, made on first use; raises
** after shutdown_default_executor.
*/
static executor *default_executor (lua_State *L, int loopidx,
                                   const char *fname) {
  executor *ex;
  int t;
  threadtable(L, loopidx, 1);
  t = lua_gettop(L);
  if (lua_getfield(L, t, "executor") == LUA_TUSERDATA) {
    ex = ((exbox *)lua_touserdata(L, -1))->ex;
    lua_pop(L, 2);
    if (ex == NULL)
      luaL_error(L, "%s: the default executor is gone", fname);
    return ex;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, t, "executor_shutdown") != LUA_TNIL)
    luaL_error(L, "%s: the default executor has been shut down", fname);
  lua_pop(L, 1);
  keeper_make(L);
  ex = push_exbox(L, default_workers());
  lua_setfield(L, t, "executor");
  lua_pop(L, 1);
  return ex;
}

/* loop:run_in_executor(executor or nil, fn, ...) -> future */
static int loop_run_in_executor (lua_State *L) {
  static const loom_copywhere where = {3, 0, NULL};
  loom_loop *loop = loom__checkopen(L, 1, "run_in_executor");
  executor *ex;
  loom_cfut *cf;
  if (lua_isnoneornil(L, 2))
    ex = default_executor(L, 1, "run_in_executor");
  else {
    ex = checkex(L, 2);
    if (ex == NULL)
      return luaL_error(L, "run_in_executor: cannot schedule new futures "
                        "after shutdown");
  }
  checkfn(L, 3);
  cf = submit(L, ex, 3, lua_gettop(L) - 2, &where, "run_in_executor");
  wrap_cf(L, loop, 1, cf);
  return 1;
}

/* to_thread(fn, ...): runs fn(...) in the default executor of the running
** loop and awaits its results. */
static int core_to_thread (lua_State *L) {
  static const loom_copywhere where = {1, 0, NULL};
  loom_loop *loop;
  loom_cfut *cf;
  int n = lua_gettop(L), loopidx;
  checkfn(L, 1);
  loop = intask(L, "to_thread");
  loopidx = lua_gettop(L);
  cf = submit(L, default_executor(L, loopidx, "to_thread"), 1, n, &where,
              "to_thread");
  wrap_cf(L, loop, loopidx, cf);
  lua_replace(L, 1);
  lua_settop(L, 1);
  return await_top(L);
}

/* _cpu_count(): the number of CPUs this process may use. */
static int core_cpu_count (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  return 1;
}

/* _default_executor(loop): the loop's default executor, or nil. */
static int core_default_executor (lua_State *L) {
  loom__checkloop(L, 1);
  if (!threadtable(L, 1, 0))
    return 0;
  lua_getfield(L, -1, "executor");
  return 1;
}

/*
** _forget_default_executor(loop): the loop has no default executor any
** more, and run_in_executor(nil) is refused from now on.
*/
static int core_forget_default_executor (lua_State *L) {
  loom__checkloop(L, 1);
  threadtable(L, 1, 1);
  lua_pushnil(L);
  lua_setfield(L, -2, "executor");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "executor_shutdown");
  return 0;
}

/* --- remote loops --- */

static loom_port *checkremote (lua_State *L, int idx) {
  loom_shared **box = (loom_shared **)luaL_checkudata(L, idx,
                                                      LOOM_REMOTELOOP_MT);
  return (loom_port *)*box;
}

/* The port of the loop or remote loop at idx; raises when closed. */
static loom_port *anyport (lua_State *L, int idx, const char *fname) {
  loom_port *p;
  int closed;
  if (luaL_testudata(L, idx, LOOM_LOOP_MT) != NULL) {
    loom__checkopen(L, idx, fname);
    return getport(L, idx);
  }
  if (luaL_testudata(L, idx, LOOM_REMOTELOOP_MT) == NULL)
    luaL_typeerror(L, idx, "loom.Loop or loom.RemoteLoop");
  p = checkremote(L, idx);
  uv_mutex_lock(&p->mu);
  closed = p->closed;
  uv_mutex_unlock(&p->mu);
  if (closed)
    luaL_error(L, "%s: event loop is closed", fname);
  return p;
}

/* remote:call_soon_threadsafe(fn, ...): fn(...) runs on the loop (copies). */
static int remote_call_soon_threadsafe (lua_State *L) {
  static const loom_copywhere where = {2, 0, NULL};
  loom_port *p = anyport(L, 1, "call_soon_threadsafe");
  loom_blob *b;
  loom_msg *m;
  checkfn(L, 2);
  b = loom__copy_encode(L, 2, lua_gettop(L) - 1, &where);
  m = msg_new(MSG_CALL, p, NULL, b);
  if (m == NULL) {
    loom__blob_free(b);
    return luaL_error(L, "not enough memory");
  }
  if (!port_post(m))
    return luaL_error(L, "call_soon_threadsafe: event loop is closed");
  return 0;
}

static int remote_is_closed (lua_State *L) {
  loom_port *p = checkremote(L, 1);
  int closed;
  uv_mutex_lock(&p->mu);
  closed = p->closed;
  uv_mutex_unlock(&p->mu);
  lua_pushboolean(L, closed);
  return 1;
}

static int remote_tostring (lua_State *L) {
  loom_port *p = checkremote(L, 1);
  lua_pushfstring(L, "loom.RemoteLoop %p", (void *)p);
  return 1;
}

static int remote_eq (lua_State *L) {
  lua_pushboolean(L, checkremote(L, 1) == checkremote(L, 2));
  return 1;
}

/*
** run_coroutine_threadsafe(fn, loop, ...): fn(...) runs as a task of the
** loop (a loom.Loop or a loom.RemoteLoop) with copies of the arguments;
** returns a concurrent future of its outcome. Cancelling that future
** cancels the task.
*/
static int core_run_coroutine_threadsafe (lua_State *L) {
  static const loom_copywhere where = {3, 1, NULL};
  int n = lua_gettop(L), i, top;
  loom_port *p;
  loom_blob *b;
  loom_cfut *cf;
  loom_msg *m;
  void **box;
  checkfn(L, 1);
  p = anyport(L, 2, "run_coroutine_threadsafe");  /* anchored by arg 2 */
  box = newbox(L, LOOM_CFUTURE_MT);
  top = lua_gettop(L);
  luaL_checkstack(L, n, "too many arguments");
  lua_pushvalue(L, 1);  /* the values to copy: fn, args... */
  for (i = 3; i <= n; i++)
    lua_pushvalue(L, i);
  b = loom__copy_encode(L, top + 1, n - 1, &where);
  lua_settop(L, top);
  cf = cf_new();
  if (cf == NULL) {
    loom__blob_free(b);
    return luaL_error(L, "not enough memory");
  }
  *box = cf;
  cf->cankind = CAN_TASK;
  cf->tport = p;
  loom__shared_retain(&p->sh);
  m = msg_new(MSG_TASK, p, &cf->sh, b);
  if (m == NULL) {
    loom__blob_free(b);
    return luaL_error(L, "not enough memory");
  }
  if (!port_post(m))
    return luaL_error(L, "run_coroutine_threadsafe: event loop is closed");
  return 1;
}

/* --- threads --- */

typedef struct thbox {
  lthread *t;
} thbox;

static lthread *checkthread (lua_State *L, int idx) {
  thbox *b = (thbox *)luaL_checkudata(L, idx, THREAD_MT);
  return b->t;
}

/* thread.start(fn, ...) -> thread */
static int core_thread_start (lua_State *L) {
  static const loom_copywhere where = {1, 0, NULL};
  lthread *t;
  thbox *b;
  int r;
  checkfn(L, 1);
  keeper_make(L);
  b = (thbox *)lua_newuserdatauv(L, sizeof *b, 0);
  b->t = NULL;
  luaL_setmetatable(L, THREAD_MT);
  lua_insert(L, 1);  /* box, fn, args... */
  t = (lthread *)calloc(1, sizeof *t);
  if (t == NULL)
    return luaL_error(L, "not enough memory");
  t->joined = 1;  /* nothing to join until it starts */
  b->t = t;
  t->cf = cf_new();
  if (t->cf == NULL)
    return luaL_error(L, "not enough memory");
  capture_paths(L, &t->path, &t->cpath);
  t->in = loom__copy_encode(L, 2, lua_gettop(L) - 1, &where);
  r = uv_thread_create(&t->tid, thread_main, t);
  if (r != 0)
    return luaL_error(L, "start: cannot start a thread: %s", uv_strerror(r));
  t->joined = 0;
  lua_settop(L, 1);
  return 1;
}

/* Joins the finished thread t if not joined yet. */
static void thread_reap (lthread *t) {
  if (!t->joined) {
    uv_thread_join(&t->tid);
    t->joined = 1;
  }
}

/* Continuation of join inside a task: the thread is done. */
static int join_k (lua_State *L, int status, lua_KContext ctx) {
  lthread *t = checkthread(L, 1);
  (void)status;
  if (t != NULL)
    thread_reap(t);
  return lua_gettop(L) - (int)ctx;
}

/*
** thread:join(): the thread's results (its function's), or raises its
** error. Inside a task it awaits; outside a running loop it blocks.
*/
static int thread_join (lua_State *L) {
  lthread *t = checkthread(L, 1);
  int done;
  if (t == NULL)
    return luaL_error(L, "join: the thread was not started");
  lua_settop(L, 1);
  uv_mutex_lock(&t->cf->mu);
  done = cf_isdone(t->cf->state);
  uv_mutex_unlock(&t->cf->mu);
  if (!done && loom__in_task(L)) {
    loom_loop *loop = intask(L, "join");
    wrap_cf(L, loop, 2, t->cf);
    lua_remove(L, 2);
    lua_getfield(L, 2, "await");
    lua_insert(L, 2);
    lua_callk(L, 1, LUA_MULTRET, 1, join_k);
    return join_k(L, LUA_OK, 1);
  }
  if (!done)
    cf_block(L, t->cf, -1, "join");
  thread_reap(t);
  return cf_push(L, t->cf, 1);
}

/* thread:is_alive() */
static int thread_is_alive (lua_State *L) {
  lthread *t = checkthread(L, 1);
  int alive = 0;
  if (t != NULL) {
    uv_mutex_lock(&t->cf->mu);
    alive = !cf_isdone(t->cf->state);
    uv_mutex_unlock(&t->cf->mu);
  }
  lua_pushboolean(L, alive);
  return 1;
}

/* thread:traceback(): the traceback of the error it ended with. */
static int thread_traceback (lua_State *L) {
  lthread *t = checkthread(L, 1);
  if (t == NULL)
    return 0;
  lua_settop(L, 0);
  loom__shared_push(L, &t->cf->sh);
  return cfut_traceback(L);
}

/* The thread's concurrent future: thread:_future() (specs, docs). */
static int thread_future (lua_State *L) {
  lthread *t = checkthread(L, 1);
  if (t == NULL)
    return 0;
  loom__shared_push(L, &t->cf->sh);
  return 1;
}

static int thread_gc (lua_State *L) {
  thbox *b = (thbox *)lua_touserdata(L, 1);
  lthread *t = b->t;
  int done;
  b->t = NULL;
  if (t == NULL)
    return 0;
  if (t->joined) {
    lthread_free(t);
    return 0;
  }
  uv_mutex_lock(&t->cf->mu);
  done = cf_isdone(t->cf->state);
  uv_mutex_unlock(&t->cf->mu);
  if (done) {
    thread_reap(t);
    lthread_free(t);
  }
  else
    keep(L, t, NULL);
  return 0;
}

static int thread_tostring (lua_State *L) {
  lthread *t = checkthread(L, 1);
  int done = 1;
  if (t != NULL) {
    uv_mutex_lock(&t->cf->mu);
    done = cf_isdone(t->cf->state);
    uv_mutex_unlock(&t->cf->mu);
  }
  lua_pushfstring(L, "loom.Thread (%s) %p", done ? "finished" : "running",
                  (void *)t);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Loop shutdown
** =======================================================
*/

/*
** Called by close() and __gc of the loop before its last uv_run. The
** default executor is shut down, its jobs cancelled (a running one
** interrupted) and its threads joined: this blocks until they stop. Every
** wait on another thread ends: the messages are taken back and freed,
** and the concurrent futures awaited are cancelled (a job of this loop
** stops). Tasks of run_coroutine_threadsafe will not finish: their
** concurrent futures are cancelled. The port then refuses messages and
** its handle closes; messages already queued are freed without Lua.
*/
void loom__thread_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  loom_port *p = (loom_port *)loop->thread_state;
  loom_msg *m, *next;
  if (lua_checkstack(L, 8) && threadtable(L, loopidx, 0)) {
    int t = lua_gettop(L);
    if (lua_getfield(L, t, "waits") == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        loom_msg *w = (loom_msg *)lua_touserdata(L, -2);
        lua_pop(L, 1);
        if (w != NULL && unlink_msg(w)) {
          if (w->owner->kind == LOOM_SHCFUT)
            cf_cancel((loom_cfut *)w->owner);
          loom__msg_free(w);
        }
      }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "tasks") == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        loom_cfut *cf = (loom_cfut *)lua_touserdata(L, -2);
        lua_pop(L, 1);
        if (cf != NULL)
          cf_complete(cf, CF_CANCELLED, 0, NULL, NULL, NULL);
      }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "executor") == LUA_TUSERDATA) {
      exbox *b = (exbox *)lua_touserdata(L, -1);
      executor *ex = b->ex;
      if (ex != NULL) {
        b->ex = NULL;
        ex_shutdown(ex, 1);
        ex_interrupt_all(ex);
        ex_join(ex);
        ex_release(ex);
      }
    }
    lua_pop(L, 2);
  }
  loom__loop_table_drop(L, loopidx, &thread_key);
  if (p == NULL)
    return;
  uv_mutex_lock(&p->mu);
  p->closed = 1;
  m = p->head;
  p->head = p->tail = NULL;
  uv_mutex_unlock(&p->mu);
  for (; m != NULL; m = next) {
    next = m->next;
    if (m->kind == MSG_TASK)
      cf_complete((loom_cfut *)m->owner, CF_CANCELLED, 0, NULL, NULL, NULL);
    loom__msg_free(m);
  }
  p->loop = NULL;
  loop->thread_state = NULL;
  uv_close((uv_handle_t *)&p->async, port_close_cb);
}

/* }====================================================== */


static const luaL_Reg cfut_methods[] = {
  {"result", cfut_result},
  {"exception", cfut_exception},
  {"done", cfut_done},
  {"cancelled", cfut_cancelled},
  {"running", cfut_running},
  {"cancel", cfut_cancel},
  {"traceback", cfut_traceback},
  {"await", cfut_await},
  {NULL, NULL}
};

static const luaL_Reg cfut_metamethods[] = {
  {"__gc", cfut_gc},
  {"__tostring", cfut_tostring},
  {NULL, NULL}
};

static const luaL_Reg ex_methods[] = {
  {"submit", ex_submit_m},
  {"shutdown", ex_shutdown_m},
  {"_threads", ex_nthreads},
  {NULL, NULL}
};

static const luaL_Reg ex_metamethods[] = {
  {"__gc", ex_gc},
  {"__close", ex_close},
  {"__tostring", ex_tostring},
  {NULL, NULL}
};

static const luaL_Reg remote_methods[] = {
  {"call_soon_threadsafe", remote_call_soon_threadsafe},
  {"is_closed", remote_is_closed},
  {NULL, NULL}
};

static const luaL_Reg remote_metamethods[] = {
  {"__gc", cfut_gc},  /* any box: drops its reference */
  {"__tostring", remote_tostring},
  {"__eq", remote_eq},
  {NULL, NULL}
};

static const luaL_Reg thread_methods[] = {
  {"join", thread_join},
  {"is_alive", thread_is_alive},
  {"traceback", thread_traceback},
  {"_future", thread_future},
  {NULL, NULL}
};

static const luaL_Reg thread_metamethods[] = {
  {"__gc", thread_gc},
  {"__tostring", thread_tostring},
  {NULL, NULL}
};

static const luaL_Reg thread_loop_methods[] = {
  {"run_in_executor", loop_run_in_executor},
  {NULL, NULL}
};

static const luaL_Reg thread_functions[] = {
  {"to_thread", core_to_thread},
  {"ThreadPoolExecutor", core_threadpool},
  {"wrap_future", core_wrap_future},
  {"run_coroutine_threadsafe", core_run_coroutine_threadsafe},
  {"_thread_start", core_thread_start},
  {"_cpu_count", core_cpu_count},
  {"_default_executor", core_default_executor},
  {"_forget_default_executor", core_forget_default_executor},
  {NULL, NULL}
};

/* A metatable with methods l and metamethods ml, named name. */
static void newclass (lua_State *L, const char *name, const luaL_Reg *l,
                      const luaL_Reg *ml) {
  luaL_newmetatable(L, name);
  loom__setfuncs(L, ml);
  lua_newtable(L);
  loom__setfuncs(L, l);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int loom__open_thread (lua_State *L) {
  newclass(L, LOOM_CFUTURE_MT, cfut_methods, cfut_metamethods);
  newclass(L, THREADPOOL_MT, ex_methods, ex_metamethods);
  newclass(L, LOOM_REMOTELOOP_MT, remote_methods, remote_metamethods);
  newclass(L, THREAD_MT, thread_methods, thread_metamethods);
  loom__loop_methods(L, thread_loop_methods);
  loom__setfuncs(L, thread_functions);
  return 0;
}
