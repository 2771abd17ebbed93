/*
** core.c
** The module loom.core: opens every part of the core into one table.
*/

#include "internal.h"

LUAMOD_API int luaopen_loom_core (lua_State *L);

/*
** interpose(type, name, fn): sets method 'name' of the core type whose
** metatable is named 'type' (e.g. "loom.Loop") and returns the previous
** one; this is how the Lua side adds the methods that are policy.
*/
static int core_interpose (lua_State *L) {
  const char *tname = luaL_checkstring(L, 1);
  const char *name = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  if (luaL_getmetatable(L, tname) != LUA_TTABLE)
    return luaL_argerror(L, 1, "not a type of the core");
  lua_getfield(L, -1, "__index");
  lua_getfield(L, -1, name);
  lua_pushvalue(L, 3);
  lua_setfield(L, -3, name);
  return 1;
}

LUAMOD_API int luaopen_loom_core (lua_State *L) {
  luaL_checkversion(L);
  lua_newtable(L);
  loom__open_loop(L);
  loom__open_handle(L);
  loom__open_future(L);
  loom__open_task(L);
  lua_pushcfunction(L, core_interpose);
  lua_setfield(L, -2, "interpose");
  lua_pushliteral(L, LOOM_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
