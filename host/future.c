/*
** future.c
** Future: a result (several Lua values) or an error value that arrives
** later, with done callbacks scheduled through the ready queue.
*/

#include <stdio.h>

#include "internal.h"

const char loom__errors_key = 'e';

static const char *const state_names[] = {"pending", "finished", "cancelled"};


/*
** {======================================================
** Error values
** =======================================================
*/

/*
** Pushes a new instance of the error class named cls (from the table the
** Lua side registers), or the string "cls: msg" when there is none.
** [-0, +1, m]
*/
void loom__push_error (lua_State *L, const char *cls, const char *msg) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  if (lua_istable(L, -1) && lua_getfield(L, -1, cls) != LUA_TNIL) {
    lua_remove(L, -2);
    if (msg)
      lua_pushstring(L, msg);
    else
      lua_pushnil(L);
    lua_call(L, 1, 1);
    return;
  }
  lua_pop(L, 2);
  if (msg)
    lua_pushfstring(L, "%s: %s", cls, msg);
  else
    lua_pushstring(L, cls);
}

/*
** Pushes an OSError for the libuv error code err: .code is the error's
** name ("ECONNREFUSED"), .errno the code, the message "ECONNREFUSED:
** connection refused", prefixed by "what: " when what is given.
** [-0, +1, m]
*/
void loom__push_oserror (lua_State *L, int err, const char *what) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  if (!lua_istable(L, -1) || lua_getfield(L, -1, "OSError") == LUA_TNIL) {
    lua_pop(L, lua_istable(L, -1) ? 2 : 1);
    if (what)
      lua_pushfstring(L, "%s: %s: %s", what, uv_err_name(err), uv_strerror(err));
    else
      lua_pushfstring(L, "%s: %s", uv_err_name(err), uv_strerror(err));
    return;
  }
  lua_remove(L, -2);
  if (what)
    lua_pushfstring(L, "%s: %s: %s", what, uv_err_name(err), uv_strerror(err));
  else
    lua_pushfstring(L, "%s: %s", uv_err_name(err), uv_strerror(err));
  lua_createtable(L, 0, 2);
  lua_pushstring(L, uv_err_name(err));
  lua_setfield(L, -2, "code");
  lua_pushinteger(L, err);
  lua_setfield(L, -2, "errno");
  lua_call(L, 2, 1);
}

/* Pushes CancelledError(msg) with the message at msgidx (0: none). */
void loom__push_cancelled (lua_State *L, int msgidx) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  if (lua_istable(L, -1) && lua_getfield(L, -1, "CancelledError") != LUA_TNIL) {
    lua_remove(L, -2);
    if (msgidx)
      lua_pushvalue(L, msgidx);
    else
      lua_pushnil(L);
    lua_call(L, 1, 1);
    return;
  }
  lua_pop(L, 2);
  lua_pushliteral(L, "CancelledError");
}

/* Says whether the value at idx is a CancelledError instance. */
int loom__is_cancelled_error (lua_State *L, int idx) {
  int r = 0;
  idx = lua_absindex(L, idx);
  if (!lua_getmetatable(L, idx))
    return 0;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loom__errors_key);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "CancelledError");
    r = lua_rawequal(L, -1, -3);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return r;
}

static int raise_error (lua_State *L, const char *cls, const char *msg) {
  loom__push_error(L, cls, msg);
  return lua_error(L);
}

/* }====================================================== */


/*
** {======================================================
** Construction and checks
** =======================================================
*/

loom_future *loom__tofuture (lua_State *L, int idx) {
  loom_future *f = (loom_future *)lua_touserdata(L, idx);
  if (f != NULL && lua_getmetatable(L, idx)) {
    if (!lua_rawequal(L, -1, loom__mtindex(LOOM_TFUTURE))
        && !lua_rawequal(L, -1, loom__mtindex(LOOM_TTASK))
        && !lua_rawequal(L, -1, loom__mtindex(LOOM_TFUTUREGC)))
      f = NULL;
    lua_pop(L, 1);
    return f;
  }
  return NULL;
}

loom_future *loom__checkfuture (lua_State *L, int idx) {
  loom_future *f = loom__tofuture(L, idx);
  if (f == NULL)
    luaL_typeerror(L, idx, "loom.Future");
  return f;
}

/* Pushes the extra table of the future at idx, making it if needed. */
void loom__extra (lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, LOOM_FUV_EXTRA) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, LOOM_FUV_EXTRA);
  }
}

/*
** Initialises the future part of a new userdata (at the top of the
** stack) owned by the loop at loopidx.
*/
void loom__future_init (lua_State *L, loom_future *f, loom_loop *loop,
                        int loopidx, int kind) {
  f->h.kind = (uint8_t)kind;
  f->h.flags = 0;
  f->h.spare = 0;
  f->h.n = 0;
  f->state = LOOM_PENDING;
  f->fflags = 0;
  f->spare = 0;
  f->nres = 0;
  f->loop = loop;
  lua_pushvalue(L, loopidx);
  lua_setiuservalue(L, -2, LOOM_FUV_LOOP);
}

/* Pushes a new pending future of the loop at loopidx. [-0, +1, m] */
int loom__future_new (lua_State *L, loom_loop *loop, int loopidx) {
  loom_future *f;
  loopidx = lua_absindex(L, loopidx);
  f = (loom_future *)lua_newuserdatauv(L, sizeof(loom_future), LOOM_FUV_FUTURE);
  loom__future_init(L, f, loop, loopidx, LOOM_KFUTURE);
  loom__setmt(L, LOOM_TFUTURE);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Callbacks
** =======================================================
*/

/*
** The future at idx is now done: queue it so that its callbacks run in
** the next iteration, in registration order.
*/
void loom__future_schedule (lua_State *L, loom_future *f, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, LOOM_FUV_CALLBACKS) != LUA_TNIL
      && !(f->fflags & LOOM_FSCHEDULED)) {
    lua_getiuservalue(L, idx, LOOM_FUV_LOOP);
    if (f->fflags & LOOM_FTASKCB) {
      /* the one callback is the task awaiting f: its step is queued
      ** itself, with no entry for f to run first */
      f->fflags &= (uint8_t)~LOOM_FTASKCB;
      lua_pushnil(L);
      lua_setiuservalue(L, idx, LOOM_FUV_CALLBACKS);
      loom__task_wake(L, (loom_task *)lua_touserdata(L, -2), f, -2, -1);
    }
    else {
      f->fflags |= LOOM_FSCHEDULED;
      loom__ready_push(L, f->loop, -1, idx);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/*
** Adds the callable (or task) at cbidx to the done callbacks of the
** future at idx. On a done future it is scheduled at once with call_soon,
** so it runs after whatever is already queued.
*/
void loom__future_add_callback (lua_State *L, loom_future *f, int idx,
                                int cbidx, int kind) {
  idx = lua_absindex(L, idx);
  cbidx = lua_absindex(L, cbidx);
  if (f->state != LOOM_PENDING) {
    lua_getiuservalue(L, idx, LOOM_FUV_LOOP);
    lua_pushvalue(L, cbidx);
    lua_pushvalue(L, idx);
    loom__newhandle(L, f->loop, LOOM_KHANDLE, -2, 1, 0);
    loom__ready_push(L, f->loop, -4, -1);
    lua_pop(L, 4);
    return;
  }
  if (lua_getiuservalue(L, idx, LOOM_FUV_CALLBACKS) == LUA_TNIL) {
    lua_pushvalue(L, cbidx);
    lua_setiuservalue(L, idx, LOOM_FUV_CALLBACKS);
    if (kind == LOOM_CBTASK)
      f->fflags |= LOOM_FTASKCB;
    else if (kind == LOOM_CBGATHER)
      f->fflags |= LOOM_FGATHERCB;
  }
  else if (f->fflags & LOOM_FMANYCB) {
    lua_pushvalue(L, cbidx);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  }
  else {
    lua_createtable(L, 4, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, cbidx);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, idx, LOOM_FUV_CALLBACKS);
    f->fflags |= LOOM_FMANYCB;
    f->fflags &= (uint8_t)~(LOOM_FTASKCB | LOOM_FGATHERCB);
  }
  lua_pop(L, 1);
}

/* Calls one done callback (at cbidx) of the future at idx; kind is a
** LOOM_CB* value, or -1 when not known. */
static void call_one (lua_State *L, loom_future *f, int idx, int cbidx,
                      int kind, int loopidx) {
  int base;
  if (kind < 0) {
    kind = LOOM_CBLUA;
    if (lua_type(L, cbidx) == LUA_TUSERDATA) {
      if (loom__totask(L, cbidx) != NULL)
        kind = LOOM_CBTASK;
      else if (loom__testud(L, cbidx, LOOM_TGATHER) != NULL)
        kind = LOOM_CBGATHER;
    }
  }
  if (kind == LOOM_CBTASK) {
    loom__task_wakeup(L, (loom_task *)lua_touserdata(L, cbidx), cbidx,
                      loopidx);
    return;
  }
  if (kind == LOOM_CBGATHER) {
    loom__gather_done(L, cbidx, f, idx);
    return;
  }
  base = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushvalue(L, cbidx);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 0, base + 1) != LUA_OK) {
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "Exception in done callback of ");
    luaL_tolstring(L, idx, NULL);
    lua_concat(L, 2);
    lua_setfield(L, -2, "message");
    if (lua_istable(L, -2)) {
      lua_getfield(L, -2, "exception");
      lua_setfield(L, -2, "exception");
      lua_getfield(L, -2, "traceback");
      lua_setfield(L, -2, "traceback");
    }
    else {
      lua_pushvalue(L, -2);
      lua_setfield(L, -2, "exception");
    }
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "future");
    lua_getiuservalue(L, idx, LOOM_FUV_LOOP);
    loom__report(L, -1, -2);
  }
  lua_settop(L, base);
}

/*
** Runs the done callbacks of the future at idx, taking the list first:
** callbacks added meanwhile are scheduled on their own.
*/
void loom__future_run_callbacks (lua_State *L, loom_future *f, int idx,
                                 int loopidx) {
  int many = f->fflags & LOOM_FMANYCB;
  /* one task to wake never gets here: loom__future_schedule queued it */
  int kind = (f->fflags & LOOM_FGATHERCB) ? LOOM_CBGATHER : LOOM_CBLUA;
  f->fflags &= (uint8_t)~(LOOM_FSCHEDULED | LOOM_FMANYCB | LOOM_FTASKCB
                          | LOOM_FGATHERCB);
  lua_getiuservalue(L, idx, LOOM_FUV_CALLBACKS);
  lua_pushnil(L);
  lua_setiuservalue(L, idx, LOOM_FUV_CALLBACKS);
  if (!many) {
    if (!lua_isnil(L, -1))
      call_one(L, f, idx, lua_gettop(L), kind, loopidx);
  }
  else {
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
    int list = lua_gettop(L);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, list, i);
      call_one(L, f, idx, list + 1, -1, loopidx);
      lua_settop(L, list);
    }
  }
  lua_pop(L, 1);
}

/* }====================================================== */


/*
** {======================================================
** Completion and results
** =======================================================
*/

static void checkpending (lua_State *L, loom_future *f, const char *fname) {
  if (f->state != LOOM_PENDING) {
    char buf[80];
    snprintf(buf, sizeof buf, "%s: future is already %s", fname,
             state_names[f->state]);
    raise_error(L, "InvalidStateError", buf);
  }
}

/*
** Pushes the results of the done future at idx, or raises its error (or
** CancelledError); returns the number of results. Marks an error as
** retrieved.
*/
int loom__future_push_results (lua_State *L, loom_future *f, int idx) {
  idx = lua_absindex(L, idx);
  if (f->state == LOOM_PENDING)
    return raise_error(L, "InvalidStateError", "result is not set");
  if (f->state == LOOM_CANCELLED && f->h.kind == LOOM_KTASK) {
    lua_getiuservalue(L, idx, LOOM_FUV_VALUE);  /* its CancelledError */
    return lua_error(L);
  }
  if (f->state == LOOM_CANCELLED) {
    lua_getiuservalue(L, idx, LOOM_FUV_VALUE);  /* the cancel message */
    loom__push_cancelled(L, lua_gettop(L));
    return lua_error(L);
  }
  if (f->nres == 0 && !(f->fflags & LOOM_FERROR))
    return 0;
  lua_getiuservalue(L, idx, LOOM_FUV_VALUE);
  if (f->fflags & LOOM_FERROR) {
    f->fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
    return lua_error(L);
  }
  if (f->nres > 1) {                    /* packed in a table */
    int i, n = f->nres, t = lua_gettop(L);
    luaL_checkstack(L, n, "too many results");
    for (i = 1; i <= n; i++)
      lua_rawgeti(L, t, i);
    lua_remove(L, t);
  }
  return f->nres;
}

/*
** Pushes the first result of the finished future at idx (nil when it has
** none). [-0, +1, -]
*/
void loom__push_first_result (lua_State *L, loom_future *f, int idx) {
  lua_getiuservalue(L, idx, LOOM_FUV_VALUE);
  if (f->nres == 0)
    lua_pushnil(L);
  else if (f->nres > 1)
    lua_rawgeti(L, -1, 1);
  else
    return;
  lua_remove(L, -2);
}

/*
** Pushes the CancelledError of the cancelled future at idx: the one a
** task ended with, or a new one with a future's cancel message.
** [-0, +1, m]
*/
void loom__push_cancelled_of (lua_State *L, loom_future *f, int idx) {
  lua_getiuservalue(L, idx, LOOM_FUV_VALUE);
  if (f->h.kind != LOOM_KTASK) {
    loom__push_cancelled(L, lua_gettop(L));
    lua_remove(L, -2);
  }
}

/*
** Cancels the pending future at idx with the message at msgidx (0: none);
** returns whether it was pending.
*/
int loom__future_cancel (lua_State *L, loom_future *f, int idx, int msgidx) {
  idx = lua_absindex(L, idx);
  if (f->state != LOOM_PENDING)
    return 0;
  if (msgidx && !lua_isnil(L, msgidx)) {
    lua_pushvalue(L, msgidx);
    lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
  }
  f->state = LOOM_CANCELLED;
  loom__future_schedule(L, f, idx);
  return 1;
}

/*
** Makes the done plain future at idx pending again, for an owner that
** never hands it out (a StreamReader's waiter), so that the next wait
** needs no new object. Returns 0, changing nothing, unless it finished
** without an error or was cancelled, and no callback of it is pending or
** queued (so no task can still be woken by it).
*/
int loom__future_rearm (lua_State *L, loom_future *f, int idx) {
  if (f->state == LOOM_PENDING || f->h.kind != LOOM_KFUTURE
      || (f->fflags & (LOOM_FERROR | LOOM_FSCHEDULED)))
    return 0;
  idx = lua_absindex(L, idx);
  if (lua_getiuservalue(L, idx, LOOM_FUV_CALLBACKS) != LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pop(L, 1);
  if (f->nres != 0 || f->state == LOOM_CANCELLED) {
    lua_pushnil(L);                      /* result or cancel message */
    lua_setiuservalue(L, idx, LOOM_FUV_VALUE);
  }
  f->state = LOOM_PENDING;
  f->fflags = 0;
  f->nres = 0;
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Lua methods
** =======================================================
*/

/* A plain future (not a task), with either of its metatables. */
static loom_future *checkplain (lua_State *L, int idx) {
  loom_future *f = (loom_future *)loom__testud(L, idx, LOOM_TFUTURE);
  if (f == NULL)
    f = (loom_future *)loom__checkud(L, idx, LOOM_TFUTUREGC);
  return f;
}

static int future_result (lua_State *L) {
  loom_future *f = loom__checkfuture(L, 1);
  return loom__future_push_results(L, f, 1);
}

static int future_exception (lua_State *L) {
  loom_future *f = loom__checkfuture(L, 1);
  if (f->state == LOOM_PENDING)
    return raise_error(L, "InvalidStateError", "exception is not set");
  if (f->state == LOOM_CANCELLED)
    return loom__future_push_results(L, f, 1);  /* raises */
  if (!(f->fflags & LOOM_FERROR))
    return 0;
  f->fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
  lua_getiuservalue(L, 1, LOOM_FUV_VALUE);
  return 1;
}

static int future_done (lua_State *L) {
  lua_pushboolean(L, loom__checkfuture(L, 1)->state != LOOM_PENDING);
  return 1;
}

static int future_cancelled (lua_State *L) {
  lua_pushboolean(L, loom__checkfuture(L, 1)->state == LOOM_CANCELLED);
  return 1;
}

static int future_cancel (lua_State *L) {
  loom_future *f = checkplain(L, 1);
  lua_settop(L, 2);
  lua_pushboolean(L, loom__future_cancel(L, f, 1, 2));
  return 1;
}

static int future_set_result (lua_State *L) {
  loom_future *f = checkplain(L, 1);
  int n = lua_gettop(L) - 1;
  checkpending(L, f, "set_result");
  if (n == 1)
    lua_setiuservalue(L, 1, LOOM_FUV_VALUE);
  else if (n > 1) {
    int i;
    lua_createtable(L, n, 0);
    lua_insert(L, 2);
    for (i = n; i >= 1; i--)
      lua_rawseti(L, 2, i);
    lua_setiuservalue(L, 1, LOOM_FUV_VALUE);
  }
  f->nres = n;
  f->state = LOOM_FINISHED;
  loom__future_schedule(L, f, 1);
  return 0;
}

static int future_set_exception (lua_State *L) {
  loom_future *f = checkplain(L, 1);
  luaL_argexpected(L, !lua_isnoneornil(L, 2), 2, "error value");
  checkpending(L, f, "set_exception");
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, LOOM_FUV_VALUE);
  f->fflags |= LOOM_FERROR | LOOM_FUNRETRIEVED;
  f->state = LOOM_FINISHED;
  lua_pushvalue(L, loom__mtindex(LOOM_TFUTUREGC));  /* now it may need */
  lua_setmetatable(L, 1);                          /* a finalizer */
  loom__future_schedule(L, f, 1);
  return 0;
}

static int future_add_done_callback (lua_State *L) {
  loom_future *f = loom__checkfuture(L, 1);
  if (lua_type(L, 2) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, 2, "__call") == LUA_TNIL)
      luaL_typeerror(L, 2, "function");
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  if (f->loop->closed && f->state != LOOM_PENDING)
    return luaL_error(L, "add_done_callback: event loop is closed");
  loom__future_add_callback(L, f, 1, 2, LOOM_CBLUA);
  return 0;
}

/*
** Removes every registration of the callable at cbidx from the pending
** future at idx; returns how many. A done future has handed its callbacks
** to the ready queue already: nothing to remove.
*/
int loom__future_remove_callback (lua_State *L, loom_future *f, int idx,
                                  int cbidx) {
  int removed = 0, list;
  idx = lua_absindex(L, idx);
  cbidx = lua_absindex(L, cbidx);
  if (f->state != LOOM_PENDING)
    return 0;
  lua_getiuservalue(L, idx, LOOM_FUV_CALLBACKS);
  list = lua_gettop(L);
  if (!(f->fflags & LOOM_FMANYCB)) {
    if (!lua_isnil(L, list) && lua_rawequal(L, cbidx, list)) {
      lua_pushnil(L);
      lua_setiuservalue(L, idx, LOOM_FUV_CALLBACKS);
      f->fflags &= (uint8_t)~(LOOM_FTASKCB | LOOM_FGATHERCB);
      removed = 1;
    }
  }
  else {
    lua_Integer i, j = 0, n = (lua_Integer)lua_rawlen(L, list);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, list, i);
      if (lua_rawequal(L, -1, cbidx)) {
        lua_pop(L, 1);
        removed++;
      }
      else
        lua_rawseti(L, list, ++j);
    }
    for (i = j + 1; i <= n; i++) {
      lua_pushnil(L);
      lua_rawseti(L, list, i);
    }
  }
  lua_settop(L, list - 1);
  return removed;
}

static int future_remove_done_callback (lua_State *L) {
  loom_future *f = loom__checkfuture(L, 1);
  luaL_checkany(L, 2);
  lua_pushinteger(L, loom__future_remove_callback(L, f, 1, 2));
  return 1;
}

/* _future_loop(x): the loop of x when x is a future or task, else nil. */
static int core_future_loop (lua_State *L) {
  if (loom__tofuture(L, 1) == NULL)
    return 0;
  lua_getiuservalue(L, 1, LOOM_FUV_LOOP);
  return 1;
}

static int future_get_loop (lua_State *L) {
  loom__checkfuture(L, 1);
  lua_getiuservalue(L, 1, LOOM_FUV_LOOP);
  return 1;
}

static int future_tostring (lua_State *L) {
  loom_future *f = loom__checkfuture(L, 1);
  if (f->fflags & LOOM_FERROR) {
    lua_getiuservalue(L, 1, LOOM_FUV_VALUE);
    lua_pushfstring(L, "<Future finished error=%s>", luaL_tolstring(L, -1, NULL));
  }
  else
    lua_pushfstring(L, "<Future %s>", state_names[f->state]);
  return 1;
}

/*
** Reports an error that nobody retrieved, from __gc. [-0, +0, -]
*/
static int future_gc (lua_State *L) {
  loom_future *f = (loom_future *)lua_touserdata(L, 1);
  if ((f->fflags & LOOM_FUNRETRIEVED) && f->state == LOOM_FINISHED) {
    f->fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
    lua_settop(L, 1);
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, "Future exception was never retrieved");
    lua_setfield(L, 2, "message");
    lua_getiuservalue(L, 1, LOOM_FUV_VALUE);
    lua_setfield(L, 2, "exception");
    lua_pushvalue(L, 1);
    lua_setfield(L, 2, "future");
    lua_getiuservalue(L, 1, LOOM_FUV_LOOP);
    loom__report(L, 3, 2);
  }
  return 0;
}

/* Methods shared with Task (task.c adds its own on top). */
const luaL_Reg loom__future_methods[] = {
  {"result", future_result},
  {"exception", future_exception},
  {"done", future_done},
  {"cancelled", future_cancelled},
  {"add_done_callback", future_add_done_callback},
  {"remove_done_callback", future_remove_done_callback},
  {"get_loop", future_get_loop},
  {NULL, NULL}
};

static const luaL_Reg plain_methods[] = {
  {"cancel", future_cancel},
  {"set_result", future_set_result},
  {"set_exception", future_set_exception},
  {NULL, NULL}
};

static const luaL_Reg future_metamethods[] = {
  {"__tostring", future_tostring},
  {NULL, NULL}
};

static const luaL_Reg future_gc_metamethods[] = {
  {"__tostring", future_tostring},
  {"__gc", future_gc},
  {NULL, NULL}
};

/*
** Futures have two metatables with the same methods. The usual one has
** no __gc: an object with a finalizer costs the collector an extra cycle,
** and most futures never need one. set_exception moves a future to the
** twin with __gc, which reports an error nobody retrieved.
*/
static const luaL_Reg future_functions[] = {
  {"_future_loop", core_future_loop},
  {NULL, NULL}
};

int loom__open_future (lua_State *L) {
  loom__newmt(L, LOOM_TFUTURE);
  loom__setfuncs(L, future_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, loom__future_methods);
  loom__setfuncs(L, plain_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "__index");
  loom__newmt(L, LOOM_TFUTUREGC);
  loom__setfuncs(L, future_gc_metamethods);
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, LOOM_FUTURE_MT);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 2);
  loom__setfuncs(L, future_functions);  /* into the module table */
  return 0;
}

/* }====================================================== */
