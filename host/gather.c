/*
** gather.c
** The gathering behind loom.gather: counts its children as they finish,
** in C, and collects their first results.
**
** lua/loom/combinators.lua composes gather from this: it makes the
** gathering, awaits a waiter future that the gathering completes, and
** handles the cancellation of the waiting task. The gathering is the done
** callback of every child (a callback kind of its own, like a task
** waiting on a future), so a child that finishes costs no Lua call.
*/

#include "internal.h"

typedef struct loom_gather {
  int n;                    /* children */
  int nfinished;            /* children done so far */
  uint8_t retexc;           /* return_exceptions */
  uint8_t finished;         /* the outcome is known */
  uint8_t failed;           /* the outcome is an error value */
} loom_gather;

/* User values of a gathering. */
enum {
  GUV_CHILDREN = 1,         /* list of the children, 1..n */
  GUV_WAITER,               /* future to complete when finished */
  GUV_OUTCOME,              /* results list, or the error value */
  GUV_COUNT = GUV_OUTCOME
};

/*
** Marks the outcome (at the top of the stack, popped) and completes the
** waiter. [-1, +0, m]
*/
static void finish (lua_State *L, loom_gather *g, int gidx, int failed) {
  loom_future *w;
  lua_setiuservalue(L, gidx, GUV_OUTCOME);
  g->finished = 1;
  g->failed = (uint8_t)failed;
  lua_getiuservalue(L, gidx, GUV_WAITER);
  w = (loom_future *)lua_touserdata(L, -1);
  if (w != NULL && w->state == LOOM_PENDING) {
    w->nres = 0;
    w->state = LOOM_FINISHED;
    loom__future_schedule(L, w, -1);
  }
  lua_pop(L, 1);
}

/* Builds the results list, one value per child. [-0, +0, m] */
static void collect (lua_State *L, loom_gather *g, int gidx) {
  int i, list;
  lua_getiuservalue(L, gidx, GUV_CHILDREN);
  list = lua_gettop(L);
  lua_createtable(L, g->n, 1);
  for (i = 1; i <= g->n; i++) {
    loom_future *c;
    lua_rawgeti(L, list, i);
    c = (loom_future *)lua_touserdata(L, -1);
    if (c->state == LOOM_CANCELLED)
      loom__push_cancelled_of(L, c, -1);
    else if (c->fflags & LOOM_FERROR) {
      c->fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
      lua_getiuservalue(L, -1, LOOM_FUV_VALUE);
    }
    else
      loom__push_first_result(L, c, -1);
    lua_rawseti(L, list + 1, i);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, g->n);
  lua_setfield(L, -2, "n");
  lua_remove(L, list);
  finish(L, g, gidx, 0);
}

/*
** The child at fidx (a future) is done: asyncio's _done_callback of
** gather. Without return_exceptions the first error or cancellation is
** the outcome; otherwise the outcome is the list of results once every
** child is done. Errors are marked as retrieved.
*/
void loom__gather_done (lua_State *L, int gidx, loom_future *f, int fidx) {
  loom_gather *g = (loom_gather *)lua_touserdata(L, gidx);
  gidx = lua_absindex(L, gidx);
  fidx = lua_absindex(L, fidx);
  g->nfinished++;
  if (g->finished) {
    f->fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
    return;
  }
  if (!g->retexc) {
    if (f->state == LOOM_CANCELLED) {
      loom__push_cancelled_of(L, f, fidx);
      finish(L, g, gidx, 1);
      return;
    }
    if (f->fflags & LOOM_FERROR) {
      f->fflags &= (uint8_t)~LOOM_FUNRETRIEVED;
      lua_getiuservalue(L, fidx, LOOM_FUV_VALUE);
      finish(L, g, gidx, 1);
      return;
    }
  }
  if (g->nfinished == g->n)
    collect(L, g, gidx);
}

/*
** _gather(children, n, return_exceptions, waiter) -> gathering. The
** children (futures or tasks of the running loop) get the gathering as a
** done callback; those already done are counted at once.
*/
static int core_gather (lua_State *L) {
  loom_loop *loop = loom__running();
  loom_gather *g;
  int i, n;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1, 2, "at least one child expected");
  luaL_checkany(L, 3);
  if (loom__tofuture(L, 4) == NULL)
    return luaL_typeerror(L, 4, LOOM_FUTURE_MT);
  if (loop == NULL)
    return luaL_error(L, "gather: no running event loop");
  lua_settop(L, 4);
  g = (loom_gather *)lua_newuserdatauv(L, sizeof(loom_gather), GUV_COUNT);
  g->n = n;
  g->nfinished = 0;
  g->retexc = (uint8_t)lua_toboolean(L, 3);
  g->finished = g->failed = 0;
  loom__setmt(L, LOOM_TGATHER);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, 5, GUV_CHILDREN);
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, 5, GUV_WAITER);
  for (i = 1; i <= n; i++) {  /* check every child first */
    loom_future *c;
    lua_rawgeti(L, 1, i);
    c = loom__tofuture(L, -1);
    if (c == NULL)
      return luaL_error(L, "gather: item %d is not a loom.Future", i);
    if (c->loop != loop)
      return luaL_error(L, "gather: item %d belongs to a different event "
                        "loop", i);
    lua_pop(L, 1);
  }
  for (i = 1; i <= n; i++) {
    loom_future *c;
    lua_rawgeti(L, 1, i);
    c = (loom_future *)lua_touserdata(L, -1);
    if (c->state == LOOM_PENDING)
      loom__future_add_callback(L, c, -1, 5, LOOM_CBGATHER);
    else
      loom__gather_done(L, 5, c, -1);
    lua_pop(L, 1);
  }
  return 1;
}

static loom_gather *checkgather (lua_State *L) {
  return (loom_gather *)loom__checkud(L, 1, LOOM_TGATHER);
}

/* g:outcome() -> finished, failed, results-or-error */
static int gather_outcome (lua_State *L) {
  loom_gather *g = checkgather(L);
  lua_pushboolean(L, g->finished);
  lua_pushboolean(L, g->failed);
  lua_getiuservalue(L, 1, GUV_OUTCOME);
  return 3;
}

/* g:set_waiter(fut): the future to complete from now on. */
static int gather_set_waiter (lua_State *L) {
  checkgather(L);
  if (loom__tofuture(L, 2) == NULL)
    return luaL_typeerror(L, 2, LOOM_FUTURE_MT);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, GUV_WAITER);
  return 0;
}

/*
** g:cancel_children([msg]) -> whether any child was cancelled: each
** child once, as asyncio's _GatheringFuture.cancel.
*/
static int gather_cancel_children (lua_State *L) {
  loom_gather *g = checkgather(L);
  int i, any = 0;
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, GUV_CHILDREN);  /* 3 */
  lua_newtable(L);                        /* 4: children seen */
  for (i = 1; i <= g->n; i++) {
    loom_future *c;
    lua_rawgeti(L, 3, i);
    if (lua_rawget(L, 4) != LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    lua_pop(L, 1);
    lua_rawgeti(L, 3, i);
    lua_pushboolean(L, 1);
    lua_rawset(L, 4);
    lua_rawgeti(L, 3, i);
    c = (loom_future *)lua_touserdata(L, -1);
    if (c->h.kind == LOOM_KTASK)
      any |= loom__task_cancel(L, (loom_task *)c, -1, 2);
    else
      any |= loom__future_cancel(L, c, -1, 2);
    lua_pop(L, 1);
  }
  lua_pushboolean(L, any);
  return 1;
}

static const luaL_Reg gather_methods[] = {
  {"outcome", gather_outcome},
  {"set_waiter", gather_set_waiter},
  {"cancel_children", gather_cancel_children},
  {NULL, NULL}
};

static const luaL_Reg gather_functions[] = {
  {"_gather", core_gather},
  {NULL, NULL}
};

int loom__open_gather (lua_State *L) {
  loom__newmt(L, LOOM_TGATHER);
  lua_newtable(L);
  loom__setfuncs(L, gather_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__setfuncs(L, gather_functions);  /* into the module table */
  return 0;
}
