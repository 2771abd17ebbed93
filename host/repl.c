/*
** repl.c
** The line editor of the executable's prompt. libedit's readline() runs
** in a thread of its own, blocking on the terminal as it was made to;
** each line it reads reaches the loop through a uv_async_t, so the loop
** keeps running while the user types (lua/loom/repl.lua runs the
** entries). Output of the loop while a line is being edited is written
** above it and the line is drawn again. Only the executable links
** libedit; the module has no prompt.
*/

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "internal.h"

/*
** The reader thread and the loop share this, under mu: the loop asks for
** a line (want, prompt); the thread sets editing while inside readline(),
** then leaves the line (NULL at end of input) in line, sets ready and
** wakes the loop.
*/
typedef struct editor {
  uv_async_t async;         /* first: the close callback frees the editor */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  loom_loop *loop;
  lua_State *mainL;
  int cbref;                /* the Lua function each line is given to */
  char *prompt;             /* for the next readline() */
  char *line;               /* the line read */
  int want;                 /* the loop asked for a line */
  int ready;                /* a line (or the end) waits for the loop */
  int editing;              /* the thread is inside readline() */
  int eof;                  /* the end of input was read: thread gone */
  int quit;                 /* the loop is done with the editor */
  int discard;              /* the line was ended by Ctrl-C: drop it */
  int wake[2];              /* a pipe: the loop interrupts the editing */
} editor;

static editor *ed;          /* one prompt per process */
static editor *keyed;       /* the editor getkey serves (the thread's) */

/*
** libedit reads each key through this: one byte from the terminal with
** read(2) (no stdio buffer between the keys and libedit), unless the
** loop writes to the wake pipe (Ctrl-C at the prompt): then the line
** ends here, to be dropped.
*/
static int getkey (FILE *f) {
  editor *e = keyed;
  struct pollfd p[2];
  p[0].fd = fileno(f);
  p[0].events = POLLIN;
  p[1].fd = e != NULL ? e->wake[0] : -1;  /* poll ignores a negative fd */
  p[1].events = POLLIN;
  for (;;) {
    unsigned char c;
    ssize_t n;
    p[0].revents = p[1].revents = 0;
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR)
        continue;
      return EOF;
    }
    if (p[1].revents & POLLIN) {
      char buf[16];
      while (read(e->wake[0], buf, sizeof buf) > 0)
        ;
      pthread_mutex_lock(&e->mu);
      e->discard = 1;
      pthread_mutex_unlock(&e->mu);
      fputs("^C", stdout);
      fflush(stdout);
      return '\n';
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      n = read(p[0].fd, &c, 1);
      if (n == 1)
        return c;
      if (n == 0)
        return EOF;
      if (errno != EINTR && errno != EAGAIN)
        return EOF;
    }
  }
}

static void *reader (void *arg) {
  editor *e = (editor *)arg;
  sigset_t all;
  sigfillset(&all);  /* signals are the loop's (Ctrl-C goes to its task) */
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  pthread_mutex_lock(&e->mu);
  for (;;) {
    char *line, *prompt;
    while (!e->want && !e->quit)
      pthread_cond_wait(&e->cv, &e->mu);
    if (e->quit)
      break;
    e->want = 0;
    prompt = e->prompt;
    e->prompt = NULL;
    e->editing = 1;
    pthread_mutex_unlock(&e->mu);
    line = readline(prompt != NULL ? prompt : "> ");
    free(prompt);
    pthread_mutex_lock(&e->mu);
    e->editing = 0;
    if (e->discard && line != NULL) {  /* Ctrl-C: an empty event */
      free(line);
      line = NULL;
      e->line = NULL;
      e->ready = 2;
      e->discard = 0;
      uv_async_send(&e->async);
      continue;
    }
    e->line = line;
    e->ready = 1;
    if (line == NULL)
      e->eof = 1;
    uv_async_send(&e->async);
    if (line == NULL)
      break;
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/* deliver(on_line, line, dropped): on_line(the line as a string; nil
** for a line dropped by Ctrl-C; false at the end of input). Runs
** protected: it allocates. */
static int deliver (lua_State *L) {
  const char *line = (const char *)lua_touserdata(L, 2);
  int dropped = lua_toboolean(L, 3);
  lua_settop(L, 1);
  if (line != NULL)
    lua_pushstring(L, line);
  else if (dropped)
    lua_pushnil(L);
  else
    lua_pushboolean(L, 0);
  lua_call(L, 1, 0);
  return 0;
}

/* A line is ready: on_line(line) (false at end of input), protected. */
static void async_cb (uv_async_t *a) {
  editor *e = (editor *)a;
  lua_State *L = e->loop->L;
  char *line;
  int ready, top, status;
  pthread_mutex_lock(&e->mu);
  ready = e->ready;
  line = e->line;
  e->ready = 0;
  e->line = NULL;
  pthread_mutex_unlock(&e->mu);
  if (!ready || L == NULL || e->loop->closed || !lua_checkstack(L, 4)) {
    free(line);
    return;
  }
  top = lua_gettop(L);
  lua_pushcfunction(L, loom__traceback);
  lua_pushcfunction(L, deliver);
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->cbref);
  lua_pushlightuserdata(L, line);
  lua_pushboolean(L, ready == 2);
  status = lua_pcall(L, 3, 0, top + 1);
  free(line);
  if (status != LUA_OK) {
    fprintf(stderr, "loom: prompt: %s\n", lua_tostring(L, -1));
    fflush(stderr);
  }
  lua_settop(L, top);
}

static void close_cb (uv_handle_t *h) {
  free(h);
}

static const char *checkstr (lua_State *L, int idx, const char *what) {
  size_t len;
  const char *s = luaL_checklstring(L, idx, &len);
  if (strlen(s) != len)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s contains a zero byte",
                                          what));
  return s;
}

/* _start(loop, on_line): starts the reader thread on the running loop. */
static int repl_start (lua_State *L) {
  loom_loop *loop = (loom_loop *)luaL_checkudata(L, 1, LOOM_LOOP_MT);
  editor *e;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (ed != NULL)
    return luaL_error(L, "_start: the prompt runs already");
  if (!loop->uvinit || loop->closed)
    return luaL_error(L, "_start: the loop does not run");
  e = (editor *)calloc(1, sizeof *e);
  if (e == NULL)
    return luaL_error(L, "_start: not enough memory");
  if (uv_async_init(&loop->uv, &e->async, async_cb) < 0) {
    free(e);
    return luaL_error(L, "_start: cannot make an async handle");
  }
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  e->loop = loop;
  lua_pushvalue(L, 2);
  e->cbref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  e->mainL = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (pipe2(e->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, e->cbref);
    uv_close((uv_handle_t *)&e->async, close_cb);
    return luaL_error(L, "_start: cannot make a pipe");
  }
  ed = keyed = e;
  if (pthread_create(&e->thread, NULL, reader, e) != 0) {
    ed = keyed = NULL;
    close(e->wake[0]);
    close(e->wake[1]);
    luaL_unref(L, LUA_REGISTRYINDEX, e->cbref);
    uv_close((uv_handle_t *)&e->async, close_cb);
    return luaL_error(L, "_start: cannot start a thread");
  }
  return 0;
}

/* _read(prompt): asks for the next line, edited after prompt. */
static int repl_read (lua_State *L) {
  const char *p = checkstr(L, 1, "prompt");
  char *copy;
  if (ed == NULL || ed->eof)
    return 0;
  copy = strdup(p);
  if (copy == NULL)
    return luaL_error(L, "_read: not enough memory");
  pthread_mutex_lock(&ed->mu);
  free(ed->prompt);
  ed->prompt = copy;
  ed->want = 1;
  pthread_cond_signal(&ed->cv);
  pthread_mutex_unlock(&ed->mu);
  return 0;
}

/*
** _write_above(text): writes text; while a line is being edited, on its
** own lines above it, the prompt and the line drawn again after it, so
** that output of the loop does not garble what is typed. stdout stays
** locked meanwhile: the reader thread may be drawing a prompt just then
** (libedit writes through stdio), and its "> " must not land between the
** erase and the text.
*/
static int repl_write_above (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int editing = 0;
  if (ed != NULL) {
    pthread_mutex_lock(&ed->mu);
    editing = ed->editing;
  }
  flockfile(stdout);
  if (editing)
    fputs("\r\033[K", stdout);  /* to the start of the line, erase it */
  fwrite(s, 1, len, stdout);
  if (editing && len > 0 && s[len - 1] != '\n')
    fputc('\n', stdout);
  fflush(stdout);
  if (editing)
    rl_forced_update_display();
  funlockfile(stdout);
  if (ed != NULL)
    pthread_mutex_unlock(&ed->mu);
  return 0;
}

/* _clear_line(): Ctrl-C at the prompt: ends the line being typed, which
** is dropped (on_line gets nil). Returns whether a line was being
** edited. */
static int repl_clear_line (lua_State *L) {
  int editing = 0;
  if (ed != NULL) {
    pthread_mutex_lock(&ed->mu);
    editing = ed->editing;
    pthread_mutex_unlock(&ed->mu);
    if (editing && write(ed->wake[1], "c", 1) < 0)
      editing = 0;
  }
  lua_pushboolean(L, editing);
  return 1;
}

/*
** _stop(): the loop is done with the prompt. After the end of input the
** thread is joined; while it still waits in readline() (the prompt left
** another way) it is left to the process's exit.
*/
static int repl_stop (lua_State *L) {
  editor *e = ed;
  int eof;
  if (e == NULL)
    return 0;
  ed = NULL;
  pthread_mutex_lock(&e->mu);
  e->quit = 1;
  eof = e->eof || !e->editing;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  luaL_unref(L, LUA_REGISTRYINDEX, e->cbref);
  if (eof) {
    pthread_join(e->thread, NULL);
    keyed = NULL;
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    close(e->wake[0]);
    close(e->wake[1]);
    free(e->prompt);
    free(e->line);
    uv_close((uv_handle_t *)&e->async, close_cb);
  }
  else {
    pthread_detach(e->thread);
    rl_deprep_terminal();
  }
  return 0;
}

/* _add_history(line) */
static int repl_add_history (lua_State *L) {
  const char *line = checkstr(L, 1, "line");
  if (line[0] != '\0')
    add_history(line);
  return 0;
}

/* _read_history(path), _write_history(path): true, or false when the
** file could not be read or written. */
static int repl_read_history (lua_State *L) {
  lua_pushboolean(L, read_history(checkstr(L, 1, "path")) == 0);
  return 1;
}

static int repl_write_history (lua_State *L) {
  lua_pushboolean(L, write_history(checkstr(L, 1, "path")) == 0);
  return 1;
}

static const luaL_Reg repl_funcs[] = {
  {"_start", repl_start},
  {"_read", repl_read},
  {"_write_above", repl_write_above},
  {"_clear_line", repl_clear_line},
  {"_stop", repl_stop},
  {"_add_history", repl_add_history},
  {"_read_history", repl_read_history},
  {"_write_history", repl_write_history},
  {NULL, NULL}
};

/* The table of the functions above: package.preload["loom.editline"]. */
int loom__open_editline (lua_State *L) {
  /* before anything makes libedit initialise itself (reading the history
  ** does), which is when it takes these */
  rl_catch_signals = 0;
  rl_getc_function = getkey;
  luaL_newlib(L, repl_funcs);
  return 1;
}
