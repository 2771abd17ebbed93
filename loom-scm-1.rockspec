-- loom-scm-1.rockspec - the module loom for Lua 5.4, built from a checkout:
--
--   luarocks --lua-version 5.4 make loom-scm-1.rockspec
--
-- (--lua-version is needed only where luarocks itself runs under another
-- Lua: Debian's runs under the oldest Lua installed.) The executable and
-- the man page are installed by `make install`, not by the rock.
--
-- Build type builtin rather than make: luarocks compiles and links with
-- its own compiler, flags and the libuv it found, on any platform it
-- supports, with no GNU make or pkg-config needed. The price is that the
-- files are listed by hand; scripts/check-rockspec.lua (a step of
-- scripts/run-tests.sh) fails when a listing here and the files of host/
-- and lua/loom/ disagree.

rockspec_format = "3.0"
package = "loom"
version = "scm-1"

source = {
   -- Built from the working tree by `luarocks make`; nothing is fetched.
   url = "git+file://.",
}

description = {
   summary = "An asyncio-style event loop for Lua 5.4, written in C on libuv",
   detailed = [[
loom brings Python asyncio's event loop to Lua 5.4: tasks as coroutines,
futures, timers, TCP, UDP, Unix sockets, pipes, subprocesses, signals,
files, DNS and threads, with asyncio's names and its ordering,
cancellation and error rules. The scheduler, timers, futures, tasks and
stream buffers are C on libuv.

Needs libuv 1.44 or later and OpenSSL 3 with their headers: on Debian
and Ubuntu, apt-get install libuv1-dev libssl-dev (Fedora: libuv-devel
openssl-devel; Alpine: libuv-dev openssl-dev; macOS: brew install libuv
openssl). When one is installed outside the usual places, pass
UV_DIR=/prefix or OPENSSL_DIR=/prefix to luarocks.
]],
   labels = { "async", "asyncio", "event-loop", "libuv", "coroutines" },
}

supported_platforms = { "unix" }

dependencies = {
   "lua >= 5.4, < 5.5",
}

-- libuv: UV_DIR=prefix, or UV_INCDIR and UV_LIBDIR, on the command line
-- (OpenSSL: OPENSSL_DIR, or OPENSSL_INCDIR and OPENSSL_LIBDIR)
-- point the build at it; by default the compiler's own search paths find
-- it. There is deliberately no header = "uv.h" test here: where it fails,
-- luarocks prints only "You may have to install UV in your system", so
-- host/internal.h checks for uv.h itself and stops the build with a
-- message naming the package to install (libuv1-dev on Debian).
external_dependencies = {
   UV = {},
   OPENSSL = {},   -- the same for OpenSSL (TLS): host/tls.c checks for it
}

build = {
   type = "builtin",
   modules = {
      -- The C core: every host/*.c except main.c and repl.c, which make
      -- the executable.
      ["loom.core"] = {
         sources = {
            "host/alloc.c",
            "host/buffer.c",
            "host/channel.c",
            "host/copy.c",
            "host/core.c",
            "host/dns.c",
            "host/fs.c",
            "host/future.c",
            "host/gather.c",
            "host/handle.c",
            "host/loop.c",
            "host/pipe.c",
            "host/poll.c",
            "host/process.c",
            "host/signal.c",
            "host/socket.c",
            "host/stream.c",
            "host/streambuf.c",
            "host/task.c",
            "host/tcp.c",
            "host/thread.c",
            "host/tls.c",
            "host/trace.c",
            "host/udp.c",
         },
         defines = { "_GNU_SOURCE" },
         incdirs = { "host", "$(UV_INCDIR)", "$(OPENSSL_INCDIR)" },
         libdirs = { "$(UV_LIBDIR)", "$(OPENSSL_LIBDIR)" },
         libraries = { "uv", "ssl", "crypto", "m" },
      },
      -- The Lua layer: lua/loom/init.lua is the module loom itself.
      ["loom"] = "lua/loom/init.lua",
      ["loom.combinators"] = "lua/loom/combinators.lua",
      ["loom.context"] = "lua/loom/context.lua",
      ["loom.dns"] = "lua/loom/dns.lua",
      ["loom.errors"] = "lua/loom/errors.lua",
      ["loom.fds"] = "lua/loom/fds.lua",
      ["loom.fs"] = "lua/loom/fs.lua",
      ["loom.introspect"] = "lua/loom/introspect.lua",
      ["loom.queues"] = "lua/loom/queues.lua",
      ["loom.repl"] = "lua/loom/repl.lua",
      ["loom.signals"] = "lua/loom/signals.lua",
      ["loom.streams"] = "lua/loom/streams.lua",
      ["loom.subprocess"] = "lua/loom/subprocess.lua",
      ["loom.sync"] = "lua/loom/sync.lua",
      ["loom.thread"] = "lua/loom/thread.lua",
      ["loom.tls"] = "lua/loom/tls.lua",
      ["loom.tracing"] = "lua/loom/tracing.lua",
      ["loom.util"] = "lua/loom/util.lua",
   },
   -- Installed under the rock's directory in the tree
   -- (lib/luarocks/rocks-5.4/loom/scm-1/docs): the manual, loom.1 with it.
   copy_directories = { "docs", "types" },
}

-- `luarocks test [SPEC...]`: the busted specs of tests/ against the loom
-- on package.path (after `eval "$(luarocks path)"`, the installed one),
-- run under this Lua by scripts/rock-test.lua with the busted found on
-- its package.path (Debian's lua-busted). Nothing is downloaded: there
-- are deliberately no test_dependencies.
test = {
   type = "command",
   script = "scripts/rock-test.lua",
}
