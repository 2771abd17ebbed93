/*
** poll.c
** (being written)
*/

#include "internal.h"

int loom__open_poll (lua_State *L) {
  (void)L;
  return 0;
}

void loom__poll_shutdown (lua_State *L, loom_loop *loop) {
  (void)L;
  (void)loop;
}
