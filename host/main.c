/*
** main.c
** The loom executable: a lua.c-shaped interpreter whose chunks run as the
** main task of an event loop.
**
** Usage: loom [options] [script [args]]. The options, the 'arg' table and
** the prompt follow lua.c. The difference is how a chunk runs: main.c loads
** it, then hands it to require("loom")._main(opts, chunk, ...), which runs
** it as the main task of a fresh loop, prints any uncaught error itself and
** returns the exit status. With --plain a chunk runs as in lua.c instead.
**
** Nothing here calls exit(): every path returns a status up to main(),
** which closes the state, so leak checkers see a clean exit.
*/

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>
#include <uv.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "internal.h"  /* LOOM_VERSION, loom__open_editline */

#define LOOM_PROGNAME "loom"
#define LOOM_PROMPT   "> "
#define LOOM_PROMPT2  ">> "
#define LOOM_EOFMARK  "<eof>"   /* end of an incomplete chunk's syntax error */
#define LOOM_IGMARK   "-"       /* '-l mod-v2' sets global 'mod' (lua.c) */

/*
** The Lua sources of loom, generated into build/gen/embedded.c by
** scripts/embed.lua, which declares the same struct. The array ends with a
** NULL name.
*/
struct loom_embedded {
  const char *name;       /* module name, e.g. "loom.foo" */
  const char *chunkname;  /* e.g. "@lua/loom/foo.lua" */
  const unsigned char *src;
  size_t len;
};

extern const struct loom_embedded loom_embedded[];

int luaopen_loom_core(lua_State *L);

/* What collectargs() found on the command line. */
struct options {
  int script;       /* argv index of the script, 0 if none */
  int has_e;        /* at least one -e */
  int interactive;  /* -i */
  int version;      /* -v (or -i) */
  int plain;        /* --plain: chunks run as plain Lua, no loop */
  int debug;        /* --debug: loop debug mode for the main task */
  int signal_dump;  /* --signal-dump: SIGUSR1 prints the task tree */
  const char *trace;  /* --trace FILE: a trace of the loop into FILE */
  int virtual_time; /* --virtual-time: the main loop's clock is virtual */
};

/* Error messages in interactive mode carry no program name (lua.c). */
static const char *progname = LOOM_PROGNAME;


/*
** {======================================================
** Messages and protected calls
** =======================================================
*/

static void l_message(const char *pname, const char *msg) {
  if (pname != NULL)
    fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/*
** Print the error message on top of the stack, if status is an error, and
** pop it. Returns status. [-(0|1), +0, -]
*/
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    l_message(progname, msg != NULL ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

/*
** Message handler: add a traceback to the error. Unlike lua.c, an error
** object with a __tostring (loom's error values, e.g. "ECONNREFUSED: ...")
** gets a traceback too: those come from the environment, and the traceback
** is what says where the program was waiting. [-0, +1, m]
*/
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/*
** Call the function below its narg arguments with msghandler, like lua.c's
** docall but with no SIGINT handler: in loop mode Ctrl-C belongs to the
** loop's uv_signal_t, and --plain keeps the default action (libuv restores
** SIG_DFL, not ours, when a loop stops watching SIGINT, so the two would
** fight). [-(narg+1), +(nres|1), -]
*/
static int docall(lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;  /* function index */
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);  /* put it under function and args */
  status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);  /* remove message handler */
  return status;
}

/*
** Push require("loom")[field]. Returns 1 if it is a function; otherwise
** pushes an error message instead and returns 0. [-0, +1, e]
*/
static int getloomfield(lua_State *L, const char *field) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom");
  if (docall(L, 1, 1) != LUA_OK)
    return 0;
  lua_getfield(L, -1, field);
  lua_remove(L, -2);  /* remove the module */
  if (lua_type(L, -1) == LUA_TFUNCTION)
    return 1;
  lua_pop(L, 1);
  lua_pushfstring(L, "loom.%s is not a function", field);
  return 0;
}

static void print_version(void) {
  printf("%s %s (%s, libuv %s)\n", LOOM_PROGNAME, LOOM_VERSION, LUA_RELEASE,
         uv_version_string());
  fflush(stdout);
}

static void print_usage(const char *badoption) {
  fprintf(stderr, "%s: ", LOOM_PROGNAME);
  if ((badoption[1] == 'e' || badoption[1] == 'l') && badoption[2] == '\0')
    fprintf(stderr, "'%s' needs argument\n", badoption);
  else
    fprintf(stderr, "unrecognized option '%s'\n", badoption);
  fprintf(stderr,
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  --debug   run the main task with the loop in debug mode\n"
    "  --signal-dump  SIGUSR1 prints the task tree to stderr\n"
    "  --trace FILE   write a trace of the loop (Chrome trace-event JSON)\n"
    "  --virtual-time the main loop runs on virtual time (the prompt's\n"
    "                 clock moves only with :advance and :step)\n"
    "  --plain   run chunks as plain Lua: no main task, no loop\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n",
    LOOM_PROGNAME);
  fflush(stderr);
}

/* }====================================================== */


/*
** {======================================================
** Embedded modules
** =======================================================
*/

/*
** package.preload loader for one embedded module (upvalue 1: its
** struct loom_embedded). Like the standard file searcher, it compiles the
** source (text only) and calls it with the module name and file name.
** Raises on a syntax error. [-0, +1, e]
*/
static int loadembedded(lua_State *L) {
  const struct loom_embedded *e = lua_touserdata(L, lua_upvalueindex(1));
  const char *name = luaL_checkstring(L, 1);
  if (luaL_loadbufferx(L, (const char *)e->src, e->len, e->chunkname, "t")
      != LUA_OK)
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                      name, e->chunkname + 1, lua_tostring(L, -1));
  lua_pushstring(L, name);
  lua_pushstring(L, e->chunkname + 1);  /* file name, without the '@' */
  lua_call(L, 2, 1);
  return 1;
}

/*
** Register loom.core and the embedded modules in package.preload, so they
** win over anything on LUA_PATH. [-0, +0, m]
*/
static void preloadloom(lua_State *L) {
  const struct loom_embedded *e;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_loom_core);
  lua_setfield(L, -2, "loom.core");
  lua_pushcfunction(L, loom__open_editline);
  lua_setfield(L, -2, "loom.editline");
  for (e = loom_embedded; e->name != NULL; e++) {
    lua_pushlightuserdata(L, (void *)e);
    lua_pushcclosure(L, loadembedded, 1);
    lua_setfield(L, -2, e->name);
  }
  lua_pop(L, 1);  /* preload table */
}

/*
** Preload loom's modules, then set the global 'loom' to require "loom".
** Returns a status; on error the message is on the stack. [-0, +(0|1), e]
*/
static int openloom(lua_State *L) {
  int status;
  preloadloom(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom");
  status = docall(L, 1, 1);
  if (status == LUA_OK)
    lua_setglobal(L, "loom");
  return status;
}

/* }====================================================== */


/*
** {======================================================
** Running chunks
** =======================================================
*/

/*
** Run the loaded chunk below its narg arguments and return an exit status.
** In loop mode it calls require("loom")._main({debug=, signal_dump=},
** chunk, ...), which
** reports errors itself and returns the status. With --plain the chunk is
** called directly and an error is reported here (status 1).
** [-(narg+1), +0, e]
*/
static int runchunk(lua_State *L, const struct options *o, int narg) {
  int base = lua_gettop(L) - narg;  /* chunk index */
  int status, isnum;
  lua_Integer result;
  if (o->plain)
    return report(L, docall(L, narg, 0)) == LUA_OK ? EXIT_SUCCESS
                                                    : EXIT_FAILURE;
  luaL_checkstack(L, 3, "too many arguments to script");
  if (!getloomfield(L, "_main")) {
    report(L, LUA_ERRRUN);
    lua_settop(L, base - 1);
    return EXIT_FAILURE;
  }
  lua_insert(L, base);  /* _main below the chunk */
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, o->debug);
  lua_setfield(L, -2, "debug");
  lua_pushboolean(L, o->signal_dump);
  lua_setfield(L, -2, "signal_dump");
  lua_pushboolean(L, o->virtual_time);
  lua_setfield(L, -2, "virtual_time");
  if (o->trace != NULL) {
    lua_pushstring(L, o->trace);
    lua_setfield(L, -2, "trace");
  }
  lua_insert(L, base + 1);  /* opts between _main and the chunk */
  status = docall(L, narg + 2, 1);
  if (status != LUA_OK) {  /* _main itself failed */
    report(L, status);
    return EXIT_FAILURE;
  }
  result = lua_tointegerx(L, -1, &isnum);
  lua_pop(L, 1);
  if (!isnum) {
    l_message(progname, "loom._main returned no exit status");
    return EXIT_FAILURE;
  }
  return (int)result;
}

/* Load and run a -e string. */
static int dostring(lua_State *L, const struct options *o, const char *s) {
  if (report(L, luaL_loadbuffer(L, s, strlen(s), "=(command line)")))
    return EXIT_FAILURE;
  return runchunk(L, o, 0);
}

/*
** -l spec: 'mod' sets global 'mod' (up to a '-': 'mod-v2' sets 'mod'),
** 'g=mod' sets global 'g'. Runs outside any loop, as plain require.
*/
static int dolibrary(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  const char *modname = (eq != NULL) ? eq + 1 : spec;
  size_t glen = (eq != NULL) ? (size_t)(eq - spec)
                             : strcspn(spec, LOOM_IGMARK);
  lua_pushlstring(L, spec, glen);  /* global name */
  lua_getglobal(L, "require");
  lua_pushstring(L, modname);
  if (report(L, docall(L, 1, 1)) != LUA_OK) {
    lua_pop(L, 1);  /* global name */
    return EXIT_FAILURE;
  }
  lua_setglobal(L, lua_tostring(L, -2));  /* global = require(modname) */
  lua_pop(L, 1);  /* global name */
  return EXIT_SUCCESS;
}

/*
** Push arg[1..n] for the script; returns n. Raises if 'arg' is not a
** table, as lua.c does. [-0, +n, e]
*/
static int pushargs(lua_State *L) {
  int i, n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE)
    luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++)
    lua_rawgeti(L, -i, i);
  lua_remove(L, -i);  /* remove 'arg' */
  return n;
}

/* Load and run the script argv[0] ("-" is stdin unless after "--"). */
static int doscript(lua_State *L, const struct options *o, char **argv) {
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0)
    fname = NULL;  /* stdin */
  if (report(L, luaL_loadfile(L, fname)))
    return EXIT_FAILURE;
  return runchunk(L, o, pushargs(L));
}

/* }====================================================== */


/*
** {======================================================
** Interactive prompt
** =======================================================
** Minimal for now: reading blocks the loop between entries. Each entry
** runs through loom._repl_eval(fn), which runs fn as a task on the
** prompt's one loop; without it, fn is called plainly.
*/

/*
** Push the prompt: _PROMPT/_PROMPT2 through tostring if set, as lua.c
** does, else the default. [-0, +1, e]
*/
static const char *get_prompt(lua_State *L, int firstline) {
  if (lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
    lua_pop(L, 1);
    lua_pushstring(L, firstline ? LOOM_PROMPT : LOOM_PROMPT2);
  } else {
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);  /* remove the original value */
  }
  return lua_tostring(L, -1);
}

/*
** Read one line, without its newline, and push it; returns 0 at end of
** input. A terminal gets libedit; anything else is read with getline, the
** prompt still written as lua.c does without readline. [-0, +(0|1), e]
*/
static int pushline(lua_State *L, int firstline) {
  const char *prompt = get_prompt(L, firstline);
  char *line = NULL;
  size_t len;
  if (isatty(STDIN_FILENO)) {
    line = readline(prompt);
    if (line == NULL) {
      lua_pop(L, 1);  /* prompt */
      return 0;
    }
    len = strlen(line);
  } else {
    size_t cap = 0;
    ssize_t n;
    fputs(prompt, stdout);
    fflush(stdout);
    n = getline(&line, &cap, stdin);
    if (n < 0) {
      free(line);
      lua_pop(L, 1);  /* prompt */
      return 0;
    }
    len = (size_t)n;
  }
  lua_pop(L, 1);  /* prompt */
  if (len > 0 && line[len - 1] == '\n')
    line[--len] = '\0';
  if (firstline && line[0] == '=')  /* 5.2 compatibility, as lua.c */
    lua_pushfstring(L, "return %s", line + 1);
  else
    lua_pushlstring(L, line, len);
  free(line);
  return 1;
}

static void saveline(const char *line) {
  if (line[0] != '\0' && isatty(STDIN_FILENO))
    add_history(line);
}

/*
** Is status a syntax error ending in "<eof>" (message on top): is the
** chunk incomplete? [-0, +0, -]
*/
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg, lmark = sizeof(LOOM_EOFMARK) - 1;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    if (lmsg >= lmark && strcmp(msg + lmsg - lmark, LOOM_EOFMARK) == 0)
      return 1;
  }
  return 0;
}

/*
** Try to compile "return <line>;". On success replace the line with the
** function. [-1, +1, m] on success, [-0, +0, m] otherwise
*/
static int addreturn(lua_State *L) {
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  if (status == LUA_OK) {
    lua_remove(L, -2);  /* modified line */
    saveline(line);
    lua_remove(L, -2);  /* original line */
  } else {
    lua_pop(L, 2);  /* error and modified line */
  }
  return status;
}

/*
** Compile the line on top as a statement, reading continuation lines while
** it is incomplete. Leaves the function (or error message) in place of the
** line. [-1, +1, m]
*/
static int multiline(lua_State *L) {
  for (;;) {
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin");
    if (!incomplete(L, status) || !pushline(L, 0)) {
      saveline(line);
      lua_remove(L, -2);  /* the line; leaves the function or error */
      return status;
    }
    lua_remove(L, -2);  /* the "<eof>" error below the new line */
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);  /* newline between the two lines */
    lua_concat(L, 3);
  }
}

/*
** Read and compile one entry; returns -1 at end of input, else a load
** status with the function or error message pushed. [-0, +(0|1), e]
*/
static int loadline(lua_State *L) {
  if (!pushline(L, 1))
    return -1;
  if (addreturn(L) == LUA_OK)
    return LUA_OK;
  return multiline(L);
}

/* Print everything from index first up through the global print. */
static void l_print(lua_State *L, int first) {
  int n = lua_gettop(L) - first + 1;
  if (n > 0) {
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, first);
    if (lua_pcall(L, n, 0, 0) != LUA_OK)
      l_message(progname, lua_pushfstring(L, "error calling 'print' (%s)",
                                          lua_tostring(L, -1)));
  }
}

/*
** Run one entry (function on top) and print its results or its error.
** loom._repl_eval(fn) returns true, results... or false, message with
** the traceback already in it. [-1, +0, e]
*/
static void evalline(lua_State *L) {
  int base = lua_gettop(L);  /* the function */
  int status;
  lua_getglobal(L, "loom");
  if (lua_type(L, -1) == LUA_TTABLE &&
      lua_getfield(L, -1, "_repl_eval") == LUA_TFUNCTION) {
    lua_remove(L, -2);  /* loom */
    lua_insert(L, base);  /* _repl_eval below fn */
    status = docall(L, 1, LUA_MULTRET);
    if (status == LUA_OK && lua_gettop(L) >= base) {
      if (!lua_toboolean(L, base)) {  /* false, message */
        l_message(progname, luaL_tolstring(L, base + 1, NULL));
        lua_settop(L, base - 1);
        return;
      }
      lua_remove(L, base);  /* the 'true' */
    }
  } else {
    lua_settop(L, base);  /* no _repl_eval: call fn plainly */
    status = docall(L, 0, LUA_MULTRET);
  }
  if (status == LUA_OK)
    l_print(L, base);
  else
    report(L, status);
  lua_settop(L, base - 1);
}

/*
** The prompt: read, compile, run, print until end of input. When it ends,
** loom._repl_close(), if there is one, closes the prompt's loop.
** On a terminal, lua/loom/repl.lua runs the prompt inside the loop
** instead (the loop keeps running while the user types); this blocking
** one serves piped input.
*/
static int doREPL(lua_State *L, const struct options *o) {
  int status;
  int top = lua_gettop(L);
  if (isatty(STDIN_FILENO) && isatty(STDOUT_FILENO)) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "loom.repl");
    status = docall(L, 1, 1);
    if (status == LUA_OK) {
      lua_getfield(L, -1, "run");
      lua_pushstring(L, LOOM_PROGNAME);
      lua_createtable(L, 0, 2);
      lua_pushboolean(L, o->signal_dump);
      lua_setfield(L, -2, "signal_dump");
      lua_pushboolean(L, o->virtual_time);
      lua_setfield(L, -2, "virtual_time");
      if (o->trace != NULL) {
        lua_pushstring(L, o->trace);
        lua_setfield(L, -2, "trace");
      }
      status = docall(L, 2, 1);
    }
    if (status != LUA_OK) {
      report(L, status);
      lua_settop(L, top);
      return EXIT_FAILURE;
    }
    status = (int)luaL_optinteger(L, -1, EXIT_SUCCESS);
    lua_settop(L, top);
    return status;
  }
  progname = NULL;
  rl_readline_name = LOOM_PROGNAME;
  using_history();
  while ((status = loadline(L)) != -1) {
    if (status == LUA_OK)
      evalline(L);
    else
      report(L, status);
    lua_settop(L, top);
  }
  fputs("\n", stdout);
  fflush(stdout);
  lua_getglobal(L, "loom");
  if (lua_type(L, -1) == LUA_TTABLE &&
      lua_getfield(L, -1, "_repl_close") == LUA_TFUNCTION)
    report(L, docall(L, 0, 0));
  lua_settop(L, top);
  clear_history();
  progname = LOOM_PROGNAME;
  return EXIT_SUCCESS;
}

/* }====================================================== */


/*
** {======================================================
** Command line
** =======================================================
*/

/*
** Scan the options up to the script name. Returns 0, or the argv index of
** a bad option. Sets o->script to the script's index (0 if none), as
** lua.c's collectargs does.
*/
static int collectargs(char **argv, struct options *o) {
  int i;
  memset(o, 0, sizeof *o);
  if (argv[0] == NULL)
    return 0;
  for (i = 1; argv[i] != NULL; i++) {
    const char *a = argv[i];
    o->script = i;
    if (a[0] != '-')  /* not an option: the script */
      return 0;
    switch (a[1]) {
      case '\0':  /* '-': script is stdin */
        return 0;
      case '-':
        if (a[2] == '\0') {  /* '--' */
          o->script = (argv[i + 1] != NULL) ? i + 1 : 0;
          return 0;
        }
        if (strcmp(a, "--debug") == 0)
          o->debug = 1;
        else if (strcmp(a, "--signal-dump") == 0)
          o->signal_dump = 1;
        else if (strcmp(a, "--virtual-time") == 0)
          o->virtual_time = 1;
        else if (strcmp(a, "--trace") == 0) {
          if (argv[i + 1] == NULL)
            return i;
          o->trace = argv[++i];
        }
        else if (strcmp(a, "--plain") == 0)
          o->plain = 1;
        else
          return i;
        break;
      case 'i':
        if (a[2] != '\0')
          return i;
        o->interactive = o->version = 1;  /* -i implies -v */
        break;
      case 'v':
        if (a[2] != '\0')
          return i;
        o->version = 1;
        break;
      case 'e':
        o->has_e = 1;
        /* FALLTHROUGH */
      case 'l':  /* both need an argument */
        if (a[2] == '\0') {
          if (argv[i + 1] == NULL || argv[i + 1][0] == '-')
            return i;
          i++;
        }
        break;
      default:
        return i;
    }
  }
  o->script = 0;  /* no script */
  return 0;
}

/*
** Event-loop programs make many short-lived objects (handles, futures,
** coroutines, the strings of reads): the generational collector suits
** them. With reads of 100 KiB a minor collection comes at almost every
** read, so whatever lives across two reads (a stream's last chunk, a
** write waiting for the socket) grows old, and only a major collection
** frees it; each major walks the whole heap. A major multiplier of 300
** (Lua's default is 100) lets the heap grow to four times what the last
** major left before the next one: a third as many majors. A minor
** multiplier of 50 (Lua's default is 20) lets the heap grow by half
** between minor collections: a read's string is more often dead by the
** next one, so fewer grow old at all, and the collections come less often.
*/
#define GC_MINORMUL 50
#define GC_MAJORMUL 300

static void usegen(lua_State *L) {
  lua_gc(L, LUA_GCGEN, GC_MINORMUL, GC_MAJORMUL);
}

/*
** Global 'arg' as lua.c makes it: the script at 0, its arguments at 1..n,
** the interpreter and options at negative indices. With no script (0),
** argv[0] is at 0 and the options at 1..n, as in lua 5.4.
*/
static void createargtable(lua_State *L, char **argv, int argc, int script) {
  int i, narg;
  narg = argc - (script + 1);  /* with no script, the options count */
  lua_createtable(L, narg > 0 ? narg : 0, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Run the -e and -l options in order, stopping at the first failure. */
static int runargs(lua_State *L, char **argv, const struct options *o) {
  int i, n = o->script > 0 ? o->script : INT_MAX;
  if (argv[0] == NULL)  /* argc == 0 */
    return EXIT_SUCCESS;
  for (i = 1; i < n && argv[i] != NULL; i++) {
    const char *extra;
    int opt, status;
    if (argv[i][0] != '-')
      continue;
    opt = argv[i][1];
    if (opt != 'e' && opt != 'l')
      continue;
    extra = argv[i] + 2;
    if (*extra == '\0')
      extra = argv[++i];  /* collectargs checked it is there */
    status = (opt == 'e') ? dostring(L, o, extra) : dolibrary(L, extra);
    if (status != EXIT_SUCCESS)
      return status;
  }
  return EXIT_SUCCESS;
}

/*
** Everything runs here, under lua_pcall, so a memory error anywhere is
** reported rather than aborting. Arguments: argc, argv (light userdata).
** Returns the exit status.
*/
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  struct options o;
  int bad, status;
  luaL_checkversion(L);
  if ((bad = collectargs(argv, &o)) != 0) {
    print_usage(argv[bad]);
    lua_pushinteger(L, EXIT_FAILURE);
    return 1;
  }
  luaL_openlibs(L);
  usegen(L);
  createargtable(L, argv, argc, o.script);
  if (report(L, openloom(L)) != LUA_OK) {
    lua_pushinteger(L, EXIT_FAILURE);
    return 1;
  }
  if (o.version)
    print_version();
  status = runargs(L, argv, &o);
  if (status == EXIT_SUCCESS && o.script > 0)
    status = doscript(L, &o, argv + o.script);
  if (status == EXIT_SUCCESS) {
    if (o.interactive) {
      status = doREPL(L, &o);
    } else if (o.script == 0 && !o.has_e && !o.version) {
      if (isatty(STDIN_FILENO)) {  /* no script on a terminal: the prompt */
        print_version();
        status = doREPL(L, &o);
      } else {  /* stdin is the script, with no arguments (lua.c) */
        status = report(L, luaL_loadfile(L, NULL)) == LUA_OK
                   ? runchunk(L, &o, 0) : EXIT_FAILURE;
      }
    }
  }
  lua_pushinteger(L, status);
  return 1;
}

/*
** The state's allocator: size classes (alloc.c), except in sanitizer
** builds, where every block comes from the C library so that
** AddressSanitizer watches it.
*/
#if defined(__SANITIZE_ADDRESS__)
#define LOOM_POOL_ALLOC 0
#else
#define LOOM_POOL_ALLOC 1
#endif

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  l_message(LOOM_PROGNAME, msg ? msg : "error object is not a string");
  return 0;  /* abort */
}

/* Warnings as lua.c has them: off until "@on". Each thread has its own
** state, hence its own switch. */
static _Thread_local int warn_on;
static _Thread_local int cont;
static void warnf(void *ud, const char *msg, int tocont) {
  (void)ud;
  if (!cont && msg[0] == '@') {
    if (strcmp(msg, "@on") == 0)
      warn_on = 1;
    else if (strcmp(msg, "@off") == 0)
      warn_on = 0;
    return;
  }
  if (warn_on) {
    if (!cont)
      fputs("Lua warning: ", stderr);
    fputs(msg, stderr);
    if (!tocont)
      fputs("\n", stderr);
    fflush(stderr);
  }
  cont = tocont;
}

static lua_State *newstate(loom_alloc **pa) {
  lua_State *L;
  *pa = NULL;
  if (!LOOM_POOL_ALLOC)
    return luaL_newstate();
  *pa = loom__alloc_new();
  if (*pa == NULL)
    return NULL;
  L = lua_newstate(loom__alloc_f(), *pa);
  if (L != NULL) {
    lua_atpanic(L, panic);
    lua_setwarnf(L, warnf, NULL);
  }
  return L;
}

/*
** States for the threads loom starts (thread.c): made as the main one is,
** with the standard libraries and loom's embedded modules preloaded. The
** state's allocator is freed with it.
*/
static int thread_openlibs(lua_State *L) {
  luaL_openlibs(L);
  usegen(L);
  preloadloom(L);
  return 0;
}

static void thread_closestate(lua_State *L) {
  void *ud;
  lua_getallocf(L, &ud);
  lua_close(L);
  if (LOOM_POOL_ALLOC)
    loom__alloc_free((loom_alloc *)ud);
}

static lua_State *thread_newstate(void) {
  loom_alloc *a;
  lua_State *L = newstate(&a);
  if (L == NULL) {
    loom__alloc_free(a);
    return NULL;
  }
  lua_pushcfunction(L, thread_openlibs);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    thread_closestate(L);
    return NULL;
  }
  return L;
}

int main(int argc, char **argv) {
  int status, result;
  loom_alloc *a;
  lua_State *L;
  loom__set_statehooks(thread_newstate, thread_closestate);
  L = newstate(&a);
  if (L == NULL) {
    loom__alloc_free(a);
    l_message(LOOM_PROGNAME, "cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  result = (int)lua_tointeger(L, -1);
  report(L, status);
  lua_close(L);
  loom__alloc_free(a);
  return (status == LUA_OK) ? result : EXIT_FAILURE;
}

/* }====================================================== */
