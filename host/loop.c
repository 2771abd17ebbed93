/*
** loop.c
** The event loop: ready queue, timer heap, one iteration, run and close.
*/

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A poll with timeout 0 is skipped unless this many iterations or this
** many seconds passed since the last one: the ready queue gives the same
** order either way, and I/O latency stays bounded. */
#define POLL_EVERY_ITER 16
#define POLL_EVERY_SECS 0.0005

/* Compact the heap when dead entries pass both of these. */
#define HEAP_COMPACT_MIN 100

static _Thread_local loom_loop *running_loop;

loom_loop *loom__running (void) {
  return running_loop;
}


/*
** {======================================================
** Clock
** =======================================================
*/

double loom__now (loom_loop *loop) {
  if (loop->virtual_time)
    return loop->vnow;
  return (double)uv_hrtime() / 1e9;
}

/* }====================================================== */


/*
** {======================================================
** Checks
** =======================================================
*/

loom_loop *loom__checkloop (lua_State *L, int idx) {
  return (loom_loop *)loom__checkud(L, idx, LOOM_TLOOP);
}

/*
** Checks that argument idx is a loop that is not closed; fname names the
** method in the error.
*/
loom_loop *loom__checkopen (lua_State *L, int idx, const char *fname) {
  loom_loop *loop = loom__checkloop(L, idx);
  if (loop->closed)
    luaL_error(L, "%s: event loop is closed", fname);
  return loop;
}

/* }====================================================== */


/*
** {======================================================
** Ready queue
** =======================================================
*/

/*
** Appends the object at idx to the ready queue of the loop at loopidx: it
** runs in the next iteration. The count is bumped before the store, which may run a
** finalizer that schedules something too.
*/
void loom__ready_push (lua_State *L, loom_loop *loop, int loopidx, int idx) {
  int n;
  if (loop->closed)
    luaL_error(L, "event loop is closed");
  idx = lua_absindex(L, idx);
  loopidx = lua_absindex(L, loopidx);
  lua_getiuservalue(L, loopidx, LOOM_LUV_QUEUE0 + loop->readyq);
  n = ++loop->nready;
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
}

/* }====================================================== */


/*
** {======================================================
** Timer heap: entries (when, seq) in a binary heap; each entry pins its
** object in the pins table under a slot from a free list.
** =======================================================
*/

static int entry_less (const loom_heapentry *a, const loom_heapentry *b) {
  if (a->when != b->when)
    return a->when < b->when;
  return a->seq < b->seq;
}

static void sift_up (loom_heapentry *h, int i) {
  loom_heapentry e = h[i];
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!entry_less(&e, &h[p]))
      break;
    h[i] = h[p];
    i = p;
  }
  h[i] = e;
}

static void sift_down (loom_heapentry *h, int n, int i) {
  loom_heapentry e = h[i];
  for (;;) {
    int c = 2 * i + 1;
    if (c >= n)
      break;
    if (c + 1 < n && entry_less(&h[c + 1], &h[c]))
      c++;
    if (!entry_less(&h[c], &e))
      break;
    h[i] = h[c];
    i = c;
  }
  h[i] = e;
}

static int pin_alloc (lua_State *L, loom_loop *loop) {
  if (loop->nfree > 0)
    return loop->freeslots[--loop->nfree];
  if (loop->maxslot == INT32_MAX)
    luaL_error(L, "too many timers");
  return ++loop->maxslot;
}

static void pin_free (lua_State *L, loom_loop *loop, int slot) {
  if (loop->nfree == loop->freecap) {
    int ncap = loop->freecap ? loop->freecap * 2 : 64;
    int *p = (int *)realloc(loop->freeslots, (size_t)ncap * sizeof(int));
    if (p == NULL)
      luaL_error(L, "not enough memory");
    loop->freeslots = p;
    loop->freecap = ncap;
  }
  loop->freeslots[loop->nfree++] = slot;
}

/* Makes room for one more heap entry; 0 when out of memory. */
static int heap_reserve (loom_loop *loop) {
  if (loop->nheap == loop->heapcap) {
    int ncap = loop->heapcap ? loop->heapcap * 2 : 256;
    loom_heapentry *p = (loom_heapentry *)realloc(loop->heap,
                                      (size_t)ncap * sizeof(loom_heapentry));
    if (p == NULL)
      return 0;
    loop->heap = p;
    loop->heapcap = ncap;
  }
  return 1;
}

/*
** Pushes the object at idx into the heap with deadline 'when'; stores the
** entry's sequence number in *seq when seq is not NULL. The pin is stored
** first: that store may run finalizers, which may push timers too, so the
** heap array is touched only afterwards. [-0, +0, m]
*/
void loom__heap_push (lua_State *L, loom_loop *loop, int loopidx, int idx,
                      double when, uint64_t *seq) {
  loom_heapentry e;
  int slot;
  idx = lua_absindex(L, idx);
  loopidx = lua_absindex(L, loopidx);
  slot = pin_alloc(L, loop);
  lua_getiuservalue(L, loopidx, LOOM_LUV_PINS);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  if (!heap_reserve(loop)) {
    lua_getiuservalue(L, loopidx, LOOM_LUV_PINS);
    lua_pushnil(L);
    lua_rawseti(L, -2, slot);
    lua_pop(L, 1);
    pin_free(L, loop, slot);
    luaL_error(L, "not enough memory");
  }
  e.when = when;
  e.seq = ++loop->seq;
  e.slot = slot;
  loop->heap[loop->nheap] = e;
  sift_up(loop->heap, loop->nheap++);
  if (seq)
    *seq = e.seq;
}

/* A live entry became dead (cancelled timer, woken sleeper). */
void loom__heap_cancelled (loom_loop *loop) {
  loop->ncancelled++;
}

/*
** Pushes the object pinned by entry e and says whether the entry is still
** live. [-0, +1, -]
*/
static int entry_push (lua_State *L, loom_loop *loop, int loopidx,
                       const loom_heapentry *e) {
  loom_obj *o;
  (void)loop;
  lua_getiuservalue(L, loopidx, LOOM_LUV_PINS);
  lua_rawgeti(L, -1, e->slot);
  lua_remove(L, -2);
  o = (loom_obj *)lua_touserdata(L, -1);
  if (o->kind == LOOM_KTIMER)
    return !(o->flags & LOOM_FCANCELLED);
  else {  /* a sleeping task */
    loom_task *t = (loom_task *)o;
    return t->sleep_seq == e->seq && t->f.state == LOOM_PENDING;
  }
}

static void entry_unpin (lua_State *L, loom_loop *loop, int loopidx, int slot) {
  lua_getiuservalue(L, loopidx, LOOM_LUV_PINS);
  lua_pushnil(L);
  lua_rawseti(L, -2, slot);
  lua_pop(L, 1);
  pin_free(L, loop, slot);
}

/* Removes the top entry from the heap array (no Lua work). */
static loom_heapentry heap_pop (loom_loop *loop) {
  loom_heapentry top = loop->heap[0];
  loop->nheap--;
  if (loop->nheap > 0) {
    loop->heap[0] = loop->heap[loop->nheap];
    sift_down(loop->heap, loop->nheap, 0);
  }
  return top;
}

/* Marks a popped entry's object as out of the heap. [-1, +0, -] */
static void entry_done (lua_State *L, loom_loop *loop, int loopidx,
                        const loom_heapentry *e, int live) {
  loom_obj *o = (loom_obj *)lua_touserdata(L, -1);
  if (o->kind == LOOM_KTIMER) {
    o->flags &= (uint8_t)~LOOM_FINHEAP;
  }
  else if (live) {
    ((loom_task *)o)->sleep_seq = 0;
  }
  if (!live && loop->ncancelled > 0)
    loop->ncancelled--;
  lua_pop(L, 1);
  entry_unpin(L, loop, loopidx, e->slot);
}

/*
** Drops every dead entry and rebuilds the heap: O(n), run only when dead
** entries are more than half of the heap, so its cost is amortised over
** the cancellations that made them.
*/
static void heap_compact (lua_State *L, loom_loop *loop, int loopidx) {
  int i, j = 0;
  for (i = 0; i < loop->nheap; i++) {
    loom_heapentry e = loop->heap[i];
    int live = entry_push(L, loop, loopidx, &e);
    if (live) {
      lua_pop(L, 1);
      loop->heap[j++] = e;
    }
    else {
      loom_obj *o = (loom_obj *)lua_touserdata(L, -1);
      if (o->kind == LOOM_KTIMER)
        o->flags &= (uint8_t)~LOOM_FINHEAP;
      lua_pop(L, 1);
      entry_unpin(L, loop, loopidx, e.slot);
    }
  }
  loop->nheap = j;
  loop->ncancelled = 0;
  for (i = j / 2 - 1; i >= 0; i--)
    sift_down(loop->heap, loop->nheap, i);
}

/* Pops dead entries off the top of the heap. */
static void heap_trim (lua_State *L, loom_loop *loop, int loopidx) {
  if (loop->ncancelled > HEAP_COMPACT_MIN && loop->ncancelled * 2 > loop->nheap) {
    heap_compact(L, loop, loopidx);
    return;
  }
  while (loop->nheap > 0 && loop->ncancelled > 0) {
    loom_heapentry e = loop->heap[0];
    if (entry_push(L, loop, loopidx, &e)) {
      lua_pop(L, 1);
      break;
    }
    heap_pop(loop);
    entry_done(L, loop, loopidx, &e, 0);
  }
}

/*
** Moves every live entry due by 'end' to the ready queue, in (deadline,
** scheduling order).
*/
static void heap_due (lua_State *L, loom_loop *loop, int loopidx, double end) {
  while (loop->nheap > 0 && loop->heap[0].when <= end) {
    loom_heapentry e = heap_pop(loop);
    int live = entry_push(L, loop, loopidx, &e);
    if (live) {
      loom_obj *o = (loom_obj *)lua_touserdata(L, -1);
      if (o->kind == LOOM_KTASK)  /* the task steps one iteration later, */
        ((loom_task *)o)->sleep_due = 1;  /* as its sleep future would */
      loom__ready_push(L, loop, loopidx, -1);
    }
    entry_done(L, loop, loopidx, &e, live);
  }
}

static void heap_clear (lua_State *L, loom_loop *loop, int loopidx) {
  while (loop->nheap > 0) {
    loom_heapentry e = heap_pop(loop);
    int live = entry_push(L, loop, loopidx, &e);
    entry_done(L, loop, loopidx, &e, live);
  }
  loop->ncancelled = 0;
}

/* }====================================================== */


/*
** {======================================================
** Errors and the exception handler
** =======================================================
*/

/*
** Message handler: returns a table {exception = e, traceback = tb} so
** the code that catches can build a context for the exception handler.
*/
int loom__traceback (lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, 1);
  lua_setfield(L, -2, "exception");
  luaL_traceback(L, L, NULL, 1);
  lua_setfield(L, -2, "traceback");
  return 1;
}

/* Says whether the error at idx is a table made by loom__traceback. */
static int wrapped (lua_State *L, int idx) {
  if (!lua_istable(L, idx))
    return 0;
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Writes a context to stderr when no Lua handler can. [-0, +0, -] */
static void fallback_report (lua_State *L, int ctxidx) {
  const char *msg;
  lua_getfield(L, ctxidx, "message");
  msg = lua_tostring(L, -1);
  fprintf(stderr, "%s\n", msg ? msg : "unhandled exception in event loop");
  lua_pop(L, 1);
  lua_getfield(L, ctxidx, "exception");
  if (!lua_isnil(L, -1)) {
    const char *e = luaL_tolstring(L, -1, NULL);
    fprintf(stderr, "%s\n", e);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  fflush(stderr);
}

/*
** Calls the loop's exception handler (or its default_exception_handler
** method) with the context table at ctxidx. Never raises: an error in the
** handler is reported by the default handler, and an error there by a
** plain message on stderr. [-0, +0, -]
*/
int loom__report (lua_State *L, int loopidx, int ctxidx) {
  int top = lua_gettop(L), msgh;
  loopidx = lua_absindex(L, loopidx);
  ctxidx = lua_absindex(L, ctxidx);
  if (!lua_checkstack(L, 10)) {
    fprintf(stderr, "loom: cannot report an error (stack overflow)\n");
    return 0;
  }
  lua_pushcfunction(L, loom__traceback);
  msgh = lua_gettop(L);
  if (lua_getiuservalue(L, loopidx, LOOM_LUV_HANDLER) != LUA_TNIL) {
    lua_pushvalue(L, loopidx);
    lua_pushvalue(L, ctxidx);
    if (lua_pcall(L, 2, 0, msgh) == LUA_OK) {
      lua_settop(L, top);
      return 1;
    }
    /* the handler failed: report that, with the original context */
    lua_createtable(L, 0, 4);
    lua_pushliteral(L, "Unhandled error in exception handler");
    lua_setfield(L, -2, "message");
    if (wrapped(L, -2)) {
      lua_getfield(L, -2, "exception");
      lua_setfield(L, -2, "exception");
      lua_getfield(L, -2, "traceback");
      lua_setfield(L, -2, "traceback");
    }
    else {
      lua_pushvalue(L, -2);
      lua_setfield(L, -2, "exception");
    }
    lua_pushvalue(L, ctxidx);
    lua_setfield(L, -2, "context");
    ctxidx = lua_gettop(L);
  }
  else
    lua_pop(L, 1);
  if (lua_getfield(L, loopidx, "default_exception_handler") == LUA_TFUNCTION) {
    lua_pushvalue(L, loopidx);
    lua_pushvalue(L, ctxidx);
    if (lua_pcall(L, 2, 0, msgh) == LUA_OK) {
      lua_settop(L, top);
      return 1;
    }
  }
  fallback_report(L, ctxidx);
  lua_settop(L, top);
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** One iteration
** =======================================================
*/

/* Pushes a short description of the object at idx. */
static void describe (lua_State *L, int idx) {
  luaL_tolstring(L, idx, NULL);
}

/* Runs the object at idx popped from the ready queue of the loop at
** loopidx. */
static void run_entry (lua_State *L, int loopidx, int idx) {
  loom_obj *o = (loom_obj *)lua_touserdata(L, idx);
  if (o == NULL)
    return;  /* a push that failed for lack of memory left a hole */
  switch (o->kind) {
    case LOOM_KHANDLE: case LOOM_KTIMER:
      if (!(o->flags & LOOM_FCANCELLED))
        loom__run_handle(L, o, idx);
      break;
    case LOOM_KFUTURE:
      loom__future_run_callbacks(L, (loom_future *)o, idx, loopidx);
      break;
    case LOOM_KTASK: {
      loom_task *t = (loom_task *)o;
      if (t->f.state != LOOM_PENDING)
        loom__future_run_callbacks(L, &t->f, idx, loopidx);
      else
        loom__task_step(L, t, idx, loopidx);
      break;
    }
  }
}

static void warn_slow (lua_State *L, int loopidx, int idx, double secs) {
  int top = lua_gettop(L);
  lua_createtable(L, 0, 3);
  describe(L, idx);
  {
    char buf[64];
    snprintf(buf, sizeof buf, "%.3f", secs);
    lua_pushfstring(L, "Executing %s took %s seconds", lua_tostring(L, -1), buf);
  }
  lua_setfield(L, top + 1, "message");
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_setfield(L, top + 1, "handle");
  lua_pushnumber(L, secs);
  lua_setfield(L, top + 1, "duration");
  loom__report(L, loopidx, top + 1);
  lua_settop(L, top);
}

/*
** Runs entries icur+1 .. ncur of the batch table at index tbl: the ready
** queue as it was when the iteration began. An entry is cleared only
** after it ran, and 'inentry' is set while it runs, so when a callback
** raises, run_forever finds the failing entry still in place, reports it
** and comes back here for the rest of the batch.
*/
/* Writes the trace event of the entry at idx, run from t0 to t1. */
static void trace_entry (lua_State *L, loom_loop *loop, int idx, uint64_t t0,
                         uint64_t t1) {
  loom_obj *o = (loom_obj *)lua_touserdata(L, idx);
  const char *cat = "callback", *argname = NULL;
  double arg = 0;
  if (o == NULL || !lua_checkstack(L, 2))
    return;
  if (o->kind == LOOM_KTASK) {
    cat = "task";
    argname = "task";  /* its id: the N of its life's "Task N" */
    arg = ((loom_task *)o)->id;
  }
  else if (o->kind == LOOM_KFUTURE)
    cat = "future";
  describe(L, idx);
  loom__trace_span(loop, cat, lua_tostring(L, -1), t0, t1, argname, arg);
  lua_pop(L, 1);
}

static void run_batch (lua_State *L, loom_loop *loop, int loopidx, int tbl) {
  while (loop->icur < loop->ncur) {
    int i = loop->icur + 1;
    lua_rawgeti(L, tbl, i);
    loop->inentry = 1;
    if (loop->debug || loom__trace != NULL) {
      uint64_t t0 = uv_hrtime(), t1;
      double dt;
      run_entry(L, loopidx, tbl + 1);
      t1 = uv_hrtime();
      dt = (double)(t1 - t0) / 1e9;
      if (loom__trace != NULL)
        trace_entry(L, loop, tbl + 1, t0, t1);
      if (loop->debug && dt >= loop->slow_callback_duration)
        warn_slow(L, loopidx, tbl + 1, dt);
    }
    else
      run_entry(L, loopidx, tbl + 1);
    loop->inentry = 0;
    lua_settop(L, tbl);
    loop->icur = i;
    lua_pushnil(L);
    lua_rawseti(L, tbl, i);
  }
  loop->ncur = loop->icur = 0;
}

static void wakeup_cb (uv_timer_t *t) {
  (void)t;
}

/*
** Polls for I/O with a timeout in seconds (< 0: no limit).
*/
static void poll_io_ (loom_loop *loop, double timeout);

static void poll_io (loom_loop *loop, double timeout) {
  if (loom__trace != NULL) {
    uint64_t t0 = uv_hrtime();
    poll_io_(loop, timeout);
    loom__trace_span(loop, "loop", "poll", t0, uv_hrtime(), "timeout",
                     timeout);
  }
  else
    poll_io_(loop, timeout);
}

static void poll_io_ (loom_loop *loop, double timeout) {
  if (timeout == 0) {
    /* uv_run does not poll a loop with nothing ref'd alive: unref'd
    ** signal handles still need it, so hold a reference meanwhile */
    uv_ref((uv_handle_t *)&loop->async);
    uv_run(&loop->uv, UV_RUN_NOWAIT);
    uv_unref((uv_handle_t *)&loop->async);
    return;
  }
  if (timeout > 0) {
    double ms = ceil(timeout * 1000.0);
    uint64_t t = ms > 4e18 ? (uint64_t)4e18 : (uint64_t)ms;
    uv_update_time(&loop->uv);
    /* Repeating: uv_run runs due timers before it polls, and its clock
    ** (whole milliseconds, read again there) may have reached the
    ** deadline by then. A one-shot timer would be spent there, and with
    ** other handles alive the poll would then wait with no limit, past
    ** every timer of the loop. Repeating, it is due again t ms later. */
    uv_timer_start(&loop->wakeup, wakeup_cb, t, t);
    uv_ref((uv_handle_t *)&loop->wakeup);
    uv_run(&loop->uv, UV_RUN_ONCE);
    uv_timer_stop(&loop->wakeup);
  }
  else {
    uv_ref((uv_handle_t *)&loop->async);
    uv_run(&loop->uv, UV_RUN_ONCE);
    uv_unref((uv_handle_t *)&loop->async);
  }
}

/* The future of _record_next, under the loop in a registry table. */
static const char record_key = 0;

/*
** Completes _record_next's future with the list of what the batch at tbl
** (about to run) holds, each as tostring shows it. Runs before the batch
** so that the list is whole even if an entry raises.
*/
static int record_list (lua_State *L) {
  int tbl = 1, i, n = (int)lua_tointeger(L, 2);
  lua_createtable(L, n, 0);  /* 4 (3: the future) */
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, tbl, i);
    describe(L, -1);
    lua_rawseti(L, 4, i);
    lua_pop(L, 1);
  }
  lua_getfield(L, 3, "set_result");
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  lua_call(L, 2, 0);
  return 0;
}

static void record_batch (lua_State *L, loom_loop *loop, int loopidx,
                          int tbl) {
  int top = lua_gettop(L);
  loop->recording = 0;
  lua_pushcfunction(L, record_list);
  lua_pushvalue(L, tbl);
  lua_pushinteger(L, loop->ncur);
  if (loom__loop_table(L, loopidx, &record_key, 0)) {
    lua_getfield(L, -1, "future");
    lua_pushnil(L);
    lua_setfield(L, -3, "future");
    lua_remove(L, -2);
    lua_pcall(L, 3, 0, 0);  /* fails only for a future already done */
  }
  lua_settop(L, top);
}

/*
** One iteration, in the order of asyncio's _run_once: drop cancelled
** timers, poll I/O (not at all when something is ready, unless enough
** iterations passed; until the next deadline otherwise), move every timer
** due by now to the ready queue in (deadline, scheduling order), then run
** exactly the entries that were ready when the running began: anything
** scheduled by those runs in the next iteration. This is the one place
** that starts callbacks; run_batch runs them.
*/
static void run_once (lua_State *L, loom_loop *loop, int loopidx) {
  int top = lua_gettop(L);
  uint64_t tstart = loom__trace != NULL ? uv_hrtime() : 0;
  int nrun = 0;
  heap_trim(L, loop, loopidx);
  loop->sinkread = 0;
  if (loop->nready > 0 || loop->stopping) {
    /* signal handles keep no loop alive, but must be heard while busy */
    if (uv_loop_alive(&loop->uv) || loop->nsignals > 0) {
      double now = loom__now(loop);
      if (++loop->sincepoll >= POLL_EVERY_ITER
          || now - loop->lastpoll >= POLL_EVERY_SECS || loop->virtual_time) {
        poll_io(loop, 0);
        loop->sincepoll = 0;
        loop->lastpoll = now;
      }
    }
  }
  else if (loop->virtual_time == 2) {
    /* a manual clock: wait for I/O without moving it; only _advance
    ** makes timers due */
    if (uv_loop_alive(&loop->uv) || loop->nsignals > 0)
      poll_io(loop, loop->nheap > 0 && loop->heap[0].when <= loop->vnow
                    ? 0 : -1);
    else if (!(loop->nheap > 0 && loop->heap[0].when <= loop->vnow))
      luaL_error(L, "event loop deadlock: nothing is ready, the clock is "
                 "manual and no I/O can happen");
  }
  else if (loop->virtual_time) {
    if (uv_loop_alive(&loop->uv)) {
      /* something real may still happen: wait for it in real time */
      double t0 = (double)uv_hrtime() / 1e9;
      poll_io(loop, loop->nheap > 0 ? fmax(0, loop->heap[0].when - loop->vnow)
                                    : -1);
      loop->vnow += (double)uv_hrtime() / 1e9 - t0;
    }
    else if (loop->nheap > 0 && loop->heap[0].when < HUGE_VAL) {
      if (loop->heap[0].when > loop->vnow)
        loop->vnow = loop->heap[0].when;  /* jump to the next deadline */
    }
    else
      luaL_error(L, "event loop deadlock: nothing is ready, no timer can "
                 "fire and no I/O can happen");
  }
  else {
    double timeout = -1;
    if (loop->nheap > 0) {
      timeout = loop->heap[0].when - loom__now(loop);
      if (timeout < 0)
        timeout = 0;
    }
    poll_io(loop, timeout);
    loop->sincepoll = 0;
    loop->lastpoll = loom__now(loop);
  }
  if (loop->nheap > 0)
    heap_due(L, loop, loopidx, loom__now(loop));
  if (loop->nready > 0) {
    /* the ready queue becomes this iteration's batch; new entries go to
    ** the other table, emptied by the last batch */
    lua_getiuservalue(L, loopidx, LOOM_LUV_QUEUE0 + loop->readyq);
    loop->readyq ^= 1;
    loop->ncur = nrun = loop->nready;
    loop->icur = 0;
    loop->nready = 0;
    if (loop->recording)
      record_batch(L, loop, loopidx, top + 1);
    run_batch(L, loop, loopidx, top + 1);
  }
  lua_settop(L, top);
  if (loom__trace != NULL && tstart != 0)
    loom__trace_span(loop, "loop", "iteration", tstart, uv_hrtime(), "ran",
                     nrun);
}

/* Reports the batch entry that raised: the error is on top. [-1, +0, -] */
static void report_entry (lua_State *L, loom_loop *loop, int loopidx) {
  int err = lua_gettop(L);
  int i = ++loop->icur;
  lua_getiuservalue(L, loopidx, LOOM_LUV_QUEUE0 + (loop->readyq ^ 1));
  lua_rawgeti(L, -1, i);  /* the failing entry */
  lua_createtable(L, 0, 4);
  describe(L, err + 2);
  lua_pushfstring(L, "Exception in callback %s", lua_tostring(L, -1));
  lua_setfield(L, err + 3, "message");
  lua_pop(L, 1);
  lua_pushvalue(L, err + 2);
  lua_setfield(L, err + 3, "handle");
  if (wrapped(L, err)) {
    lua_getfield(L, err, "exception");
    lua_setfield(L, err + 3, "exception");
    lua_getfield(L, err, "traceback");
    lua_setfield(L, err + 3, "traceback");
  }
  else {
    lua_pushvalue(L, err);
    lua_setfield(L, err + 3, "exception");
  }
  lua_pushnil(L);
  lua_rawseti(L, err + 1, i);
  if (loop->icur >= loop->ncur)
    loop->ncur = loop->icur = 0;
  loom__report(L, loopidx, err + 3);
  lua_settop(L, err - 1);
}

/* }====================================================== */


/*
** {======================================================
** Running
** =======================================================
*/

/*
** Body of run_forever, under lua_pcall with the loop at index 1: a batch
** cut short by an error is finished first.
*/
static int run_body (lua_State *L) {
  loom_loop *loop = (loom_loop *)lua_touserdata(L, 1);
  if (loop->ncur > 0) {
    lua_getiuservalue(L, 1, LOOM_LUV_QUEUE0 + (loop->readyq ^ 1));
    run_batch(L, loop, 1, 2);
    lua_settop(L, 1);
    if (loop->stopping)
      return 0;
  }
  for (;;) {
    run_once(L, loop, 1);
    if (loop->stopping)
      return 0;
  }
}

/*
** Runs the loop until stop() is called. Raises if the loop is closed,
** already running, or another loop runs in this thread. A callback that
** raises unwinds to here: it is reported and the loop goes on.
*/
static int loop_run_forever (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "run_forever");
  loom_loop *prev = running_loop;
  lua_State *prevL = loop->L;
  int status;
  if (loop->running)
    return luaL_error(L, "run_forever: this event loop is already running");
  if (running_loop != NULL)
    return luaL_error(L, "run_forever: cannot run the event loop while "
                      "another loop is running");
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, LOOM_LUV_ANCHORS);
  loop->anchors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1);
  loop->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  loop->running = 1;
  loop->L = L;
  running_loop = loop;
  for (;;) {
    lua_pushcfunction(L, loom__traceback);  /* 2 */
    loom__pushcfunction(L, run_body);
    lua_pushvalue(L, 1);
    status = lua_pcall(L, 1, 0, 2);
    if (status == LUA_OK || !loop->inentry)
      break;
    loop->inentry = 0;
    report_entry(L, loop, 1);
    lua_settop(L, 1);
    status = LUA_OK;
    if (loop->stopping && loop->ncur == 0)
      break;
  }
  running_loop = prev;
  loop->running = 0;
  loop->stopping = 0;
  loop->inentry = 0;
  loop->L = prevL;
  luaL_unref(L, LUA_REGISTRYINDEX, loop->self_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, loop->anchors_ref);
  loop->self_ref = loop->anchors_ref = LUA_NOREF;
  if (status != LUA_OK) {
    /* not a callback's error: unwrap the message handler's table */
    if (wrapped(L, -1))
      lua_getfield(L, -1, "exception");
    return lua_error(L);
  }
  return 0;
}

static int stop_when_done (lua_State *L) {
  loom_loop *loop = (loom_loop *)lua_touserdata(L, lua_upvalueindex(1));
  loop->stopping = 1;
  return 0;
}

/*
** run_until_complete(fut_or_fn, ...): runs until the future is done (a
** function is first wrapped in a task) and returns its results or raises
** its error.
*/
static int loop_run_until_complete (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "run_until_complete");
  loom_future *f;
  int status, nres;
  if (loop->running)
    return luaL_error(L, "run_until_complete: this event loop is already "
                      "running");
  if (running_loop != NULL)
    return luaL_error(L, "run_until_complete: cannot run the event loop "
                      "while another loop is running");
  if (lua_type(L, 2) == LUA_TFUNCTION) {
    int n = lua_gettop(L);
    lua_getfield(L, 1, "create_task");
    lua_insert(L, 1);  /* create_task, loop, fn, args... */
    lua_call(L, n, 1);
  }
  else {
    luaL_argexpected(L, loom__tofuture(L, 2) != NULL, 2, "future or function");
    lua_settop(L, 2);
    lua_remove(L, 1);
  }
  /* stack: fut */
  f = loom__checkfuture(L, 1);
  lua_settop(L, 1);
  if (f->loop != loop)
    return luaL_error(L, "run_until_complete: the future belongs to a "
                      "different loop");
  lua_getiuservalue(L, 1, LOOM_FUV_LOOP);  /* 2: loop */
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, stop_when_done, 1);  /* 3: callback */
  loom__future_add_callback(L, f, 1, 3, LOOM_CBLUA);
  loom__pushcfunction(L, loop_run_forever);
  lua_pushvalue(L, 2);
  status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) {
    loom__future_remove_callback(L, f, 1, 3);  /* the error goes on */
    return lua_error(L);
  }
  if (f->state == LOOM_PENDING) {
    loom__future_remove_callback(L, f, 1, 3);
    return luaL_error(L, "run_until_complete: event loop stopped before "
                      "the future completed");
  }
  nres = loom__future_push_results(L, f, 1);
  return nres;
}

static int loop_stop (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  loop->stopping = 1;
  return 0;
}

static int loop_is_running (lua_State *L) {
  lua_pushboolean(L, loom__checkloop(L, 1)->running);
  return 1;
}

static int loop_is_closed (lua_State *L) {
  lua_pushboolean(L, loom__checkloop(L, 1)->closed);
  return 1;
}

static int loop_time (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  lua_pushnumber(L, loom__now(loop));
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Scheduling
** =======================================================
*/

static void checkcallable (lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL)
      luaL_typeerror(L, idx, "function");
    lua_pop(L, 1);
  }
}

static double checkdelay (lua_State *L, int idx) {
  double d = luaL_checknumber(L, idx);
  if (isnan(d))
    luaL_argerror(L, idx, "delay is NaN");
  if (d < 0)
    luaL_argerror(L, idx, "delay is negative");
  return d;
}

static int loop_call_soon (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "call_soon");
  checkcallable(L, 2);
  loom__newhandle(L, loop, LOOM_KHANDLE, 2, lua_gettop(L) - 2, 0);
  loom__ready_push(L, loop, 1, -1);
  return 1;
}

static int loop_call_soon_threadsafe (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "call_soon_threadsafe");
  checkcallable(L, 2);
  loom__newhandle(L, loop, LOOM_KHANDLE, 2, lua_gettop(L) - 2, 0);
  loom__ready_push(L, loop, 1, -1);
  uv_async_send(&loop->async);
  return 1;
}

static int push_timer (lua_State *L, loom_loop *loop, double when) {
  loom_obj *o;
  checkcallable(L, 3);
  o = (loom_obj *)lua_touserdata(L, loom__newhandle(L, loop, LOOM_KTIMER, 3,
                                                    lua_gettop(L) - 3, when));
  loom__heap_push(L, loop, 1, -1, when, NULL);
  o->flags |= LOOM_FINHEAP;
  return 1;
}

static int loop_call_later (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "call_later");
  double d = checkdelay(L, 2);
  return push_timer(L, loop, loom__now(loop) + d);
}

static int loop_call_at (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "call_at");
  double when = luaL_checknumber(L, 2);
  if (isnan(when))
    luaL_argerror(L, 2, "time is NaN");
  return push_timer(L, loop, when);
}

static int loop_create_future (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "create_future");
  lua_settop(L, 1);
  loom__future_new(L, loop, 1);
  return 1;
}

static int loop_create_task (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "create_task");
  checkcallable(L, 2);
  if (lua_getiuservalue(L, 1, LOOM_LUV_FACTORY) != LUA_TNIL) {
    int n = lua_gettop(L) - 1;
    lua_insert(L, 1);  /* factory, loop, fn, args... */
    lua_call(L, n, 1);
    return 1;
  }
  lua_pop(L, 1);
  loom__task_new(L, loop, 1, 2, lua_gettop(L) - 2);
  return 1;
}

static int loop_set_task_factory (lua_State *L) {
  loom__checkloop(L, 1);
  if (!lua_isnoneornil(L, 2))
    checkcallable(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, LOOM_LUV_FACTORY);
  return 0;
}

static int loop_get_task_factory (lua_State *L) {
  loom__checkloop(L, 1);
  lua_getiuservalue(L, 1, LOOM_LUV_FACTORY);
  return 1;
}

static int loop_set_exception_handler (lua_State *L) {
  loom__checkloop(L, 1);
  if (!lua_isnoneornil(L, 2))
    checkcallable(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, LOOM_LUV_HANDLER);
  return 0;
}

static int loop_get_exception_handler (lua_State *L) {
  loom__checkloop(L, 1);
  lua_getiuservalue(L, 1, LOOM_LUV_HANDLER);
  return 1;
}

static int loop_call_exception_handler (lua_State *L) {
  loom__checkloop(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  loom__report(L, 1, 2);
  return 0;
}

static int loop_set_debug (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  luaL_checkany(L, 2);
  loop->debug = (uint8_t)lua_toboolean(L, 2);
  return 0;
}

static int loop_get_debug (lua_State *L) {
  lua_pushboolean(L, loom__checkloop(L, 1)->debug);
  return 1;
}

/* Slow-callback threshold of debug mode, in seconds: get and set. */
static int loop_slow_callback_duration (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  if (!lua_isnoneornil(L, 2)) {
    double d = luaL_checknumber(L, 2);
    luaL_argcheck(L, d >= 0, 2, "duration must be a non-negative number");
    loop->slow_callback_duration = d;
  }
  lua_pushnumber(L, loop->slow_callback_duration);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Ctrl-C for the executable: a uv signal handle, never a longjmp.
** =======================================================
*/

static void sigint_cb (uv_signal_t *h, int signum) {
  loom_loop *loop = (loom_loop *)h->data;
  lua_State *L = loop->L;
  (void)signum;
  if (L == NULL || !lua_checkstack(L, 4))
    return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  lua_getiuservalue(L, -1, LOOM_LUV_SIGINT);
  if (!lua_isnil(L, -1)) {
    /* run it as a callback in the next iteration */
    loom__newhandle(L, loop, LOOM_KHANDLE, lua_gettop(L), 0, 0);
    loom__ready_push(L, loop, -3, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
}

/* loop:_catch_sigint(fn or nil) */
static int loop_catch_sigint (lua_State *L) {
  loom_loop *loop = loom__checkopen(L, 1, "_catch_sigint");
  if (lua_isnoneornil(L, 2)) {
    lua_settop(L, 1);
    lua_pushnil(L);
    lua_setiuservalue(L, 1, LOOM_LUV_SIGINT);
    if (loop->sigint_on) {
      uv_signal_stop(&loop->sigint);
      loop->sigint_on = 0;
      loop->nsignals--;
    }
    return 0;
  }
  checkcallable(L, 2);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, LOOM_LUV_SIGINT);
  if (!loop->sigint_on) {
    int r = uv_signal_start(&loop->sigint, sigint_cb, SIGINT);
    if (r < 0)
      return luaL_error(L, "_catch_sigint: %s", uv_strerror(r));
    uv_unref((uv_handle_t *)&loop->sigint);
    loop->sigint_on = 1;
    loop->nsignals++;
  }
  return 0;
}

/* }====================================================== */


/*
** {======================================================
** Creation, closing, introspection
** =======================================================
*/

static void close_walk_cb (uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/*
** Closes the loop: drops every pending callback and timer, closes the
** libuv handles and waits for their close callbacks, frees the C arrays.
** Idempotent; shared by close() and __gc.
*/
static void loop_shutdown (lua_State *L, loom_loop *loop, int loopidx) {
  int i;
  if (loop->closed)
    return;
  if (loop->uvinit)
    heap_clear(L, loop, loopidx);
  loop->closed = 1;
  loop->nready = loop->ncur = loop->icur = 0;
  for (i = LOOM_LUV_QUEUE0; i <= LOOM_LUV_ANCHORS; i++) {
    lua_pushnil(L);
    lua_setiuservalue(L, loopidx, i);
  }
  if (loop->uvinit) {
    loom__thread_shutdown(L, loop, loopidx);
    loom__dns_shutdown(L, loop, loopidx);
    loom__fs_shutdown(L, loop, loopidx);  /* before stream: it detaches
                                             sendfiles from transports */
    loom__stream_shutdown(L, loop, loopidx);
    loom__signal_shutdown(L, loop, loopidx);
    loom__poll_shutdown(L, loop, loopidx);
    loom__udp_shutdown(L, loop, loopidx);
    loom__process_shutdown(L, loop, loopidx);
    uv_walk(&loop->uv, close_walk_cb, NULL);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    uv_loop_close(&loop->uv);
    loop->uvinit = 0;
  }
  free(loop->heap);
  free(loop->freeslots);
  free(loop->tfree);
  loop->heap = NULL;
  loop->freeslots = loop->tfree = NULL;
  loop->nheap = loop->heapcap = 0;
  loop->nfree = loop->freecap = loop->maxslot = 0;
  loop->ntfree = loop->tfreecap = loop->tmax = 0;
}

static int loop_close (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  if (loop->running)
    return luaL_error(L, "close: cannot close a running event loop");
  loop_shutdown(L, loop, 1);
  return 0;
}

static int loop_gc (lua_State *L) {
  loom_loop *loop = (loom_loop *)lua_touserdata(L, 1);
  if (!loop->running)
    loop_shutdown(L, loop, 1);
  return 0;
}

static int loop_tostring (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  lua_pushfstring(L, "loom.Loop (%s%s) %p",
                  loop->closed ? "closed" : loop->running ? "running" : "idle",
                  loop->virtual_time ? ", virtual time" : "", (void *)loop);
  return 1;
}

/* Sets user value i of the userdata on top to a new table. */
static void newtable (lua_State *L, int i, const char *mode) {
  lua_newtable(L);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  lua_setiuservalue(L, -2, i);
}

/*
** new_loop([opts]): opts.virtual_time, opts.debug. The userdata is made
** closed first, so a failure below leaves something __gc can collect.
*/
static int core_new_loop (lua_State *L) {
  loom_loop *loop;
  int r, vt = 0, dbg = 0;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "virtual_time");
    if (lua_type(L, -1) == LUA_TSTRING
        && strcmp(lua_tostring(L, -1), "manual") == 0)
      vt = 2;
    else if (lua_type(L, -1) == LUA_TSTRING)
      return luaL_argerror(L, 1, "virtual_time must be true, false or "
                           "\"manual\"");
    else
      vt = lua_toboolean(L, -1);
    lua_getfield(L, 1, "debug");
    dbg = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  loop = (loom_loop *)lua_newuserdatauv(L, sizeof(loom_loop), LOOM_LUV_COUNT);
  memset(loop, 0, sizeof(*loop));
  loop->closed = 1;
  loop->self_ref = loop->anchors_ref = LUA_NOREF;
  loom__setmt(L, LOOM_TLOOP);
  newtable(L, LOOM_LUV_QUEUE0, NULL);
  newtable(L, LOOM_LUV_QUEUE1, NULL);
  newtable(L, LOOM_LUV_PINS, NULL);
  newtable(L, LOOM_LUV_TASKS, "v");
  newtable(L, LOOM_LUV_ANCHORS, NULL);
  r = uv_loop_init(&loop->uv);
  if (r < 0)
    return luaL_error(L, "new_event_loop: %s", uv_strerror(r));
  loop->closed = 0;
  loop->uvinit = 1;
  uv_timer_init(&loop->uv, &loop->wakeup);
  uv_unref((uv_handle_t *)&loop->wakeup);
  r = uv_async_init(&loop->uv, &loop->async, NULL);
  if (r < 0)
    return luaL_error(L, "new_event_loop: %s", uv_strerror(r));
  uv_unref((uv_handle_t *)&loop->async);
  uv_signal_init(&loop->uv, &loop->sigint);
  uv_unref((uv_handle_t *)&loop->sigint);
  loop->sigint.data = loop;
  loop->virtual_time = (uint8_t)vt;
  loop->debug = (uint8_t)dbg;
  loop->slow_callback_duration = 0.1;
  loop->lastpoll = loom__now(loop);
  return 1;
}

static int core_get_running_loop (lua_State *L) {
  loom_loop *loop = running_loop;
  if (loop == NULL || loop->self_ref == LUA_NOREF)
    return luaL_error(L, "get_running_loop: no running event loop");
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  return 1;
}

/* _get_running_loop(): the running loop or nil. */
static int core_get_running_loop_or_nil (lua_State *L) {
  loom_loop *loop = running_loop;
  if (loop == NULL || loop->self_ref == LUA_NOREF)
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->self_ref);
  return 1;
}

/* _counts(loop): numbers the specs use to find leaks. */
static int loop_counts (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, loop->nready);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, loop->nheap);
  lua_setfield(L, -2, "timers");
  lua_pushinteger(L, loop->maxslot - loop->nfree);
  lua_setfield(L, -2, "pins");
  lua_pushinteger(L, loop->tmax - loop->ntfree);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, loop->ncancelled);
  lua_setfield(L, -2, "cancelled_timers");
  {  /* what loom__anchor keeps (luaL_ref's free list holds integers) */
    lua_Integer n = 0;
    if (lua_getiuservalue(L, 1, LOOM_LUV_ANCHORS) == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        n += !lua_isinteger(L, -1);
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "anchors");
  }
  return 1;
}

/* One line of _handles() for each libuv handle of the loop that is not
** the loop's own. */
static void describe_walk (uv_handle_t *h, void *arg) {
  lua_State *L = (lua_State *)arg;
  loom_loop *loop = (loom_loop *)h->loop;  /* uv is the first member */
  uv_os_fd_t fd;
  if (h == (uv_handle_t *)&loop->wakeup || h == (uv_handle_t *)&loop->async
      || h == (uv_handle_t *)&loop->sigint || uv_is_closing(h))
    return;
  if (uv_fileno(h, &fd) == 0)
    lua_pushfstring(L, "%s fd %d%s", uv_handle_type_name(uv_handle_get_type(h)),
                    (int)fd, uv_is_active(h) ? "" : " (idle)");
  else
    lua_pushfstring(L, "%s%s", uv_handle_type_name(uv_handle_get_type(h)),
                    uv_is_active(h) ? "" : " (idle)");
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

/*
** loop:_handles(): what the loop holds, one line each, for the prompt's
** :handles: its timers (call_later handles and sleeping tasks, soonest
** first, with the time left) and its libuv handles (sockets, pipes,
** signals, polls, processes) with their descriptors.
*/
static int loop_handles (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  double now;
  int i;
  lua_settop(L, 1);
  lua_newtable(L);  /* 2 */
  if (loop->closed)
    return 1;
  now = loom__now(loop);
  lua_getiuservalue(L, 1, LOOM_LUV_PINS);  /* 3 */
  {
    /* the heap is ordered by deadline only at its root: sort a copy */
    int n = loop->nheap, j;
    loom_heapentry *e = (loom_heapentry *)lua_newuserdatauv(L,
                          sizeof(loom_heapentry) * (size_t)(n ? n : 1), 0);
    memcpy(e, loop->heap, sizeof(loom_heapentry) * (size_t)n);
    for (i = 1; i < n; i++) {  /* insertion sort: fine for a prompt */
      loom_heapentry x = e[i];
      for (j = i; j > 0 && e[j - 1].when > x.when; j--)
        e[j] = e[j - 1];
      e[j] = x;
    }
    for (i = 0; i < n; i++) {
      void *p;
      if (lua_rawgeti(L, 3, e[i].slot) == LUA_TNIL) {
        lua_pop(L, 1);
        continue;
      }
      if ((p = loom__testud(L, -1, LOOM_TTIMER)) != NULL) {
        if (((loom_obj *)p)->flags & LOOM_FCANCELLED) {
          lua_pop(L, 1);
          continue;
        }
        luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "timer in %f s: %s", e[i].when - now,
                        lua_tostring(L, -1));
      }
      else if ((p = loom__testud(L, -1, LOOM_TTASK)) != NULL) {
        luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "sleep in %f s: task %d %s", e[i].when - now,
                        (int)((loom_task *)p)->id, lua_tostring(L, -1));
      }
      else {
        lua_pop(L, 1);
        continue;
      }
      lua_rawseti(L, 2, (lua_Integer)lua_rawlen(L, 2) + 1);
      lua_pop(L, 2);
    }
    lua_pop(L, 1);  /* the copy */
  }
  lua_pop(L, 1);  /* pins */
  if (loop->uvinit)
    uv_walk(&loop->uv, describe_walk, L);
  return 1;
}

/* loop:_advance(seconds): moves a virtual clock forward; returns the new
** time. Timers it passes become due in the next iteration. */
static int loop_advance (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  lua_Number s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s >= 0, 2, "seconds must be >= 0");
  if (!loop->virtual_time)
    return luaL_error(L, "advance: the loop's clock is real (not "
                      "virtual_time)");
  loop->vnow += s;
  lua_pushnumber(L, loop->vnow);
  return 1;
}

/* loop:_next_deadline(): the time the next timer is due, or nil; and
** whether callbacks are ready now. */
static int loop_next_deadline (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  int i;
  lua_pushnil(L);
  for (i = 0; i < loop->nheap; i++) {
    lua_Number w = loop->heap[i].when;
    if (lua_isnil(L, -1) || w < lua_tonumber(L, -1)) {
      lua_pop(L, 1);
      lua_pushnumber(L, w);
    }
  }
  lua_pushboolean(L, loop->nready > 0);
  return 2;
}

/* loop:_record_next(fut): fut gets the list of the callbacks and task
** steps the next iteration that runs any runs, as tostring shows them. */
static int loop_record_next (lua_State *L) {
  loom_loop *loop = loom__checkloop(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  loom__loop_table(L, 1, &record_key, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "future");
  loop->recording = 1;
  return 0;
}

static const luaL_Reg loop_methods[] = {
  {"_handles", loop_handles},
  {"_advance", loop_advance},
  {"_next_deadline", loop_next_deadline},
  {"_record_next", loop_record_next},
  {"run_forever", loop_run_forever},
  {"run_until_complete", loop_run_until_complete},
  {"stop", loop_stop},
  {"is_running", loop_is_running},
  {"is_closed", loop_is_closed},
  {"close", loop_close},
  {"time", loop_time},
  {"call_soon", loop_call_soon},
  {"call_soon_threadsafe", loop_call_soon_threadsafe},
  {"call_later", loop_call_later},
  {"call_at", loop_call_at},
  {"create_future", loop_create_future},
  {"create_task", loop_create_task},
  {"set_task_factory", loop_set_task_factory},
  {"get_task_factory", loop_get_task_factory},
  {"set_exception_handler", loop_set_exception_handler},
  {"get_exception_handler", loop_get_exception_handler},
  {"call_exception_handler", loop_call_exception_handler},
  {"set_debug", loop_set_debug},
  {"get_debug", loop_get_debug},
  {"slow_callback_duration", loop_slow_callback_duration},
  {"_catch_sigint", loop_catch_sigint},
  {"_counts", loop_counts},
  {NULL, NULL}
};

static const luaL_Reg loop_metamethods[] = {
  {"__gc", loop_gc},
  {"__close", loop_gc},
  {"__tostring", loop_tostring},
  {NULL, NULL}
};

static const luaL_Reg loop_functions[] = {
  {"new_loop", core_new_loop},
  {"get_running_loop", core_get_running_loop},
  {"_get_running_loop", core_get_running_loop_or_nil},
  {NULL, NULL}
};

/*
** Pushes the table a part of the core keeps for the loop at loopidx: an
** entry, under the loop, of a registry table (found under key) whose keys
** are weak, so that callbacks kept there that capture the loop do not keep
** it alive. With create, makes what is missing; otherwise pushes nil when
** there is none. Returns whether a table was pushed. [-0, +1, m]
*/
int loom__loop_table (lua_State *L, int loopidx, const void *key, int create) {
  loopidx = lua_absindex(L, loopidx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TTABLE) {
    lua_pop(L, 1);
    if (!create) {
      lua_pushnil(L);
      return 0;
    }
    lua_createtable(L, 0, 1);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  }
  lua_pushvalue(L, loopidx);
  if (lua_rawget(L, -2) == LUA_TTABLE || !create) {
    lua_remove(L, -2);
    if (lua_istable(L, -1))
      return 1;
    lua_pop(L, 1);
    lua_pushnil(L);
    return 0;
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, loopidx);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
  return 1;
}

/*
** Drops the table loom__loop_table keeps under key for the loop at
** loopidx. Removing a key allocates nothing, so this is safe in __gc.
** [-0, +0, -]
*/
void loom__loop_table_drop (lua_State *L, int loopidx, const void *key) {
  loopidx = lua_absindex(L, loopidx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) {
    lua_pushvalue(L, loopidx);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

/*
** Anchors: what a libuv handle or request may call back for (a
** transport, a server, a future) is kept in a table of its loop, not in
** the registry, so that a loop dropped without close() while it still
** has them is collected with them (its __gc closes the handles). While
** the loop runs, which is the only time libuv calls back, the registry
** holds the table too (anchors_ref), for the callbacks.
*/

/* Anchors the value on top (popped) in the loop at loopidx; returns its
** ref. [-1, +0, m] */
int loom__anchor (lua_State *L, int loopidx) {
  int ref;
  loopidx = lua_absindex(L, loopidx);
  lua_getiuservalue(L, loopidx, LOOM_LUV_ANCHORS);
  if (!lua_istable(L, -1)) {  /* a closed loop: nothing will call back */
    lua_pop(L, 2);
    return LUA_NOREF;
  }
  lua_insert(L, -2);
  ref = luaL_ref(L, -2);
  lua_pop(L, 1);
  return ref;
}

/* Pushes what ref anchors in the loop, which runs (the caller made room
** for 2 values); nil if nothing. A hot path: every read callback comes
** here. [-0, +1, -] */
void loom__anchored (lua_State *L, loom_loop *loop, int ref) {
  if (lua_rawgeti(L, LUA_REGISTRYINDEX, loop->anchors_ref) == LUA_TTABLE) {
    lua_rawgeti(L, -1, ref);
    lua_replace(L, -2);
  }
}

/* Releases ref. On a loop that does not run, nothing: what ref anchors
** is then only let go with the loop. [-0, +0, -] */
void loom__unanchor (lua_State *L, loom_loop *loop, int ref) {
  if (ref >= 0 && L != NULL && loop != NULL && loop->anchors_ref != LUA_NOREF
      && lua_checkstack(L, 3)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, loop->anchors_ref);
    luaL_unref(L, -1, ref);
    lua_pop(L, 1);
  }
}

/*
** Adds the functions of l to the methods of the Loop type (for the files
** that extend the loop: dns.c, signal.c, poll.c). [-0, +0, m]
*/
void loom__loop_methods (lua_State *L, const luaL_Reg *l) {
  luaL_getmetatable(L, LOOM_LOOP_MT);
  lua_getfield(L, -1, "__index");
  loom__setfuncs(L, l);
  lua_pop(L, 2);
}

int loom__open_loop (lua_State *L) {
  loom__newmt(L, LOOM_TLOOP);
  loom__setfuncs(L, loop_metamethods);
  lua_newtable(L);
  loom__setfuncs(L, loop_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  loom__setfuncs(L, loop_functions);  /* into the module table */
  return 0;
}

/* }====================================================== */
