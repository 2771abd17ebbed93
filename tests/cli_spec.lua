-- cli_spec.lua
-- The loom executable (host/main.c) and scripts/embed.lua, driven from the
-- outside. Every spawned process is bounded by `timeout`, so a hang fails
-- the test instead of hanging the suite.
--
-- LOOM_EXE names the executable (default build/bin/loom under the repo).

-- Commands run through a shell that first drops LD_PRELOAD: under the
-- sanitizer run the interpreter is started with the sanitizer runtime
-- preloaded, and the helper programs spawned here must not inherit it.
local popen, execute = io.popen, os.execute
do
  local raw_popen, raw_execute = io.popen, os.execute
  popen = function(cmd, mode) return raw_popen("unset LD_PRELOAD; " .. cmd, mode) end
  execute = function(cmd) return raw_execute("unset LD_PRELOAD; " .. cmd) end
end

-- The repository root, absolute: some tests cd elsewhere.
local ROOT = (function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  local p = popen("cd '" .. here:gsub("'", [['\'']]) .. "/..' && pwd")
  local dir = p:read("l")
  p:close()
  return dir
end)()
local EXE = os.getenv("LOOM_EXE") or (ROOT .. "/build/bin/loom")
local TIMEOUT = "timeout -s KILL 20 "

local function shquote(s)
  return "'" .. s:gsub("'", [['\'']]) .. "'"
end

-- Quote each argument and join them into a command-line tail.
local function argv(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = shquote((select(i, ...))) end
  return table.concat(t, " ")
end

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Temp files made by a test, removed after it.
local temps = {}
local function tmpfile(contents)
  local name = os.tmpname()
  temps[#temps + 1] = name
  if contents then writefile(name, contents) end
  return name
end

after_each(function()
  for _, name in ipairs(temps) do os.remove(name) end
  temps = {}
end)

-- Exit status of os.execute as a shell would report it.
local function status_of(ok, how, code)
  if how == "signal" then return 128 + code end
  return code
end

-- Run the executable with the given (already quoted) argument string and
-- optional stdin text. Returns { out =, err =, status = }.
local function loom(args, stdin)
  local out, err = tmpfile(), tmpfile()
  local inp = stdin and tmpfile(stdin) or "/dev/null"
  local cmd = ("%s%s %s <%s >%s 2>%s"):format(TIMEOUT, shquote(EXE), args,
    shquote(inp), shquote(out), shquote(err))
  local status = status_of(execute(cmd))
  return { out = readfile(out), err = readfile(err), status = status }
end

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

describe("loom executable", function()
  it("-v prints loom, Lua and libuv versions", function()
    local r = loom("-v")
    assert.equal(0, r.status)
    assert.matches("^loom 0%.1%.0 %(Lua 5%.4%.%d+, libuv 1%.%d+%.%d+%)\n$", r.out)
    assert.equal("", r.err)
  end)

  it("runs the generational collector with a major multiplier of 300", function()
    -- Old garbage (strings that live across several minor collections)
    -- is freed by a major collection only. With a multiplier of 300 the
    -- heap reaches about four times what the last full collection left
    -- before an old object's finalizer runs; Lua's default (100) runs it
    -- at about twice.
    local script = tmpfile([[
      collectgarbage() collectgarbage()
      local freed = false
      local s = setmetatable({}, { __gc = function() freed = true end })
      for _ = 1, 3 do collectgarbage("step") end   -- s grows old
      s = nil
      local base, peak, ring = collectgarbage("count"), 0, {}
      for i = 1, 1000000 do
        ring[i % 512] = string.rep("x", 1000) .. i
        peak = math.max(peak, collectgarbage("count"))
        if freed then break end
      end
      print(collectgarbage("generational"), freed, peak / base)
    ]])
    local r = loom(argv(script))
    assert.equal(0, r.status, r.err)
    local mode, freed, ratio = r.out:match("^(%a+)\t(%a+)\t([%d.]+)\n$")
    assert.equal("generational", mode)
    assert.equal("true", freed)
    assert.is_true(tonumber(ratio) > 3, "heap grew only " .. ratio .. "x")
  end)

  it("runs a minor collection when the heap has grown by half (minor multiplier 50)", function()
    -- A weak key made after a collection is gone at the next one: the
    -- heap's growth between two of them is the minor multiplier (Lua's
    -- default, 20, gives 1.2). The strings made meanwhile are garbage at
    -- once, so the heap does not grow for good and no major collection
    -- (which comes at other times) mixes in.
    local script = tmpfile([[
      local i, ratios, junk = 0, {}, nil
      local w = setmetatable({}, { __mode = "k" })
      w[{}] = true
      local start, last
      while #ratios < 7 do
        i = i + 1
        junk = string.rep("x", 100) .. i     -- garbage at the next turn
        local now = collectgarbage("count")
        if next(w) == nil then               -- a collection since the probe
          if start then ratios[#ratios + 1] = last / start end
          start = now
          w[{}] = true
        end
        last = now
      end
      table.sort(ratios)
      print(ratios[4], #junk > 0)            -- the median
    ]])
    local r = loom(argv(script))
    assert.equal(0, r.status, r.err)
    local ratio = tonumber(r.out:match("^([%d.]+)\ttrue\n$"))
    assert.is_true(ratio ~= nil and ratio > 1.4 and ratio < 1.6, "heap grew " .. r.out)
  end)

  it("rejects an unknown option with usage on stderr", function()
    for _, opt in ipairs({ "-x", "--bogus", "-vx" }) do
      local r = loom(argv(opt, "-e", "print('ran')"))
      assert.equal(1, r.status)
      assert.equal("", r.out)
      assert.matches("unrecognized option '" .. opt:gsub("%-", "%%-") .. "'", r.err)
      assert.matches("usage: loom %[options%] %[script %[args%]%]", r.err)
    end
  end)

  it("-e and -l need an argument", function()
    for _, opt in ipairs({ "-e", "-l" }) do
      local r = loom(argv(opt))
      assert.equal(1, r.status)
      assert.matches("'" .. opt .. "' needs argument", r.err, 1, true)
    end
  end)

  it("a syntax error in a script exits 1 with loom: and the message", function()
    local script = tmpfile("x = = 1\n")
    local r = loom(argv(script))
    assert.equal(1, r.status)
    assert.equal("", r.out)
    assert.matches("^loom: .*:1: unexpected symbol near '='\n$", r.err)
  end)

  it("a syntax error in -e exits 1 and runs nothing after it", function()
    local r = loom(argv("-e", "print('first')", "-e", "x = = 1", "-e", "print('third')"))
    assert.equal(1, r.status)
    assert.equal("first\n", r.out)
    assert.matches("^loom: %(command line%):1: unexpected symbol", r.err)
  end)

  it("a missing script exits 1", function()
    local r = loom(argv("/nonexistent/loom-script.lua"))
    assert.equal(1, r.status)
    assert.matches("^loom: cannot open /nonexistent/loom%-script%.lua", r.err)
  end)

  -- The same argument handling with the loop (_main) and without (--plain).
  for _, mode in ipairs({ "loop", "plain" }) do
    local flag = mode == "plain" and "--plain " or ""
    local function run(args, stdin) return loom(flag .. args, stdin) end

    describe("(" .. mode .. ")", function()
      it("-e runs a string", function()
        local r = run(argv("-e", "print(1+1)"))
        assert.equal(0, r.status)
        assert.equal("2\n", r.out)
        assert.equal("", r.err)
      end)

      it("runs -e strings in order", function()
        local r = run(argv("-e", "x = 1", "-e", "print(x + 1)"))
        assert.equal(0, r.status)
        assert.equal("2\n", r.out)
      end)

      it("gives a script arg[0], arg[1..n] and ...", function()
        local script = tmpfile(
          "print(arg[0]) print(arg[1], arg[2], arg[3]) print(select('#', ...), ...)\n")
        local r = run(argv(script, "a b", "c"))
        assert.equal(0, r.status)
        assert.same({ script, "a b\tc\tnil", "2\ta b\tc" }, lines(r.out))
      end)

      it("puts the interpreter and options at negative indices", function()
        local script = tmpfile("for i = -4, 1 do print(i, arg[i]) end\n")
        local r = run(argv("-e", "x=1", script, "p"))
        assert.equal(0, r.status)
        local opts = mode == "plain" and { EXE, "--plain", "-e", "x=1" }
                                     or { "nil", EXE, "-e", "x=1" }
        assert.same({
          "-4\t" .. opts[1], "-3\t" .. opts[2], "-2\t" .. opts[3],
          "-1\t" .. opts[4], "0\t" .. script, "1\tp",
        }, lines(r.out))
      end)

      it("-- stops options", function()
        local script = tmpfile("print(arg[0], ...)\n")
        local r = run(argv("--", script, "-v"))
        assert.equal(0, r.status)
        assert.equal(script .. "\t-v\n", r.out)
      end)

      it("- runs stdin as the script, with arguments", function()
        local r = run(argv("-", "x", "y"), "print(arg[0], ...)\n")
        assert.equal(0, r.status)
        assert.equal("-\tx\ty\n", r.out)
      end)

      it("runs stdin when there is no script and stdin is not a terminal", function()
        local r = run("", "print('from stdin', ...)\n")
        assert.equal(0, r.status)
        assert.equal("from stdin\n", r.out)
      end)

      it("sets the global loom, the same table require returns", function()
        local r = run(argv("-e", "print(type(loom), loom == require 'loom')"))
        assert.equal(0, r.status)
        assert.equal("table\ttrue\n", r.out)
      end)

      it("-l mod and -l g=mod set globals before -e runs", function()
        local r = run(argv("-l", "string", "-l", "L=loom", "-l", "m=math",
          "-e", "print(string == _G.string, L == loom, m == math)"))
        assert.equal(0, r.status)
        assert.equal("true\ttrue\ttrue\n", r.out)
      end)

      it("-l of a missing module exits 1", function()
        local r = run(argv("-l", "no_such_module_xyz", "-e", "print('ran')"))
        assert.equal(1, r.status)
        assert.equal("", r.out)
        assert.matches("module 'no_such_module_xyz' not found", r.err, 1, true)
      end)

      it("an uncaught error exits 1 with its traceback", function()
        local script = tmpfile("local function inner() error('boom') end\ninner()\n")
        local r = run(argv(script))
        assert.equal(1, r.status)
        assert.matches(":1: boom", r.err, 1, true)
        assert.matches("stack traceback:", r.err, 1, true)
        assert.matches(":2: in ", r.err, 1, true)
      end)

      it("stops at the first failing chunk", function()
        local script = tmpfile("print('script')\n")
        local r = run(argv("-e", "error('x')", "-e", "print('second')", script))
        assert.equal(1, r.status)
        assert.equal("", r.out)
      end)

      it("loads embedded modules with @lua/loom/ chunk names", function()
        local r = run(argv("-e", [[
          for _, v in pairs(loom) do
            if type(v) == "function" and debug.getinfo(v, "S").what == "Lua" then
              print(debug.getinfo(v, "S").source) return
            end
          end]]))
        assert.equal(0, r.status)
        assert.matches("^@lua/loom/[%w_/]+%.lua\n$", r.out)
      end)
    end)
  end

  describe("--plain", function()
    it("runs a plain chunk: no loop, loom still global", function()
      local script = tmpfile([[
        assert(type(loom) == "table")
        assert(require "loom" == loom)
        assert(select('#', ...) == 1)
        print("plain", ...)
      ]])
      local r = loom(argv("--plain", script, "z"))
      assert.equal(0, r.status)
      assert.equal("plain\tz\n", r.out)
      assert.equal("", r.err)
    end)

    it("reports an error as lua does: loom: message + traceback, exit 1", function()
      local r = loom(argv("--plain", "-e", "error('plain boom')"))
      assert.equal(1, r.status)
      assert.matches("^loom: %(command line%):1: plain boom\nstack traceback:\n", r.err)
    end)

    it("gives error objects with __tostring a traceback too", function()
      local r = loom(argv("--plain", "-e",
        "error(setmetatable({}, {__tostring = function() return 'EFAKE: custom' end}))"))
      assert.equal(1, r.status)
      assert.matches("^loom: EFAKE: custom\nstack traceback:\n", r.err)
    end)

    it("leaves os.exit to the script", function()
      local r = loom(argv("--plain", "-e", "os.exit(7)"))
      assert.equal(7, r.status)
    end)
  end)

  describe("main task (needs loom._main)", function()
    it("a top-level loom.sleep works", function()
      local r = loom(argv("-e", "loom.sleep(0.01) print('slept')"))
      assert.equal(0, r.status)
      assert.equal("slept\n", r.out)
      assert.equal("", r.err)
    end)

    it("prints the running loop's time after a sleep", function()
      local r = loom(argv("-e", "loom.sleep(0.1) print(loom.get_running_loop():time())"))
      assert.equal(0, r.status)
      assert.truthy(tonumber(r.out), r.out)
    end)

    it("the loop's clock advances over a sleep", function()
      local r = loom(argv("-e", [[
        local loop = loom.get_running_loop()
        local t0 = loop:time()
        loom.sleep(0.1)
        print(loop:time() - t0)]]))
      assert.equal(0, r.status)
      assert.is_true(tonumber(r.out) >= 0.09, r.out)
    end)

    it("a script's error after an await exits 1 with a traceback", function()
      local script = tmpfile(
        "local function f()\n  loom.sleep(0)\n  error('late boom')\nend\nf()\n")
      local r = loom(argv(script))
      assert.equal(1, r.status)
      assert.matches(":3: late boom", r.err, 1, true)
      assert.matches("stack traceback:", r.err, 1, true)
    end)

    it("each -e chunk gets a fresh loop", function()
      local r = loom(argv("-e", "L1 = loom.get_running_loop()",
        "-e", "print(L1 ~= loom.get_running_loop())"))
      assert.equal(0, r.status)
      assert.equal("true\n", r.out)
    end)

    it("--debug runs the main task", function()
      local r = loom(argv("--debug", "-e", [[
        local loop = loom.get_running_loop()
        print(loop.get_debug and tostring(loop:get_debug()) or "n/a")]]))
      assert.equal(0, r.status)
      assert.matches("^(%S+)\n$", r.out)
      assert.is_not.equal("false\n", r.out)
    end)

    -- The shell execs loom, so os.execute sees loom's own wait status: an
    -- exit with 130 (the main task was cancelled), not death by SIGINT. A
    -- background sender waits for the script to be ready, sends SIGINT, and
    -- sends SIGKILL if loom is still there 5 s later.
    it("SIGINT cancels the main task and exits 130 promptly", function()
      local ready, out, err = tmpfile(), tmpfile(), tmpfile()
      os.remove(ready)
      local chunk = ("io.open(%q, 'w'):close() loom.sleep(30) print('not cancelled')")
        :format(ready)
      local cmd = ([[
( i=0
  while [ ! -e %s ] && kill -0 $$ 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i+1))
  done
  sleep 0.2
  kill -INT $$ 2>/dev/null
  i=0
  while kill -0 $$ 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL $$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
exec %s -e %s </dev/null >%s 2>%s]]):format(shquote(ready), shquote(EXE),
        shquote(chunk), shquote(out), shquote(err))
      local t0 = os.time()
      local _, how, code = execute(cmd)
      local elapsed = os.time() - t0
      os.remove(ready)
      assert.same({ "exit", 130 }, { how, code })
      assert.is_true(elapsed < 10)
      assert.equal("", readfile(out))
    end)
  end)

  it("ignores SIGPIPE: writing to a closed peer fails with EPIPE, the program lives", function()
    local script = tmpfile([[
local loop = loom.get_running_loop()
local path = os.tmpname(); os.remove(path)
local lost = loop:create_future()
local srv = loop:create_unix_server(function()
  return {
    connection_made = function(self, t) self.t = t end,
    connection_lost = function(self, e) if not lost:done() then lost:set_result(e) end end,
    eof_received = function(self)
      for _ = 1, 50 do self.t:write(("x"):rep(65536)) end
      return true
    end,
  }
end, path)
local t = loop:create_unix_connection(function() return {} end, path)
t:close()
local e = loom.wait_for(lost, 5)
print("alive", e and e.code)
srv:close()
os.remove(path)
]])
    local r = loom(shquote(script))
    assert.equal(0, r.status, r.err)
    assert.equal("alive\tEPIPE\n", r.out)
  end)

  describe("--signal-dump", function()
    it("prints the task tree to stderr on SIGUSR1, and the script goes on", function()
      local ready, out, err = tmpfile(), tmpfile(), tmpfile()
      os.remove(ready)
      local chunk = ("local function napper() loom.sleep(30) end "
        .. "loom.create_task(napper):set_name('napper') "
        .. "io.open(%q, 'w'):close() loom.sleep(1.5) print('finished')"):format(ready)
      local cmd = ([[
( i=0
  while [ ! -e %s ] && kill -0 $$ 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i+1))
  done
  kill -USR1 $$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
exec %s --signal-dump -e %s </dev/null >%s 2>%s]]):format(shquote(ready), shquote(EXE),
        shquote(chunk), shquote(out), shquote(err))
      local _, how, code = execute("timeout -s KILL 20 sh -c " .. shquote(cmd))
      os.remove(ready)
      local text = readfile(err)
      assert.same({ "exit", 0 }, { how, code }, text)
      assert.equal("finished\n", readfile(out))
      assert.is_not_nil(text:find("(SIGUSR1)", 1, true), text)
      assert.is_not_nil(text:find("Task 1 'main' sleeping", 1, true), text)
      assert.is_not_nil(text:find("└── Task 2 'napper' sleeping, [%d.]+ s left at %(command line%):1"), text)
    end)
  end)

  describe("prompt", function()
    it("prints expression values and runs statements", function()
      local r = loom("-i", "1+1\nx = 'v'\nx\nreturn 1, nil, 3\n")
      assert.equal(0, r.status)
      local out = r.out:gsub(">+ ", "")
      assert.matches("^loom [^\n]*\n2\nv\n1\tnil\t3\n\n$", out)
    end)

    it("reads continuation lines until the chunk is complete", function()
      local r = loom("-i", "function f()\nreturn 42\nend\nf()\n")
      assert.equal(0, r.status)
      assert.matches("\n> >> >> > 42\n> \n$", r.out)
    end)

    it("reports errors and goes on; end of input exits 0", function()
      local r = loom("-i", "error('oops')\nfor\n=\n'after'\n")
      assert.equal(0, r.status)
      assert.matches("stdin:1: oops", r.err, 1, true)
      assert.matches("stdin:2: <name> expected near '='", r.err, 1, true)
      assert.matches("after\n", r.out, 1, true)
    end)

    it("runs -i after the script", function()
      local script = tmpfile("y = 5\n")
      local r = loom(argv("-i", script), "y * 2\n")
      assert.equal(0, r.status)
      assert.matches("> 10\n", r.out, 1, true)
    end)

    it("entries run as tasks that can await (needs loom._repl_eval)", function()
      local r = loom("-i", "loom.sleep(0.01)\nreturn 'awaited'\n")
      assert.equal(0, r.status)
      assert.equal("", r.err)
      assert.matches("awaited\n", r.out, 1, true)
    end)
  end)
end)

describe("scripts/embed.lua", function()
  local dir

  before_each(function()
    local p = popen("mktemp -d")
    dir = p:read("l")
    p:close()
    execute("mkdir -p " .. shquote(dir .. "/lua/loom/sub"))
  end)

  after_each(function()
    execute("rm -rf " .. shquote(dir))
  end)

  local function embed(...)
    return execute(("cd %s && lua5.4 %s out.c %s 2>/dev/null"):format(
      shquote(dir), shquote(ROOT .. "/scripts/embed.lua"), argv(...)))
  end

  it("maps files to module names and chunk names", function()
    writefile(dir .. "/lua/loom/init.lua", "return 1\n")
    local foo = "return '\"*/\\0'\n"
    writefile(dir .. "/lua/loom/foo.lua", foo)
    writefile(dir .. "/lua/loom/sub/bar.lua", "")
    assert.is_true(embed("lua/loom/init.lua", "lua/loom/foo.lua", "lua/loom/sub/bar.lua"))
    local c = readfile(dir .. "/out.c")
    assert.matches('{ "loom", "@lua/loom/init.lua", src_%d+, 9 }', c)
    assert.matches('{ "loom.foo", "@lua/loom/foo.lua", src_%d+, ' .. #foo .. ' }', c)
    assert.matches('{ "loom.sub.bar", "@lua/loom/sub/bar.lua", src_%d+, 0 }', c)
    assert.matches("{ NULL, NULL, NULL, 0 }", c, 1, true)
    -- "return 1\n" as bytes
    assert.matches("114,101,116,117,114,110,32,49,10,", c, 1, true)
  end)

  it("does not rewrite an unchanged output", function()
    writefile(dir .. "/lua/loom/init.lua", "return 1\n")
    assert.is_true(embed("lua/loom/init.lua"))
    execute("touch -d @946684800 " .. shquote(dir .. "/out.c"))
    assert.is_true(embed(dir .. "/lua/loom/init.lua"))  -- absolute path, same output
    local p = popen("stat -c %Y " .. shquote(dir .. "/out.c"))
    local mtime = tonumber(p:read("l"))
    p:close()
    assert.equal(946684800, mtime)
  end)

  it("fails on a path outside a lua/ directory", function()
    writefile(dir .. "/x.lua", "")
    assert.is_nil(embed("x.lua"))
  end)
end)
