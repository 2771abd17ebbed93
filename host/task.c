/*
** task.c
** Task: a future that drives a coroutine; await, sleep and cancellation.
*/

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
** What a task's coroutine yielded last, so the next step knows how to
** resume it. Awaiting yields the private await key and the future; sleep
** yields the sleep key and the deadline (nil for sleep(0)); anything else
** is a bare coroutine.yield(), which means sleep(0).
*/
enum { YIELD_NONE = 0, YIELD_AWAIT, YIELD_SLEEP, YIELD_BARE };

static const char await_key = 'a';
static const char sleep_key = 's';

/* Field 'spare' of the future header holds the yield state of a task. */
#define yielded(t) ((t)->f.spare)


/*
** {======================================================
** Helpers
** =======================================================
*/

loom_task *loom__totask (lua_State *L, int idx) {
  return (loom_task *)loom__testud(L, idx, LOOM_TTASK);
}

static loom_task *checktask (lua_State *L, int idx) {
  return (loom_task *)loom__checkud(L, idx, LOOM_TTASK);
}

/*
** The task whose coroutine is L; raises a clear error when L is not the
** coroutine of the task now running.
*/
static loom_task *intask (lua_State *L, const char *fname) {
  loom_loop *loop = loom__running();
  loom_task *t = loop ? loop->current : NULL;
  if (t == NULL)
    luaL_error(L, "%s: not inside a task (no task is running)", fname);
  if (t->co != L)
    luaL_error(L, "%s: called from a coroutine that is not a task "
               "(a plain coroutine inside a task cannot await)", fname);
  return t;
}

/* The task of a continuation; raises if the coroutine was resumed by
** anything other than its loop. */
static loom_task *resumed (lua_State *co) {
  loom_loop *loop = loom__running();
  loom_task *t = loop ? loop->current : NULL;
  if (t == NULL || t->co != co)
    luaL_error(co, "a task's coroutine was resumed by something other than "
               "its event loop");
  return t;
}

static void push_cancel_message (lua_State *L, int idx) {
  if (lua_getiuservalue(L, idx, LOOM_FUV_EXTRA) == LUA_TTABLE) {
    lua_getfield(L, -1, "cancel_message");
    lua_remove(L, -2);
  }
  else {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* Weak list of pending tasks, for all_tasks(): the task at idx joins the
** list of the loop at loopidx. */
static void tasks_add (lua_State *L, loom_loop *loop, int loopidx, loom_task *t,
                       int idx) {
  int slot;
  idx = lua_absindex(L, idx);
  if (loop->ntfree > 0)
    slot = loop->tfree[--loop->ntfree];
  else
    slot = ++loop->tmax;
  lua_getiuservalue(L, loopidx, LOOM_LUV_TASKS);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  t->wslot = slot;
}

/* The task at idx leaves the list. */
static void tasks_remove (lua_State *L, loom_loop *loop, loom_task *t, int idx) {
  int slot = t->wslot;
  if (slot == 0)
    return;
  t->wslot = 0;
  if (loop->closed)
    return;
  lua_getiuservalue(L, idx, LOOM_FUV_LOOP);
  lua_getiuservalue(L, -1, LOOM_LUV_TASKS);
  lua_remove(L, -2);
  lua_pushnil(L);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  if (loop->ntfree == loop->tfreecap) {
    int ncap = loop->tfreecap ? loop->tfreecap * 2 : 64;
    int *p = (int *)realloc(loop->tfree, (size_t)ncap * sizeof(int));
    if (p == NULL)
      return;  /* the slot is lost, nothing else */
    loop->tfree = p;
    loop->tfreecap = ncap;
  }
  loop->tfree[loop->ntfree++] = slot;
}

/* }====================================================== */


/*
** {======================================================
** The body: the task's function runs under a yieldable protected call
** inside its coroutine, so to-be-closed variables close (and may await)
** as the error unwinds, and a message handler keeps the traceback.
** =======================================================
*/

/* Keeps the traceback of an error leaving the body in the task's extra
** table; the error value goes on unchanged. */
static int body_msgh (lua_State *co) {
  loom_loop *loop = loom__running();
  loom_task *t = loop ? loop->current : NULL;
  if (t != NULL && t->co == co && t->wslot != 0 && loop->self_ref != LUA_NOREF
      && lua_checkstack(co, 6) && !loom__is_cancelled_error(co, 1)) {
    /* the task is pending, so it is in its loop's task list */
    lua_rawgeti(co, LUA_REGISTRYINDEX, loop->self_ref);
    lua_getiuservalue(co, -1, LOOM_LUV_TASKS);
    lua_rawgeti(co, -1, t->wslot);
    loom__extra(co, -1);
    luaL_traceback(co, co, NULL, 1);
    lua_setfield(co, -2, "traceback");
  }
  lua_settop(co, 1);
  return 1;
}

/* Stack: task, msgh, results... or task, msgh, error. */
static int body_k (lua_State *co, int status, lua_KContext ctx) {
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {
    loom_task *t = (loom_task *)lua_touserdata(co, 1);
    t->body_failed = 1;
    return 1;
  }
  return lua_gettop(co) - 2;
}

/* Stack: task, fn, args... */
static int body (lua_State *co) {
  int n = lua_gettop(co) - 2;
  lua_pushcfunction(co, body_msgh);
  lua_insert(co, 2);
  return body_k(co, lua_pcallk(co, n, LUA_MULTRET, 2, 0, body_k), 0);
}

/* }====================================================== */


/*
** {======================================================
** Creation
** =======================================================
*/

/*
** Makes a task running the function at fidx with the nargs values after
** it, schedules its first step and pushes it. [-0, +1, m]
*/
const char loom__rootctx_key = 'c';

/* Pushes a shallow copy of the table at idx. [-0, +1, m] */
static void copytable (lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

/*
** The new task at idx starts with a copy of the context of the task that
** creates it (the running task of its loop), or of the root context when
** no task runs, as asyncio's tasks copy the current context.
*/
static void inherit_context (lua_State *L, loom_loop *loop, loom_task *t,
                             int idx) {
  loom_task *parent = loop->running ? loop->current : NULL;
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  if (parent != NULL) {
    if (!parent->hasctx || parent->wslot == 0)
      return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
    lua_getiuservalue(L, -1, LOOM_LUV_TASKS);
    lua_rawgeti(L, -1, parent->wslot);
    lua_getiuservalue(L, -1, LOOM_FUV_EXTRA);
    lua_getfield(L, -1, "context");
  }
  else if (lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__rootctx_key) != LUA_TTABLE
           || (lua_pushnil(L), lua_next(L, -2) == 0)) {
    lua_settop(L, top);  /* no root context, or an empty one */
    return;
  }
  else
    lua_settop(L, top + 1);
  if (lua_istable(L, -1)) {
    copytable(L, -1);
    loom__extra(L, idx);
    lua_insert(L, -2);
    lua_setfield(L, -2, "context");
    t->hasctx = 1;
  }
  lua_settop(L, top);
}

int loom__task_new (lua_State *L, loom_loop *loop, int loopidx, int fidx,
                    int nargs) {
  loom_task *t;
  lua_State *co;
  int i;
  loopidx = lua_absindex(L, loopidx);
  fidx = lua_absindex(L, fidx);
  t = (loom_task *)lua_newuserdatauv(L, sizeof(loom_task), LOOM_FUV_TASK);
  memset(t, 0, sizeof(*t));
  loom__future_init(L, &t->f, loop, loopidx, LOOM_KTASK);
  loom__setmt(L, LOOM_TTASK);  /* co == NULL: __gc does nothing */
  co = lua_newthread(L);
  lua_setiuservalue(L, -2, LOOM_FUV_VALUE);
  luaL_checkstack(L, nargs + 2, "too many arguments");
  if (!lua_checkstack(co, nargs + 3))
    luaL_error(L, "create_task: too many arguments");
  lua_pushcfunction(L, body);
  lua_pushvalue(L, -2);  /* the task */
  for (i = 0; i <= nargs; i++)
    lua_pushvalue(L, fidx + i);
  lua_xmove(L, co, nargs + 3);
  t->co = co;
  tasks_add(L, loop, loopidx, t, -1);
  inherit_context(L, loop, t, -1);
  loom__ready_push(L, loop, loopidx, -1);
  t->id = ++loop->taskids;
  if (t->id == 0)
    t->id = ++loop->taskids;
  if (loop->current != NULL)
    t->parent = loop->current->id;
  if (loom__trace != NULL) {
    loom__trace_async(loop, "task", lua_pushfstring(L, "Task %d", (int)t->id),
                      t, 1);
    lua_pop(L, 1);
  }
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Stepping
** =======================================================
*/

/* Ends the task at idx: the coroutine finished with status/nres. */
/*
** Ends the task at idx: the coroutine finished with status/nres. The
** results (or the error value) move into the task, like a future's, and
** the coroutine is let go: a dead coroutine still holds its whole stack.
*/
static void finish (lua_State *L, loom_task *t, int idx, int status, int nres) {
  lua_State *co = t->co;
  t->waiter = NULL;
  yielded(t) = YIELD_NONE;
  if (status == LUA_OK && !t->body_failed) {
    if (t->must_cancel) {  /* cancelled right before it returned */
      t->must_cancel = 0;
      push_cancel_message(L, idx);
      loom__push_cancelled(L, lua_gettop(L));
      lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
      lua_pop(L, 1);
      t->f.state = LOOM_CANCELLED;
    }
    else {
      luaL_checkstack(L, nres + 1, "too many results");
      if (nres == 1) {
        lua_xmove(co, L, 1);
        lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
      }
      else if (nres > 1) {
        int i;
        lua_createtable(L, nres, 0);
        lua_xmove(co, L, nres);
        for (i = nres; i >= 1; i--)
          lua_rawseti(L, -i - 1, i);
        lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
      }
      else {
        lua_pushnil(L);
        lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
      }
      t->f.nres = nres;
      t->f.state = LOOM_FINISHED;
    }
  }
  else {
    lua_xmove(co, L, 1);  /* the error value */
    if (status != LUA_OK) {
      /* an error outside the body (its message handler, memory): keep the
      ** traceback of the dead coroutine, then close what it left open */
      loom__extra(L, idx);
      luaL_traceback(L, co, NULL, 0);
      lua_setfield(L, -2, "traceback");
      lua_pop(L, 1);
      lua_resetthread(co);
    }
    if (loom__is_cancelled_error(L, -1))
      t->f.state = LOOM_CANCELLED;
    else {
      t->f.state = LOOM_FINISHED;
      t->f.fflags |= LOOM_FERROR | LOOM_FUNRETRIEVED;
    }
    lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
  }
  t->co = NULL;
  tasks_remove(L, t->f.loop, t, idx);
  loom__future_schedule(L, &t->f, idx);
  if (loom__trace != NULL && lua_checkstack(L, 1)) {
    loom__trace_async(t->f.loop, "task", lua_pushfstring(L, "Task %d",
                      (int)t->id), t, 0);
    lua_pop(L, 1);
  }
}

/* Cancels the waiter (the future at top); returns whether it was pending. */
static int cancel_waiter (lua_State *L, int msgidx);

/*
** Runs one step of the task at idx: resumes its coroutine until it
** awaits, sleeps, yields or ends.
*/
void loom__task_step (lua_State *L, loom_task *t, int idx, int loopidx) {
  loom_loop *loop = t->f.loop;
  lua_State *co = t->co;
  loom_task *prev;
  int nargs = 0, status, nres, lidx, top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  if (loopidx != 0)  /* the loop userdata, for scheduling */
    lidx = loopidx;
  else {
    lua_getiuservalue(L, idx, LOOM_FUV_LOOP);
    lidx = lua_gettop(L);
  }
  if (t->sleep_due) {
    /* the sleep ended in this iteration: like asyncio's sleep future, it
    ** wakes the task in the next one */
    t->sleep_due = 0;
    loom__ready_push(L, loop, lidx, idx);
    lua_settop(L, top);
    return;
  }
  if (t->must_cancel && yielded(t) == YIELD_BARE) {
    /* CancelledError cannot be raised inside a bare coroutine.yield(): the
    ** task ends there, cancelled, with its pending <close> variables
    ** closed */
    prev = loop->current;
    loop->current = t;
    lua_resetthread(co);
    loop->current = prev;
    finish(L, t, idx, LUA_OK, 0);
    lua_settop(L, top);
    return;
  }
  if (t->must_cancel) {
    t->must_cancel = 0;
    t->throw_cancel = 1;
  }
  if (!t->started) {
    t->started = 1;
    if (t->throw_cancel) {  /* cancelled before it ever ran */
      t->throw_cancel = 0;
      t->must_cancel = 1;
      finish(L, t, idx, LUA_OK, 0);
      lua_settop(L, top);
      return;
    }
    nargs = lua_gettop(co) - 1;
  }
  else {
    lua_pop(co, t->nyield);
    t->nyield = 0;
    if (t->throw_cancel) {
      push_cancel_message(L, idx);
      lua_xmove(L, co, 1);
      nargs = 1;
    }
  }
  yielded(t) = YIELD_NONE;
  prev = loop->current;
  loop->current = t;
  status = lua_resume(co, L, nargs, &nres);
  loop->current = prev;
  t->throw_cancel = 0;
  if (status != LUA_YIELD) {
    finish(L, t, idx, status, nres);
    lua_settop(L, top);
    return;
  }
  t->nyield = nres;  /* the yielded values stay on co's stack until the
                        next step */
  {
    const void *key = nres == 2 ? lua_touserdata(co, -2) : NULL;
    if (key == &await_key) {
      loom_future *fut = (loom_future *)lua_touserdata(co, -1);
      lua_pushvalue(co, -1);
      lua_xmove(co, L, 1);
      t->waiter = fut;
      yielded(t) = YIELD_AWAIT;
      loom__future_add_callback(L, fut, -1, idx, LOOM_CBTASK);
      if (t->must_cancel) {  /* cancel() came while the task ran */
        int futidx = lua_gettop(L);
        push_cancel_message(L, idx);
        lua_pushvalue(L, futidx);  /* cancel_waiter takes it from the top */
        if (cancel_waiter(L, futidx + 1))
          t->must_cancel = 0;
      }
    }
    else if (key == &sleep_key) {
      yielded(t) = YIELD_SLEEP;
      if (lua_isnil(co, -1) || t->must_cancel)
        loom__ready_push(L, loop, lidx, idx);
      else
        loom__heap_push(L, loop, lidx, idx, lua_tonumber(co, -1),
                        &t->sleep_seq);
    }
    else {
      yielded(t) = YIELD_BARE;
      loom__ready_push(L, loop, lidx, idx);
    }
  }
  lua_settop(L, top);
}

/* The future the task at cbidx awaited is done: step it. */
void loom__task_wakeup (lua_State *L, loom_task *t, int idx, int loopidx) {
  if (t->f.state != LOOM_PENDING || yielded(t) != YIELD_AWAIT)
    return;  /* stale wakeup */
  t->waiter = NULL;
  loom__task_step(L, t, idx, loopidx);
}

/*
** The future f, which the task at idx awaits, is done: queues the task's
** step on the loop at loopidx, the entry its wakeup would have had. A
** task that no longer awaits f is left alone.
*/
void loom__task_wake (lua_State *L, loom_task *t, loom_future *f, int idx,
                      int loopidx) {
  if (t->f.state != LOOM_PENDING || yielded(t) != YIELD_AWAIT
      || t->waiter != f)
    return;
  t->waiter = NULL;
  loom__ready_push(L, t->f.loop, loopidx, idx);
}

/*
** Requests cancellation of the task at idx with the message at msgidx;
** returns whether the task was pending.
*/
int loom__task_cancel (lua_State *L, loom_task *t, int idx, int msgidx) {
  idx = lua_absindex(L, idx);
  msgidx = lua_absindex(L, msgidx);
  if (t->f.state != LOOM_PENDING)
    return 0;
  t->ncancels++;
  if (!lua_isnil(L, msgidx)) {
    loom__extra(L, idx);
    lua_pushvalue(L, msgidx);
    lua_setfield(L, -2, "cancel_message");
    lua_pop(L, 1);
  }
  if (yielded(t) == YIELD_AWAIT && t->waiter != NULL) {
    int r;
    lua_pushvalue(t->co, -1);  /* the waiter, left on co's stack */
    lua_xmove(t->co, L, 1);
    r = cancel_waiter(L, msgidx);
    lua_pop(L, 1);
    if (r)
      return 1;  /* it wakes the task with CancelledError */
  }
  t->must_cancel = 1;
  if (yielded(t) == YIELD_SLEEP && t->sleep_seq != 0) {
    t->sleep_seq = 0;  /* its heap entry is dead now */
    loom__heap_cancelled(t->f.loop);
    lua_getiuservalue(L, idx, LOOM_FUV_LOOP);
    loom__ready_push(L, t->f.loop, -1, idx);
    lua_pop(L, 1);
  }
  return 1;
}

static int cancel_waiter (lua_State *L, int msgidx) {
  loom_task *w = loom__totask(L, -1);
  if (w != NULL)
    return loom__task_cancel(L, w, -1, msgidx);
  return loom__future_cancel(L, (loom_future *)lua_touserdata(L, -1), -1,
                             msgidx);
}

/* }====================================================== */


/*
** {======================================================
** await and sleep
** =======================================================
*/

static int raise_cancel (lua_State *co) {
  /* the step passed the cancel message as the resume value */
  loom__push_cancelled(co, lua_gettop(co));
  return lua_error(co);
}

/* Stack: fut [, cancel message] */
static int await_k (lua_State *co, int status, lua_KContext ctx) {
  loom_task *t = resumed(co);
  (void)status; (void)ctx;
  if (t->throw_cancel) {
    t->throw_cancel = 0;
    return raise_cancel(co);
  }
  lua_settop(co, 1);
  return loom__future_push_results(co, (loom_future *)lua_touserdata(co, 1), 1);
}

/*
** await(fut): returns the future's results, or raises its error; suspends
** the running task until the future is done.
*/
static int core_await (lua_State *L) {
  loom_future *f = loom__tofuture(L, 1);
  loom_task *t;
  if (f == NULL)
    return luaL_typeerror(L, 1, "loom.Future");
  lua_settop(L, 1);
  if (f->state != LOOM_PENDING)
    return loom__future_push_results(L, f, 1);
  t = intask(L, "await");
  if (f == &t->f)
    return luaL_error(L, "await: a task cannot await itself");
  if (f->loop != t->f.loop)
    return luaL_error(L, "await: the future belongs to a different event "
                      "loop");
  lua_pushlightuserdata(L, (void *)&await_key);
  lua_pushvalue(L, 1);
  return lua_yieldk(L, 2, 0, await_k);
}

/*
** For the core's C functions that await (streambuf.c's reads), without a
** call of await: L must be the coroutine of the running task and the
** future at fidx a pending future of the task's loop (the caller checks
** both). Suspends the task until the future is done; k then resumes the
** function with the stack it had at the call (plus the cancel message on
** top when the task is being cancelled), and must call
** loom__await_resumed first.
*/
int loom__await_yield (lua_State *L, int fidx, lua_KContext ctx,
                       lua_KFunction k) {
  fidx = lua_absindex(L, fidx);
  lua_pushlightuserdata(L, (void *)&await_key);
  lua_pushvalue(L, fidx);
  return lua_yieldk(L, 2, ctx, k);
}

/*
** What await does once resumed, for the future at fidx that
** loom__await_yield waited on: raises CancelledError when the task was
** cancelled, or the future's error; else pushes its results and returns
** how many.
*/
int loom__await_resumed (lua_State *co, int fidx) {
  loom_task *t = resumed(co);
  if (t->throw_cancel) {
    t->throw_cancel = 0;
    return raise_cancel(co);
  }
  fidx = lua_absindex(co, fidx);
  return loom__future_push_results(co, (loom_future *)lua_touserdata(co, fidx),
                                   fidx);
}

/* Stack: delay, values... [, cancel message] */
static int sleep_k (lua_State *co, int status, lua_KContext ctx) {
  loom_task *t = resumed(co);
  (void)status; (void)ctx;
  if (t->throw_cancel) {
    t->throw_cancel = 0;
    return raise_cancel(co);
  }
  return lua_gettop(co) - 1;
}

/*
** sleep(delay, ...): suspends the running task for delay seconds and
** returns the extra arguments.
*/
static int core_sleep (lua_State *L) {
  double d = luaL_checknumber(L, 1);
  loom_task *t;
  if (isnan(d))
    return luaL_argerror(L, 1, "delay is NaN");
  if (d < 0)
    return luaL_argerror(L, 1, "delay is negative");
  t = intask(L, "sleep");
  lua_pushlightuserdata(L, (void *)&sleep_key);
  if (d == 0)
    lua_pushnil(L);
  else
    lua_pushnumber(L, loom__now(t->f.loop) + d);
  return lua_yieldk(L, 2, 0, sleep_k);
}

/* }====================================================== */


/*
** {======================================================
** Lua methods and functions
** =======================================================
*/

static int task_cancel (lua_State *L) {
  loom_task *t = checktask(L, 1);
  lua_settop(L, 2);
  lua_pushboolean(L, loom__task_cancel(L, t, 1, 2));
  return 1;
}

static int task_cancelling (lua_State *L) {
  lua_pushinteger(L, checktask(L, 1)->ncancels);
  return 1;
}

static int task_uncancel (lua_State *L) {
  loom_task *t = checktask(L, 1);
  if (t->ncancels > 0) {
    t->ncancels--;
    if (t->ncancels == 0)
      t->must_cancel = 0;
  }
  lua_pushinteger(L, t->ncancels);
  return 1;
}

static int task_get_name (lua_State *L) {
  loom_task *t = checktask(L, 1);
  if (lua_getiuservalue(L, 1, LOOM_FUV_EXTRA) == LUA_TTABLE
      && lua_getfield(L, -1, "name") != LUA_TNIL)
    return 1;
  lua_pushfstring(L, "Task-%d", (int)t->id);
  return 1;
}

static int task_set_name (lua_State *L) {
  checktask(L, 1);
  luaL_checkany(L, 2);
  luaL_tolstring(L, 2, NULL);
  loom__extra(L, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, "name");
  return 0;
}

/* The task's coroutine while the task is pending; nil once it is done. */
static int task_get_coro (lua_State *L) {
  loom_task *t = checktask(L, 1);
  if (t->f.state != LOOM_PENDING)
    return 0;
  lua_getiuservalue(L, 1, LOOM_FUV_VALUE);
  return 1;
}

static int task_no_set (lua_State *L) {
  checktask(L, 1);
  return luaL_error(L, "tasks do not support set_result or set_exception");
}

static int task_tostring (lua_State *L) {
  loom_task *t = checktask(L, 1);
  static const char *const names[] = {"pending", "finished", "cancelled"};
  lua_settop(L, 1);
  task_get_name(L);
  lua_pushfstring(L, "<Task %s %s%s>", lua_tostring(L, -1), names[t->f.state],
                  (t->f.fflags & LOOM_FERROR) ? " with error" : "");
  return 1;
}

static int task_gc (lua_State *L) {
  loom_task *t = (loom_task *)lua_touserdata(L, 1);
  loom_loop *loop = t->f.loop;
  const char *msg = NULL;
  if (t->id == 0)
    return 0;  /* never finished construction */
  if (t->f.state == LOOM_PENDING) {
    if (t->wslot != 0 && !loop->closed) {
      msg = "Task was destroyed but it is pending!";
      tasks_remove(L, loop, t, 1);
    }
    t->wslot = 0;
  }
  else if (t->f.fflags & LOOM_FUNRETRIEVED) {
    msg = "Task exception was never retrieved";
    t->f.fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
  }
  if (msg != NULL) {
    lua_settop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, msg);
    lua_setfield(L, 2, "message");
    lua_pushvalue(L, 1);
    lua_setfield(L, 2, "task");
    if (t->f.state != LOOM_PENDING) {
      lua_getiuservalue(L, 1, LOOM_FUV_VALUE);
      lua_setfield(L, 2, "exception");
      if (lua_getiuservalue(L, 1, LOOM_FUV_EXTRA) == LUA_TTABLE) {
        lua_getfield(L, -1, "traceback");
        lua_setfield(L, 2, "traceback");
      }
      lua_pop(L, 1);
    }
    lua_getiuservalue(L, 1, LOOM_FUV_LOOP);
    loom__report(L, 3, 2);
  }
  return 0;
}

/*
** current_task([loop]): the task running now, nil in a plain callback; an
** error when no loop runs, as in asyncio.
*/
static int core_current_task (lua_State *L) {
  loom_loop *loop = loom__running();
  if (!lua_isnoneornil(L, 1)) {
    loop = loom__checkloop(L, 1);
    if (!loop->running)
      return 0;
  }
  else if (loop == NULL || loop->self_ref == LUA_NOREF)
    return luaL_error(L, "current_task: no running event loop");
  if (loop->current == NULL)
    return 0;
  /* a running task is pending, so it is in the weak task list */
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  lua_getiuservalue(L, -1, LOOM_LUV_TASKS);
  lua_rawgeti(L, -1, loop->current->wslot);
  return 1;
}

/* all_tasks([loop]): list of the pending tasks of the loop. */
static int core_all_tasks (lua_State *L) {
  loom_loop *loop;
  int i, n = 0;
  if (!lua_isnoneornil(L, 1))
    loop = loom__checkloop(L, 1);
  else {
    loop = loom__running();
    if (loop == NULL || loop->self_ref == LUA_NOREF)
      return luaL_error(L, "all_tasks: no running event loop");
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  }
  lua_settop(L, 1);
  lua_newtable(L);
  if (loop->closed)
    return 1;
  lua_getiuservalue(L, 1, LOOM_LUV_TASKS);
  for (i = 1; i <= loop->tmax; i++) {
    if (lua_rawgeti(L, -1, i) != LUA_TNIL) {
      loom_task *t = (loom_task *)lua_touserdata(L, -1);
      if (t->f.state == LOOM_PENDING) {
        lua_rawseti(L, -3, ++n);
        continue;
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

/*
** new_task(loop, fn, ...): a task of the loop, made without the loop's
** task factory (what a factory calls). loom.Task in Lua.
*/
static int core_new_task (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "Task");
  if (lua_type(L, 2) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, 2, "__call") == LUA_TNIL)
      luaL_typeerror(L, 2, "function");
    lua_pop(L, 1);
  }
  loom__task_new(L, loop, 1, 2, lua_gettop(L) - 2);
  return 1;
}

/* _task_traceback(task): the traceback kept when its body raised. */
static int core_task_traceback (lua_State *L) {
  checktask(L, 1);
  if (lua_getiuservalue(L, 1, LOOM_FUV_EXTRA) != LUA_TTABLE)
    return 0;
  lua_getfield(L, -1, "traceback");
  return 1;
}

/*
** _context(task [, create]): the task's context table (made when create
** is true and it has none), or nil. _context(nil, root) sets the root
** context, the one used outside tasks.
*/
static int core_context (lua_State *L) {
  loom_task *t;
  if (lua_isnil(L, 1)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &loom__rootctx_key);
    return 0;
  }
  t = checktask(L, 1);
  if (t->hasctx) {
    lua_getiuservalue(L, 1, LOOM_FUV_EXTRA);
    lua_getfield(L, -1, "context");
    return 1;
  }
  if (!lua_toboolean(L, 2))
    return 0;
  loom__extra(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "context");
  t->hasctx = 1;
  return 1;
}

/*
** task:get_stack([limit]): the Lua frames a pending task is suspended in,
** oldest first, each {source =, line =, name =, what =}; at most limit
** of the newest. Empty for a task not started or done.
*/
static int task_get_stack (lua_State *L) {
  loom_task *t = checktask(L, 1);
  lua_Integer limit = luaL_optinteger(L, 2, LUA_MAXINTEGER);
  lua_Debug ar;
  int level, n = 0, i;
  luaL_argcheck(L, limit >= 0, 2, "limit must be >= 0");
  lua_newtable(L);
  if (t->f.state != LOOM_PENDING || !t->started || t->co == NULL)
    return 1;
  for (level = 0; n < limit && lua_getstack(t->co, level, &ar); level++) {
    lua_getinfo(t->co, "Sln", &ar);
    if (ar.what[0] == 'C')
      continue;  /* loom's own await and the body's protected call */
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ar.short_src);
    lua_setfield(L, -2, "source");
    lua_pushinteger(L, ar.currentline);
    lua_setfield(L, -2, "line");
    if (ar.name != NULL)
      lua_pushstring(L, ar.name);
    else if (ar.what[0] == 'm')
      lua_pushliteral(L, "main chunk");
    else
      lua_pushfstring(L, "function <%s:%d>", ar.short_src, ar.linedefined);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ar.what);
    lua_setfield(L, -2, "what");
    lua_rawseti(L, -2, ++n);
  }
  for (i = 1; i <= n / 2; i++) {  /* newest first -> oldest first */
    lua_rawgeti(L, -1, i);
    lua_rawgeti(L, -2, n + 1 - i);
    lua_rawseti(L, -3, i);
    lua_rawseti(L, -2, n + 1 - i);
  }
  return 1;
}

/*
** _task_info(task): {id =, parent =, started =, awaiting = the future or
** task it awaits, sleep_until = the loop time its sleep ends, or
** sleeping = true for sleep(0)}, for task_tree().
*/
static int core_task_info (lua_State *L) {
  loom_task *t = checktask(L, 1);
  loom_loop *loop = t->f.loop;
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, t->id);
  lua_setfield(L, -2, "id");
  if (t->parent != 0) {
    lua_pushinteger(L, t->parent);
    lua_setfield(L, -2, "parent");
  }
  lua_pushboolean(L, t->started);
  lua_setfield(L, -2, "started");
  if (t->f.state != LOOM_PENDING)
    return 1;
  if (t->waiter != NULL && yielded(t) == YIELD_AWAIT && t != loop->current
      && lua_checkstack(t->co, 1)) {
    lua_pushvalue(t->co, -1);  /* the waiter, left on co's stack */
    lua_xmove(t->co, L, 1);
    lua_setfield(L, -2, "awaiting");
  }
  if (t->sleep_seq != 0) {
    int i;
    for (i = 0; i < loop->nheap; i++) {
      if (loop->heap[i].seq == t->sleep_seq) {
        lua_pushnumber(L, loop->heap[i].when);
        lua_setfield(L, -2, "sleep_until");
        break;
      }
    }
  }
  else if (t->sleep_due || yielded(t) == YIELD_SLEEP
           || yielded(t) == YIELD_BARE) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "sleeping");
  }
  return 1;
}

/* _set_errors(classes): the error classes the core raises. */
static int core_set_errors (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  return 0;
}

static const luaL_Reg task_methods[] = {
  {"cancel", task_cancel},
  {"cancelling", task_cancelling},
  {"uncancel", task_uncancel},
  {"get_name", task_get_name},
  {"set_name", task_set_name},
  {"get_coro", task_get_coro},
  {"get_stack", task_get_stack},
  {"set_result", task_no_set},
  {"set_exception", task_no_set},
  {"await", core_await},
  {NULL, NULL}
};

static const luaL_Reg task_metamethods[] = {
  {"__tostring", task_tostring},
  {"__gc", task_gc},
  {NULL, NULL}
};

static const luaL_Reg task_functions[] = {
  {"await", core_await},
  {"sleep", core_sleep},
  {"current_task", core_current_task},
  {"new_task", core_new_task},
  {"all_tasks", core_all_tasks},
  {"_task_traceback", core_task_traceback},
  {"_task_info", core_task_info},
  {"_set_errors", core_set_errors},
  {"_context", core_context},
  {NULL, NULL}
};

int loom__open_task (lua_State *L) {
  loom__newmt(L, LOOM_TTASK);
  loom__setfuncs(L, task_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, loom__future_methods);
  loom__setfuncs(L, task_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  /* futures are awaitable too */
  luaL_getmetatable(L, LOOM_FUTURE_MT);
  lua_getfield(L, -1, "__index");
  {
    static const luaL_Reg await_method[] = {{"await", core_await}, {NULL, NULL}};
    loom__setfuncs(L, await_method);
  }
  lua_pop(L, 2);
  loom__setfuncs(L, task_functions);  /* into the module table */
  return 0;
}

/* }====================================================== */
