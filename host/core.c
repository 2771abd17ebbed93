/*
** core.c
** The module loom.core: opens every part of the core into one table.
*/

#include <signal.h>
#include <string.h>

#include "internal.h"

LUAMOD_API int luaopen_loom_core (lua_State *L);

static const char mtkeys[LOOM_TCOUNT];
static const char *const mtnames[LOOM_TCOUNT] = {
  LOOM_LOOP_MT, LOOM_HANDLE_MT, LOOM_TIMER_MT, LOOM_FUTURE_MT,
  LOOM_FUTURE_MT ".gc", LOOM_TASK_MT, LOOM_GATHER_MT, LOOM_STREAMREADER_MT
};

/* Makes the metatable of a core type and leaves it on the stack. */
void loom__newmt (lua_State *L, int type) {
  luaL_newmetatable(L, mtnames[type]);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &mtkeys[type]);
}

/* Pushes the metatables of all core types, in type order. */
static void pushmts (lua_State *L) {
  int i;
  for (i = 0; i < LOOM_TCOUNT; i++)
    lua_rawgetp(L, LUA_REGISTRYINDEX, &mtkeys[i]);
}

/*
** luaL_setfuncs with the metatables of the core types as upvalues: every
** Lua-facing function of the core is registered through here.
*/
void loom__setfuncs (lua_State *L, const luaL_Reg *l) {
  pushmts(L);
  luaL_setfuncs(L, l, LOOM_TCOUNT);
}

/*
** Pushes a C function of the core with the running function's upvalues
** (the metatables), for functions the core calls itself. [-0, +1, m]
*/
void loom__pushcfunction (lua_State *L, lua_CFunction f) {
  int i;
  for (i = 1; i <= LOOM_TCOUNT; i++)
    lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushcclosure(L, f, LOOM_TCOUNT);
}

/* The userdata at idx if it is of the given type, else NULL. */
void *loom__testud (lua_State *L, int idx, int type) {
  void *p = lua_touserdata(L, idx);
  if (p != NULL && lua_getmetatable(L, idx)) {
    if (!lua_rawequal(L, -1, loom__mtindex(type)))
      p = NULL;
    lua_pop(L, 1);
    return p;
  }
  return NULL;
}

/* The userdata at idx, which must be of the given type. */
void *loom__checkud (lua_State *L, int idx, int type) {
  void *p = loom__testud(L, idx, type);
  if (p == NULL)
    luaL_typeerror(L, idx, mtnames[type]);
  return p;
}

/*
** Checks that the value at idx can be a protocol: a table, or an object
** (userdata) whose methods are the callbacks. set_protocol of every
** transport uses it, so that a wrong value fails there and not in a
** later callback.
*/
/* Every key of the options table at idx must be one of names (NULL
** ended): argument arg's error otherwise ("unknown option 'k'", or with
** what, "unknown <what> field 'k'"), as asyncio's TypeError for an
** unexpected keyword (a misspelt option is never silently a default). */
void loom__checkkeys (lua_State *L, int idx, int arg, const char *what,
                      const char *const names[]) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int i, ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING) {
      for (i = 0; names[i] != NULL && !ok; i++)
        ok = strcmp(names[i], lua_tostring(L, -2)) == 0;
    }
    if (!ok) {
      lua_pop(L, 1);
      const char *k = luaL_tolstring(L, -1, NULL);
      luaL_argerror(L, arg, what == NULL
                    ? lua_pushfstring(L, "unknown option '%s'", k)
                    : lua_pushfstring(L, "unknown %s field '%s'", what, k));
    }
    lua_pop(L, 1);
  }
}

void loom__checkprotocol (lua_State *L, int idx) {
  int t = lua_type(L, idx);
  if (t != LUA_TTABLE && t != LUA_TUSERDATA)
    luaL_typeerror(L, idx, "protocol (table)");
}

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

/*
** Without this, a write to a peer that reset its connection, or to a
** child that exited, kills the program with SIGPIPE (libuv writes with
** write(2)); the write fails with EPIPE instead. Python ignores SIGPIPE at
** start-up, Node too; loom does when it is opened, unless the program
** chose a disposition itself. Children get the default back (libuv
** resets every signal in them).
*/
static void ignore_sigpipe (void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO)
      && sa.sa_handler == SIG_DFL) {
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
  }
}

LUAMOD_API int luaopen_loom_core (lua_State *L) {
  int i;
  luaL_checkversion(L);
  ignore_sigpipe();
  for (i = 0; i < LOOM_TCOUNT; i++) {
    loom__newmt(L, i);
    lua_pop(L, 1);
  }
  lua_newtable(L);
  loom__open_loop(L);
  loom__open_handle(L);
  loom__open_future(L);
  loom__open_task(L);
  loom__open_gather(L);
  loom__open_dns(L);
  loom__open_signal(L);
  loom__open_poll(L);
  loom__open_stream(L);
  loom__open_tcp(L);
  loom__open_pipe(L);
  loom__open_socket(L);
  loom__open_trace(L);
  loom__open_udp(L);
  loom__open_streambuf(L);
  loom__open_process(L);
  loom__open_fs(L);
  loom__open_copy(L);
  loom__open_thread(L);
  loom__open_channel(L);
  loom__open_tls(L);
  loom__open_buffer(L);
  lua_pushcfunction(L, core_interpose);
  lua_setfield(L, -2, "interpose");
  lua_pushliteral(L, LOOM_VERSION);
  lua_setfield(L, -2, "version");
  return 1;
}
