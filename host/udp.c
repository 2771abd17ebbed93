/*
** udp.c
** (being written)
*/

#include "internal.h"

int loom__open_udp (lua_State *L) {
  (void)L;
  return 0;
}

void loom__udp_shutdown (lua_State *L, loom_loop *loop) {
  (void)L;
  (void)loop;
}
