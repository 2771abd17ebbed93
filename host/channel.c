/*
** channel.c
** Channels: queues of copied values between threads, with backpressure.
**
** A channel is a shared object (copy.c): passed to thread.start, to a
** worker or through another channel, the other side gets the same
** channel. Values are copied in by send and out by recv. Inside a task,
** send on a full channel and recv on an empty one await; the waiting
** task is a message in the channel's list, which the channel posts to
** the task's loop when something changes (thread.c). Outside any loop
** (a worker, a plain script) they block the thread on a condition
** variable. Inside a running loop but outside a task they raise, since
** blocking there would stop the loop.
*/

#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BLOCK_SLICE_NS 20000000u  /* a blocked worker looks for a cancel */

typedef struct channel {
  loom_shared sh;
  uv_mutex_t mu;
  uv_cond_t cv;             /* threads blocked in send or recv */
  loom_blob **ring;         /* values sent, not yet received */
  int ringcap, head, n;
  int capacity;             /* 0: no bound */
  int closed;
  loom_msg *recvq, *sendq;  /* tasks waiting to receive, to send */
} channel;


/*
** {======================================================
** The shared object
** =======================================================
*/

static void ch_destroy (loom_shared *s) {
  channel *ch = (channel *)s;
  int i;
  /* no waiter is left: each holds a reference */
  for (i = 0; i < ch->n; i++)
    loom__blob_free(ch->ring[(ch->head + i) % ch->ringcap]);
  free(ch->ring);
  uv_cond_destroy(&ch->cv);
  uv_mutex_destroy(&ch->mu);
  free(ch);
}

/* Takes list *q (under ch->mu); post it with wake() after unlocking. */
static loom_msg *takeq (loom_msg **q) {
  loom_msg *w = *q, *m;
  *q = NULL;
  for (m = w; m != NULL; m = m->next)
    m->linked = 0;
  return w;
}

static void wake (loom_msg *w) {
  loom_msg *next;
  for (; w != NULL; w = next) {
    next = w->next;
    loom__msg_post(w);
  }
}

/* Adds b at the end (ch->mu held); 0 when out of memory. */
static int ring_push (channel *ch, loom_blob *b) {
  if (ch->n == ch->ringcap) {
    int ncap = ch->ringcap ? ch->ringcap * 2 : 8, i;
    loom_blob **r = (loom_blob **)malloc((size_t)ncap * sizeof *r);
    if (r == NULL)
      return 0;
    for (i = 0; i < ch->n; i++)
      r[i] = ch->ring[(ch->head + i) % ch->ringcap];
    free(ch->ring);
    ch->ring = r;
    ch->ringcap = ncap;
    ch->head = 0;
  }
  ch->ring[(ch->head + ch->n) % ch->ringcap] = b;
  ch->n++;
  return 1;
}

static loom_blob *ring_pop (channel *ch) {
  loom_blob *b = ch->ring[ch->head];
  ch->head = (ch->head + 1) % ch->ringcap;
  ch->n--;
  return b;
}

static void unlinkq (loom_msg **q, loom_msg *m) {
  while (*q != NULL && *q != m)
    q = &(*q)->next;
  if (*q == m)
    *q = m->next;
}

/* Takes the waiting task's message m back (its wait was cancelled);
** 1 when it was still in a list. */
int loom__channel_unlink (loom_shared *s, loom_msg *m) {
  channel *ch = (channel *)s;
  int r = 0;
  uv_mutex_lock(&ch->mu);
  if (m->linked) {
    unlinkq(&ch->recvq, m);
    unlinkq(&ch->sendq, m);
    m->linked = 0;
    m->next = NULL;
    r = 1;
  }
  uv_mutex_unlock(&ch->mu);
  return r;
}

/* }====================================================== */


/*
** {======================================================
** Lua functions
** =======================================================
*/

static channel *checkch (lua_State *L, int idx) {
  return (channel *)*(loom_shared **)luaL_checkudata(L, idx,
                                                      LOOM_CHANNEL_MT);
}

/* channel([capacity]): capacity nil means no bound. */
static int core_channel (lua_State *L) {
  loom_shared **box;
  channel *ch;
  int cap = 0;
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer c = luaL_checkinteger(L, 1);
    luaL_argcheck(L, c >= 1 && c <= 0x7fffffff, 1, "capacity must be a "
                  "positive integer (or nil for no bound)");
    cap = (int)c;
  }
  box = (loom_shared **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, LOOM_CHANNEL_MT);
  ch = (channel *)calloc(1, sizeof *ch);
  if (ch == NULL)
    return luaL_error(L, "not enough memory");
  if (uv_mutex_init(&ch->mu) != 0) {
    free(ch);
    return luaL_error(L, "cannot make a mutex");
  }
  if (uv_cond_init(&ch->cv) != 0) {
    uv_mutex_destroy(&ch->mu);
    free(ch);
    return luaL_error(L, "cannot make a condition variable");
  }
  loom__shared_init(&ch->sh, LOOM_SHCHANNEL, ch_destroy);
  ch->capacity = cap;
  *box = &ch->sh;
  return 1;
}

/*
** Blocks the thread on the channel (ch->mu held) for a while; raises,
** with the lock released, when the worker's job was cancelled.
*/
static void block (lua_State *L, channel *ch) {
  uv_cond_timedwait(&ch->cv, &ch->mu, BLOCK_SLICE_NS);
  if (loom__interrupted()) {
    uv_mutex_unlock(&ch->mu);
    luaL_error(L, "interrupted: the job was cancelled");
  }
}

/*
** Decides how a caller that must wait does it (ch->mu held): returns 1
** when it may block the thread; else, inside a task, 0 with the lock
** released; else raises (lock released).
*/
static int mayblock (lua_State *L, channel *ch, const char *fname,
                     const char *why) {
  if (loom__in_task(L)) {
    uv_mutex_unlock(&ch->mu);
    return 0;
  }
  if (loom__running() != NULL) {
    uv_mutex_unlock(&ch->mu);
    luaL_error(L, "%s: the channel is %s, and blocking would stop the "
               "running event loop (call it inside a task)", fname, why);
  }
  return 1;
}

/* Awaits the future on top, then runs continuation k again. */
static int await_then (lua_State *L, lua_KFunction k) {
  lua_getfield(L, -1, "await");
  lua_insert(L, -2);
  lua_callk(L, 1, 0, 0, k);
  return k(L, LUA_OK, 0);
}

/* Stack: channel, value, blob box. */
static int send_k (lua_State *L, int status, lua_KContext ctx) {
  channel *ch = checkch(L, 1);
  loom_blob **box = (loom_blob **)lua_touserdata(L, 3);
  (void)status; (void)ctx;
  lua_settop(L, 3);
  for (;;) {
    loom_msg *m;
    uv_mutex_lock(&ch->mu);
    if (ch->closed) {
      uv_mutex_unlock(&ch->mu);
      return luaL_error(L, "send: the channel is closed");
    }
    if (ch->capacity == 0 || ch->n < ch->capacity) {
      loom_msg *w;
      if (!ring_push(ch, *box)) {
        uv_mutex_unlock(&ch->mu);
        return luaL_error(L, "not enough memory");
      }
      *box = NULL;
      w = takeq(&ch->recvq);
      uv_cond_broadcast(&ch->cv);
      uv_mutex_unlock(&ch->mu);
      wake(w);
      return 0;
    }
    if (mayblock(L, ch, "send", "full")) {
      block(L, ch);
      uv_mutex_unlock(&ch->mu);
      continue;
    }
    m = loom__wait_new(L, &ch->sh);  /* pushes its future */
    uv_mutex_lock(&ch->mu);
    if (!ch->closed && ch->capacity > 0 && ch->n >= ch->capacity) {
      m->next = ch->sendq;
      ch->sendq = m;
      m->linked = 1;
      uv_mutex_unlock(&ch->mu);
      return await_then(L, send_k);
    }
    uv_mutex_unlock(&ch->mu);
    loom__msg_post(m);  /* room came meanwhile: its future just completes */
    lua_settop(L, 3);
  }
}

/*
** ch:send(v): copies v into the channel; at capacity, waits for room.
** Raises on a closed channel, and for nil.
*/
static int ch_send (lua_State *L) {
  static const loom_copywhere where = {2, 0, NULL};
  loom_blob **box;
  checkch(L, 1);
  luaL_argexpected(L, !lua_isnoneornil(L, 2), 2, "value other than nil");
  lua_settop(L, 2);
  box = loom__blob_box(L);
  *box = loom__copy_encode(L, 2, 1, &where);
  return send_k(L, LUA_OK, 0);
}

static int recv_k (lua_State *L, int status, lua_KContext ctx) {
  channel *ch = checkch(L, 1);
  (void)status; (void)ctx;
  lua_settop(L, 1);
  for (;;) {
    loom_msg *m;
    uv_mutex_lock(&ch->mu);
    if (ch->n > 0) {
      loom_blob *b = ring_pop(ch);
      loom_msg *w = takeq(&ch->sendq);
      uv_cond_broadcast(&ch->cv);
      uv_mutex_unlock(&ch->mu);
      wake(w);
      return loom__copy_take(L, b);
    }
    if (ch->closed) {
      uv_mutex_unlock(&ch->mu);
      lua_pushnil(L);
      return 1;
    }
    if (mayblock(L, ch, "recv", "empty")) {
      block(L, ch);
      uv_mutex_unlock(&ch->mu);
      continue;
    }
    m = loom__wait_new(L, &ch->sh);
    uv_mutex_lock(&ch->mu);
    if (!ch->closed && ch->n == 0) {
      m->next = ch->recvq;
      ch->recvq = m;
      m->linked = 1;
      uv_mutex_unlock(&ch->mu);
      return await_then(L, recv_k);
    }
    uv_mutex_unlock(&ch->mu);
    loom__msg_post(m);
    lua_settop(L, 1);
  }
}

/*
** ch:recv(): the next value (a copy); when empty, waits for one. nil once
** the channel is closed and empty.
*/
static int ch_recv (lua_State *L) {
  checkch(L, 1);
  return recv_k(L, LUA_OK, 0);
}

/* ch:close(): no more sends; everybody waiting wakes. Idempotent. */
static int ch_close (lua_State *L) {
  channel *ch = checkch(L, 1);
  loom_msg *r, *s;
  uv_mutex_lock(&ch->mu);
  ch->closed = 1;
  r = takeq(&ch->recvq);
  s = takeq(&ch->sendq);
  uv_cond_broadcast(&ch->cv);
  uv_mutex_unlock(&ch->mu);
  wake(r);
  wake(s);
  return 0;
}

static int ch_is_closed (lua_State *L) {
  channel *ch = checkch(L, 1);
  int c;
  uv_mutex_lock(&ch->mu);
  c = ch->closed;
  uv_mutex_unlock(&ch->mu);
  lua_pushboolean(L, c);
  return 1;
}

/* ch:qsize(): values sent and not yet received. */
static int ch_qsize (lua_State *L) {
  channel *ch = checkch(L, 1);
  int n;
  uv_mutex_lock(&ch->mu);
  n = ch->n;
  uv_mutex_unlock(&ch->mu);
  lua_pushinteger(L, n);
  return 1;
}

static int ch_gc (lua_State *L) {
  loom_shared **box = (loom_shared **)lua_touserdata(L, 1);
  loom__shared_release(*box);
  *box = NULL;
  return 0;
}

static int ch_tostring (lua_State *L) {
  channel *ch = checkch(L, 1);
  int n, closed;
  uv_mutex_lock(&ch->mu);
  n = ch->n;
  closed = ch->closed;
  uv_mutex_unlock(&ch->mu);
  if (ch->capacity > 0)
    lua_pushfstring(L, "loom.Channel (%d/%d%s) %p", n, ch->capacity,
                    closed ? ", closed" : "", (void *)ch);
  else
    lua_pushfstring(L, "loom.Channel (%d%s) %p", n, closed ? ", closed" : "",
                    (void *)ch);
  return 1;
}

static int ch_eq (lua_State *L) {
  lua_pushboolean(L, checkch(L, 1) == checkch(L, 2));
  return 1;
}

static const luaL_Reg ch_methods[] = {
  {"send", ch_send},
  {"recv", ch_recv},
  {"close", ch_close},
  {"is_closed", ch_is_closed},
  {"qsize", ch_qsize},
  {NULL, NULL}
};

static const luaL_Reg ch_metamethods[] = {
  {"__gc", ch_gc},
  {"__close", ch_close},
  {"__tostring", ch_tostring},
  {"__eq", ch_eq},
  {NULL, NULL}
};

static const luaL_Reg ch_functions[] = {
  {"channel", core_channel},
  {NULL, NULL}
};

int loom__open_channel (lua_State *L) {
  luaL_newmetatable(L, LOOM_CHANNEL_MT);
  loom__setfuncs(L, ch_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, ch_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__setfuncs(L, ch_functions);
  return 0;
}

/* }====================================================== */
