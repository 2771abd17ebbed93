/*
** internal.h
** Private declarations shared by the files of the core (loom.core).
*/

#ifndef LOOM_INTERNAL_H
#define LOOM_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/*
** Without libuv's headers the build stops here, saying what to install:
** a luarocks build gets no other hint. The message is the name of a file
** that does not exist because a missing include is fatal, where #error
** would go on into a page of errors about undefined uv types.
*/
#if defined(__has_include)
#if !__has_include(<uv.h>)
#include "uv.h (libuv's headers) is missing: install libuv1-dev (Debian, Ubuntu), libuv-devel (Fedora), libuv-dev (Alpine) or libuv (Homebrew), or pass UV_DIR=prefix to luarocks"
#endif
#endif
#include <uv.h>

#include "lua.h"
#include "lauxlib.h"

#define LOOM_VERSION "0.1.0"

/* Metatable names (dotted, so luaL_typeerror messages read well). */
#define LOOM_LOOP_MT   "loom.Loop"
#define LOOM_HANDLE_MT "loom.Handle"
#define LOOM_TIMER_MT  "loom.TimerHandle"
#define LOOM_FUTURE_MT "loom.Future"
#define LOOM_TASK_MT   "loom.Task"
#define LOOM_GATHER_MT "loom.Gathering"
#define LOOM_CHANNEL_MT    "loom.Channel"
#define LOOM_REMOTELOOP_MT "loom.RemoteLoop"
#define LOOM_CFUTURE_MT    "loom.ConcurrentFuture"
#define LOOM_STREAMREADER_MT "loom.StreamReader"

/*
** The core's types. Each metatable is kept in the registry under its name
** (for luaL_checkudata users and messages) and travels as an upvalue of
** every core function, where type checks find it.
*/
enum { LOOM_TLOOP, LOOM_THANDLE, LOOM_TTIMER, LOOM_TFUTURE, LOOM_TFUTUREGC,
       LOOM_TTASK, LOOM_TGATHER, LOOM_TSTREAMREADER, LOOM_TCOUNT };

/*
** Every object that can sit in the ready queue or the timer heap starts
** with the same header, so the loop can tell what it popped without a
** metatable check.
*/
enum {
  LOOM_KHANDLE = 1,  /* call_soon handle */
  LOOM_KTIMER,       /* call_later / call_at handle */
  LOOM_KFUTURE,      /* future whose done callbacks are due */
  LOOM_KTASK         /* task: a step is due, or its done callbacks are */
};

/* Object flags. */
#define LOOM_FCANCELLED 0x01u  /* handle: cancel() was called */
#define LOOM_FINHEAP    0x02u  /* timer handle: still in the heap */

typedef struct loom_obj {
  uint8_t kind;
  uint8_t flags;
  uint16_t spare;
  int32_t n;      /* handles: number of callback arguments */
} loom_obj;

/* Future states. */
enum { LOOM_PENDING = 0, LOOM_FINISHED, LOOM_CANCELLED };

/* Future flags. */
#define LOOM_FERROR      0x01u  /* finished with an error value */
#define LOOM_FUNRETRIEVED 0x02u /* error not yet looked at by anybody */
#define LOOM_FMANYCB     0x04u  /* callback slot holds a list table */
#define LOOM_FSCHEDULED  0x08u  /* callbacks queued in the ready queue */
#define LOOM_FTASKCB     0x10u  /* the one callback is a task to wake */
#define LOOM_FGATHERCB   0x20u  /* the one callback is a gathering */

/* Kinds of done callback (loom__future_add_callback). */
enum { LOOM_CBLUA = 0, LOOM_CBTASK = 1, LOOM_CBGATHER = 2 };

/*
** User values of a future (and of a task, which extends it).
*/
enum {
  LOOM_FUV_VALUE = 1,  /* result, packed results, error value, or (plain
                          future) cancel message; a pending task's
                          coroutine */
  LOOM_FUV_CALLBACKS,  /* one callback, or a list table (LOOM_FMANYCB) */
  LOOM_FUV_LOOP,       /* the owning loop: keeps it alive */
  LOOM_FUV_EXTRA,      /* tasks only, made lazily: name, cancel message,
                          traceback */
  LOOM_FUV_FUTURE = LOOM_FUV_LOOP,  /* user values of a plain future */
  LOOM_FUV_TASK = LOOM_FUV_EXTRA    /* user values of a task */
};

struct loom_loop;

typedef struct loom_future {
  loom_obj h;
  uint8_t state;
  uint8_t fflags;
  uint16_t spare;
  int32_t nres;             /* number of result values when finished */
  struct loom_loop *loop;
} loom_future;

typedef struct loom_task {
  loom_future f;
  lua_State *co;            /* anchored by user value LOOM_FUV_VALUE */
  loom_future *waiter;      /* future being awaited (anchored by co) */
  uint64_t sleep_seq;       /* heap entry that wakes this task, or 0 */
  uint32_t id;
  int32_t ncancels;         /* cancel requests not yet uncancelled */
  unsigned must_cancel : 1;   /* cancel() arrived; raise at next step */
  unsigned throw_cancel : 1;  /* this step must raise CancelledError */
  unsigned started : 1;       /* the coroutine has been resumed once */
  unsigned body_failed : 1;   /* the body raised (error is on co's stack) */
  unsigned sleep_due : 1;     /* its sleep ended: step in the next
                                 iteration */
  unsigned hasctx : 1;        /* its extra table holds a context */
  uint32_t parent;          /* id of the task that created it, or 0 */
  int32_t wslot;            /* slot in the loop's weak task list, or 0 */
  int32_t nyield;           /* values the last yield left on co's stack */
} loom_task;

typedef struct loom_heapentry {
  double when;
  uint64_t seq;
  int32_t slot;             /* pin slot of the object */
} loom_heapentry;

/*
** User values of a loop.
*/
enum {
  LOOM_LUV_HANDLER = 1, /* exception handler or nil */
  LOOM_LUV_FACTORY,     /* task factory or nil */
  LOOM_LUV_SIGINT,      /* SIGINT callback or nil */
  LOOM_LUV_QUEUE0,      /* two tables that take turns: the ready queue */
  LOOM_LUV_QUEUE1,      /* (entries 1..nready) and the batch being run */
  LOOM_LUV_PINS,        /* table: slot -> object, anchors heap entries */
  LOOM_LUV_TASKS,       /* weak-valued table: slot -> pending task */
  LOOM_LUV_ANCHORS,     /* table: ref -> what libuv may call back for
                           (loom__anchor) */
  LOOM_LUV_COUNT = LOOM_LUV_ANCHORS
};

typedef struct loom_loop {
  uv_loop_t uv;
  uv_timer_t wakeup;        /* bounds a blocking poll by the next timer */
  uv_async_t async;         /* wakes a blocked poll from other threads */
  uv_signal_t sigint;       /* Ctrl-C for the executable */
  lua_State *L;             /* thread running the loop, while it runs */
  int self_ref;             /* registry ref to the loop, while it runs */
  int anchors_ref;          /* and to its LOOM_LUV_ANCHORS table */
  struct loom_task *current;
  /* The loop's tables are its user values, not registry entries: a loop
  ** that nobody references is collected with everything it holds. */
  int nready;
  int ncur, icur;           /* the batch being run: entries icur+1..ncur */
  int readyq;               /* which queue table is the ready queue */
  /* timer heap */
  loom_heapentry *heap;
  int nheap, heapcap;
  int ncancelled;           /* dead entries still in the heap */
  uint64_t seq;             /* tie-breaker for equal deadlines */
  int *freeslots;           /* free pin slots */
  int nfree, freecap, maxslot;
  /* weak task list slots */
  int *tfree;
  int ntfree, tfreecap, tmax;
  int ntasks_alive;
  /* clock */
  double vnow;              /* virtual time, when virtual */
  double lastpoll;
  int sincepoll;
  size_t sinkread;          /* bytes read into stream readers this poll
                               (stream.c) */
  uint32_t taskids;
  double slow_callback_duration;
  uint8_t virtual_time;     /* 1: jumps to the next timer when idle;
                               2: manual, moved only by _advance */
  uint8_t recording;        /* _record_next: the next batch is listed */
  uint8_t running;
  uint8_t stopping;
  uint8_t closed;
  uint8_t debug;
  uint8_t uvinit;           /* uv loop and handles initialised */
  uint8_t sigint_on;
  uint8_t inentry;          /* a batch entry is running */
  /* Loop-owned libuv resources of dns.c, signal.c and poll.c: each file
  ** keeps its state here and frees it in its shutdown hook. */
  void *dns_state;
  void *signal_state;
  void *poll_state;
  void *udp_state;
  void *fs_state;           /* fs.c: requests in flight */
  void *thread_state;       /* thread.c: the loop's port, made lazily */
  int nsignals;             /* signal handles watching (they are unref'd,
                               so uv_loop_alive does not count them) */
  uint32_t traceid;         /* its lane in a trace (trace.c), 0: none yet */
} loom_loop;

/*
** core.c. Every C function the core gives to Lua carries the metatables
** of the core types as upvalues 1..LOOM_TCOUNT (loom__setfuncs,
** loom__pushcfunction), so type checks and new objects need no registry
** look-up. The functions below work only inside such a function, or in
** C code called from one.
*/
#define loom__mtindex(type) lua_upvalueindex((type) + 1)
#define loom__setmt(L, type) \
  (lua_pushvalue(L, loom__mtindex(type)), lua_setmetatable(L, -2))
void loom__newmt(lua_State *L, int type);
void loom__setfuncs(lua_State *L, const luaL_Reg *l);
void loom__pushcfunction(lua_State *L, lua_CFunction f);
void *loom__testud(lua_State *L, int idx, int type);
void *loom__checkud(lua_State *L, int idx, int type);
void loom__checkprotocol(lua_State *L, int idx);
void loom__checkkeys(lua_State *L, int idx, int arg, const char *what,
                     const char *const names[]);

/* repl.c: the executable's line editor (package "loom.editline") */
int loom__open_editline(lua_State *L);

/* alloc.c: the executable's allocator */
typedef struct loom_alloc loom_alloc;
loom_alloc *loom__alloc_new(void);
lua_Alloc loom__alloc_f(void);
void loom__alloc_free(loom_alloc *a);

/* loop.c */
loom_loop *loom__checkloop(lua_State *L, int idx);
loom_loop *loom__checkopen(lua_State *L, int idx, const char *fname);
loom_loop *loom__running(void);
double loom__now(loom_loop *loop);
void loom__ready_push(lua_State *L, loom_loop *loop, int loopidx, int idx);
void loom__heap_push(lua_State *L, loom_loop *loop, int loopidx, int idx,
                     double when, uint64_t *seq);
void loom__heap_cancelled(loom_loop *loop);
int loom__report(lua_State *L, int loopidx, int ctxidx);
int loom__traceback(lua_State *L);
int loom__open_loop(lua_State *L);

/* handle.c */
int loom__newhandle(lua_State *L, loom_loop *loop, int kind, int fidx,
                    int nargs, double when);
void loom__run_handle(lua_State *L, loom_obj *h, int idx);
int loom__open_handle(lua_State *L);

/* future.c */
extern const luaL_Reg loom__future_methods[];
loom_future *loom__tofuture(lua_State *L, int idx);
loom_future *loom__checkfuture(lua_State *L, int idx);
void loom__future_init(lua_State *L, loom_future *f, loom_loop *loop,
                       int loopidx, int kind);
int loom__future_new(lua_State *L, loom_loop *loop, int loopidx);
void loom__future_schedule(lua_State *L, loom_future *f, int idx);
void loom__future_run_callbacks(lua_State *L, loom_future *f, int idx,
                                int loopidx);
int loom__future_push_results(lua_State *L, loom_future *f, int idx);
int loom__future_cancel(lua_State *L, loom_future *f, int idx, int msgidx);
int loom__future_rearm(lua_State *L, loom_future *f, int idx);
void loom__future_add_callback(lua_State *L, loom_future *f, int idx,
                               int cbidx, int kind);
void loom__push_first_result(lua_State *L, loom_future *f, int idx);
void loom__push_cancelled_of(lua_State *L, loom_future *f, int idx);
int loom__future_remove_callback(lua_State *L, loom_future *f, int idx,
                                 int cbidx);
void loom__push_error(lua_State *L, const char *cls, const char *msg);
void loom__push_oserror(lua_State *L, int err, const char *what);
void loom__push_cancelled(lua_State *L, int msgidx);
int loom__is_cancelled_error(lua_State *L, int idx);
void loom__extra(lua_State *L, int idx);
int loom__open_future(lua_State *L);

/*
** dns.c, signal.c, poll.c, udp.c, stream.c, tcp.c, pipe.c. Each opens its functions into
** the module table and its loop methods into the Loop type; its shutdown
** hook, called by close() and __gc before the loop closes its libuv
** handles, closes what it owns (freeing memory in the close callbacks,
** which the loop then runs) and releases its Lua references. libuv
** callbacks call Lua only while the loop runs: protocol methods under a
** protected call, anything else by queueing a callback on the ready queue.
*/
int loom__open_dns(lua_State *L);
int loom__open_signal(lua_State *L);
int loom__open_poll(lua_State *L);
int loom__open_udp(lua_State *L);
int loom__open_stream(lua_State *L);
int loom__open_tcp(lua_State *L);
int loom__open_pipe(lua_State *L);
int loom__open_socket(lua_State *L);
int loom__open_streambuf(lua_State *L);
void loom__stream_shutdown(lua_State *L, loom_loop *loop, int loopidx);
void loom__udp_shutdown(lua_State *L, loom_loop *loop, int loopidx);
void loom__dns_shutdown(lua_State *L, loom_loop *loop, int loopidx);
void loom__signal_shutdown(lua_State *L, loom_loop *loop, int loopidx);
void loom__poll_shutdown(lua_State *L, loom_loop *loop, int loopidx);
int loom__open_fs(lua_State *L);
void loom__fs_shutdown(lua_State *L, loom_loop *loop, int loopidx);
void loom__loop_methods(lua_State *L, const luaL_Reg *l);
void loom__pushaddr(lua_State *L, const struct sockaddr *sa);
void loom__push_transport_socket(lua_State *L, int tidx);
int loom__loop_table(lua_State *L, int loopidx, const void *key, int create);
void loom__loop_table_drop(lua_State *L, int loopidx, const void *key);
int loom__anchor(lua_State *L, int loopidx);
void loom__anchored(lua_State *L, loom_loop *loop, int ref);
void loom__unanchor(lua_State *L, loom_loop *loop, int ref);

/* trace.c: off when loom__trace is NULL (one test per hook) */
typedef struct loom_trace loom_trace;
extern _Thread_local loom_trace *loom__trace;
void loom__trace_span(loom_loop *loop, const char *cat, const char *name,
                      uint64_t start, uint64_t end, const char *argname,
                      double arg);
void loom__trace_async(loom_loop *loop, const char *cat, const char *name,
                       const void *id, int begin);
int loom__open_trace(lua_State *L);

/* signal.c: a signal number or name at idx, checked for fname */
int loom__signal_check(lua_State *L, int idx, const char *fname, int argno);

/* process.c */
int loom__open_process(lua_State *L);
void loom__process_shutdown(lua_State *L, loom_loop *loop, int loopidx);

/* gather.c */
void loom__gather_done(lua_State *L, int gidx, loom_future *f, int fidx);
int loom__open_gather(lua_State *L);

/* task.c */
loom_task *loom__totask(lua_State *L, int idx);
void loom__task_step(lua_State *L, loom_task *t, int idx, int loopidx);
void loom__task_wakeup(lua_State *L, loom_task *t, int idx, int loopidx);
void loom__task_wake(lua_State *L, loom_task *t, loom_future *f, int idx,
                     int loopidx);
int loom__task_cancel(lua_State *L, loom_task *t, int idx, int msgidx);
int loom__await_yield(lua_State *L, int fidx, lua_KContext ctx,
                      lua_KFunction k);
int loom__await_resumed(lua_State *co, int fidx);
int loom__task_new(lua_State *L, loom_loop *loop, int loopidx, int fidx,
                   int nargs);
int loom__open_task(lua_State *L);

/*
** copy.c: objects shared between threads and values copied between Lua
** states. A shared object is reference counted (atomically) and lives in
** C memory; each Lua state sees it through a box, a userdata holding one
** reference, whose metatable says the kind. Boxes copy to other threads
** as the same object.
*/
enum { LOOM_SHCHANNEL = 1, LOOM_SHPORT, LOOM_SHCFUT, LOOM_SHCOUNT };

typedef struct loom_shared {
  atomic_int refs;
  int kind;
  void (*destroy)(struct loom_shared *s);  /* called by the last release */
} loom_shared;

void loom__shared_init(loom_shared *s, int kind,
                       void (*destroy)(loom_shared *s));
void loom__shared_retain(loom_shared *s);
void loom__shared_release(loom_shared *s);
void loom__shared_push(lua_State *L, loom_shared *s);
loom_shared *loom__shared_test(lua_State *L, int idx, int kind);

/*
** Where copied values come from, for the error that names one that
** cannot be copied. Arguments: value i is argument #(arg + i), except
** that with fnarg > 0 value 0 is argument #fnarg and value i > 0 is
** argument #(arg + i - 1); luaL_argerror then names the function. With
** arg == 0 the values are named prefix..(i + 1), e.g. "result #1".
*/
typedef struct loom_copywhere {
  int arg;
  int fnarg;
  const char *prefix;
} loom_copywhere;

typedef struct loom_blob loom_blob;
loom_blob *loom__copy_encode(lua_State *L, int first, int n,
                             const loom_copywhere *where);
int loom__copy_decode(lua_State *L, const loom_blob *b);
int loom__copy_take(lua_State *L, loom_blob *b);
loom_blob **loom__blob_box(lua_State *L);
loom_blob *loom__blob_new(void);
void loom__blob_free(loom_blob *b);
int loom__blob_count(const loom_blob *b);
int loom__open_copy(lua_State *L);

/*
** thread.c. A message goes to a loop from any thread through the loop's
** port (a uv_async_t and a locked queue). loom__wait_new makes the kind
** that wakes a task: it pushes a new future of the running loop, which
** the message completes (with no values) once posted; the owner (a
** channel, here) keeps it in a list under its own lock, with 'linked'
** set, until it posts it. Cancelling the future takes it back from the
** owner through loom__channel_unlink.
*/
typedef struct loom_msg {
  struct loom_msg *next;    /* in the owner's list, then the port's queue */
  struct loom_port *port;   /* retained */
  loom_shared *owner;       /* retained: what the message waits on */
  loom_blob *blob;
  int kind;
  int linked;               /* in the owner's list (owner's lock) */
} loom_msg;

loom_shared *loom__loop_port(lua_State *L, int loopidx);
loom_msg *loom__wait_new(lua_State *L, loom_shared *owner);
void loom__msg_post(loom_msg *m);
void loom__msg_free(loom_msg *m);
int loom__in_task(lua_State *L);
int loom__interrupted(void);
void loom__set_statehooks(lua_State *(*newstate)(void),
                          void (*closestate)(lua_State *L));
void loom__thread_shutdown(lua_State *L, loom_loop *loop, int loopidx);
int loom__open_thread(lua_State *L);

/* channel.c */
int loom__channel_unlink(loom_shared *ch, loom_msg *m);
int loom__open_channel(lua_State *L);

/* tls.c: contexts and the TLS layer over stream transports */
int loom__open_tls(lua_State *L);

/* buffer.c: loom.Buffer, a fixed-size byte buffer (bytes in the
** userdata); range gives the bytes i..j (arguments at iidx, iidx + 1,
** string.sub's rules) of p[0..len); bufroom checks what a buffered
** protocol's get_buffer returned */
#define LOOM_BUFFER_MT "loom.Buffer"
typedef struct loom_buffer {
  size_t size;
  char data[];
} loom_buffer;
loom_buffer *loom__testbuffer(lua_State *L, int idx);
const char *loom__range(lua_State *L, int iidx, const char *p, size_t len,
                        size_t *n);
void loom__bufroom(lua_State *L, int bidx);
int loom__open_buffer(lua_State *L);

/* Private keys in the registry. */
extern const char loom__errors_key;   /* table of error classes */
extern const char loom__rootctx_key;  /* context outside any task */

#endif
