/*
** trace.c
** Tracing in Chrome's trace-event JSON (opens in Perfetto's UI): loop
** iterations with their poll time, each callback and task step run with
** its duration, each task's life from creation to its end, and work on
** libuv's thread pool. loom.trace.start(path) / stop(), or the
** executable's --trace FILE.
**
** Off, the hooks cost one test of a thread-local pointer. On, events are
** written as they happen through stdio's buffer, one JSON object a line.
*/

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef struct loom_trace {
  FILE *f;
  uint64_t t0;              /* uv_hrtime() at start */
  long nevents;
  int pid;
} loom_trace;

_Thread_local loom_trace *loom__trace;
static _Thread_local loom_trace trace_state;

static double usec (loom_trace *t, uint64_t now) {
  return (double)(now - t->t0) / 1e3;
}

/* Writes s as a JSON string body (without the quotes). */
static void jsonstr (FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
}

static void sep (loom_trace *t) {
  fputs(t->nevents++ > 0 ? ",\n" : "\n", t->f);
}

/* The thread-id lane of a loop: its tracing number. */
static unsigned lane (loom_loop *loop) {
  static _Thread_local unsigned next;
  if (loop->traceid == 0)
    loop->traceid = ++next;
  return loop->traceid;
}

/* A complete event ("X"): name, category, start, duration, one optional
** numeric argument. */
void loom__trace_span (loom_loop *loop, const char *cat, const char *name,
                       uint64_t start, uint64_t end, const char *argname,
                       double arg) {
  loom_trace *t = loom__trace;
  if (t == NULL)
    return;
  sep(t);
  fprintf(t->f, "{\"ph\":\"X\",\"cat\":\"%s\",\"name\":\"", cat);
  jsonstr(t->f, name);
  fprintf(t->f, "\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,\"tid\":%u",
          usec(t, start), (double)(end - start) / 1e3, t->pid, lane(loop));
  if (argname != NULL)
    fprintf(t->f, ",\"args\":{\"%s\":%.17g}", argname, arg);
  fputs("}", t->f);
}

/* An async event: begin (ph "b") or end ("e") of something with an id
** that outlives a callback (a task's life, thread-pool work). */
void loom__trace_async (loom_loop *loop, const char *cat, const char *name,
                        const void *id, int begin) {
  loom_trace *t = loom__trace;
  if (t == NULL)
    return;
  sep(t);
  fprintf(t->f, "{\"ph\":\"%s\",\"cat\":\"%s\",\"name\":\"", begin ? "b" : "e",
          cat);
  jsonstr(t->f, name);
  fprintf(t->f, "\",\"id\":\"%p\",\"ts\":%.3f,\"pid\":%d,\"tid\":%u}", id,
          usec(t, uv_hrtime()), t->pid, lane(loop));
}

/* trace_start(path): starts writing a trace to the file at path
** (replaced). Raises if tracing runs already or the file cannot be
** made. */
static int trace_start (lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  FILE *f;
  luaL_argcheck(L, strlen(path) == len, 1, "path contains a zero byte");
  if (loom__trace != NULL)
    return luaL_error(L, "trace.start: a trace is being written already");
  f = fopen(path, "w");
  if (f == NULL)
    return luaL_fileresult(L, 0, path);
  trace_state.f = f;
  trace_state.t0 = uv_hrtime();
  trace_state.nevents = 0;
  trace_state.pid = (int)getpid();
  fputs("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[", f);
  loom__trace = &trace_state;
  lua_pushboolean(L, 1);
  return 1;
}

/* trace_stop(): ends the trace and closes its file; returns the number of
** events written (nil when no trace was being written). */
static int trace_stop (lua_State *L) {
  loom_trace *t = loom__trace;
  int ok;
  if (t == NULL)
    return 0;
  loom__trace = NULL;
  fputs("\n]}\n", t->f);
  ok = fclose(t->f) == 0;
  t->f = NULL;
  if (!ok)
    return luaL_error(L, "trace.stop: the trace file could not be written");
  lua_pushinteger(L, t->nevents);
  return 1;
}

/* trace_active(): whether a trace is being written. */
static int trace_active (lua_State *L) {
  lua_pushboolean(L, loom__trace != NULL);
  return 1;
}

static const luaL_Reg trace_funcs[] = {
  {"_trace_start", trace_start},
  {"_trace_stop", trace_stop},
  {"_trace_active", trace_active},
  {NULL, NULL}
};

int loom__open_trace (lua_State *L) {
  luaL_setfuncs(L, trace_funcs, 0);
  return 0;
}
