/*
** dns.c
** (being written)
*/

#include "internal.h"

int loom__open_dns (lua_State *L) {
  (void)L;
  return 0;
}

void loom__dns_shutdown (lua_State *L, loom_loop *loop) {
  (void)L;
  (void)loop;
}
