/*
** handle.c
** Handle and TimerHandle: what call_soon, call_later and call_at return.
*/

#include <limits.h>

#include "internal.h"

/*
** A handle holds its callback in user value 1 and its arguments in user
** values 2 .. n+1, so a handle is one allocation whatever it carries. A
** plain handle is only the object header (its n counts the arguments); a
** timer handle adds its deadline and its loop.
*/
typedef struct loom_timer {
  loom_obj h;
  double when;
  loom_loop *loop;
} loom_timer;

static loom_obj *checkhandle (lua_State *L, int idx) {
  loom_obj *h = (loom_obj *)loom__testud(L, idx, LOOM_THANDLE);
  if (h == NULL)
    h = (loom_obj *)loom__checkud(L, idx, LOOM_TTIMER);
  return h;
}

/*
** Makes a handle of the given kind for the callable at fidx and the nargs
** values after it, and pushes it; returns its absolute index.
** [-0, +1, m]
*/
int loom__newhandle (lua_State *L, loom_loop *loop, int kind, int fidx,
                     int nargs, double when) {
  loom_obj *h;
  int i;
  fidx = lua_absindex(L, fidx);
  if (nargs >= USHRT_MAX)
    luaL_error(L, "too many arguments for a callback");
  h = (loom_obj *)lua_newuserdatauv(L, kind == LOOM_KTIMER ? sizeof(loom_timer)
                                    : sizeof(loom_obj), nargs + 1);
  h->kind = (uint8_t)kind;
  h->flags = 0;
  h->spare = 0;
  h->n = nargs;
  if (kind == LOOM_KTIMER) {
    ((loom_timer *)h)->when = when;
    ((loom_timer *)h)->loop = loop;
  }
  loom__setmt(L, kind == LOOM_KTIMER ? LOOM_TTIMER : LOOM_THANDLE);
  for (i = 0; i <= nargs; i++) {
    lua_pushvalue(L, fidx + i);
    lua_setiuservalue(L, -2, i + 1);
  }
  return lua_gettop(L);
}

/*
** Calls the callback of the handle at idx with its arguments; errors
** propagate to the caller (the loop's batch runner).
*/
void loom__run_handle (lua_State *L, loom_obj *o, int idx) {
  int i, n = o->n;
  luaL_checkstack(L, n + 1, "too many arguments for a callback");
  for (i = 1; i <= n + 1; i++)
    lua_getiuservalue(L, idx, i);
  lua_call(L, n, 0);
}

static int handle_cancel (lua_State *L) {
  loom_obj *h = checkhandle(L, 1);
  if (!(h->flags & LOOM_FCANCELLED)) {
    h->flags |= LOOM_FCANCELLED;
    if (h->flags & LOOM_FINHEAP)
      loom__heap_cancelled(((loom_timer *)h)->loop);
  }
  return 0;
}

static int handle_cancelled (lua_State *L) {
  loom_obj *h = checkhandle(L, 1);
  lua_pushboolean(L, h->flags & LOOM_FCANCELLED);
  return 1;
}

static int handle_when (lua_State *L) {
  loom_timer *h = (loom_timer *)loom__checkud(L, 1, LOOM_TTIMER);
  lua_pushnumber(L, h->when);
  return 1;
}

static int handle_tostring (lua_State *L) {
  loom_obj *h = checkhandle(L, 1);
  const char *kind = h->kind == LOOM_KTIMER ? "TimerHandle" : "Handle";
  const char *state = (h->flags & LOOM_FCANCELLED) ? " cancelled" : "";
  if (lua_getiuservalue(L, 1, 1) == LUA_TFUNCTION) {
    lua_Debug ar;
    lua_getinfo(L, ">S", &ar);
    if (ar.linedefined > 0)
      lua_pushfstring(L, "<%s %s:%d%s>", kind, ar.short_src, ar.linedefined,
                      state);
    else
      lua_pushfstring(L, "<%s %s%s>", kind, ar.short_src, state);
  }
  else
    lua_pushfstring(L, "<%s %s%s>", kind, luaL_typename(L, -1), state);
  return 1;
}

static const luaL_Reg handle_methods[] = {
  {"cancel", handle_cancel},
  {"cancelled", handle_cancelled},
  {NULL, NULL}
};

static const luaL_Reg timer_methods[] = {
  {"cancel", handle_cancel},
  {"cancelled", handle_cancelled},
  {"when", handle_when},
  {NULL, NULL}
};

static const luaL_Reg handle_metamethods[] = {
  {"__tostring", handle_tostring},
  {NULL, NULL}
};

int loom__open_handle (lua_State *L) {
  loom__newmt(L, LOOM_THANDLE);
  loom__setfuncs(L, handle_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, handle_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__newmt(L, LOOM_TTIMER);
  loom__setfuncs(L, handle_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, timer_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  return 0;
}
