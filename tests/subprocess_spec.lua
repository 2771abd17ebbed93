-- subprocess_spec.lua: child processes (host/process.c and
-- lua/loom/subprocess.lua): the protocol API (loop:subprocess_exec,
-- loop:subprocess_shell, SubprocessTransport) and the streams API
-- (create_subprocess_exec, create_subprocess_shell, Process). Real-time
-- loops; every test body runs under a 20 s deadline, so none can hang.
--
-- The children are sh, cat, true, sleep, head, pwd and env only: under
-- the asan-module run they inherit the preloaded sanitizer runtime, and
-- these leave no leak report behind.

local H = require "helper"
local loom = require "loom"
local core = loom._core
H.setup()

local PIPE, DEVNULL, STDOUT = loom.PIPE, loom.DEVNULL, loom.STDOUT

-- Runs fn(loop) as a task of a new real-time loop, under a deadline;
-- returns its results.
local function run(fn, secs)
  local loop = H.loop { virtual_time = false }
  return loop:run_until_complete(function()
    return loom.wait_for(function() return fn(loop) end, secs or 20)
  end)
end

-- run(fn, secs), then closes the loop.
local function run_closed(fn, secs)
  local loop = H.loop { virtual_time = false }
  loop:run_until_complete(function()
    return loom.wait_for(function() return fn(loop) end, secs or 20)
  end)
  loop:close()
end

-- Inside a task: sleeps in small steps until done() is true (5 s at most).
local function wait_until(done, what)
  local deadline = loom.get_running_loop():time() + 5
  while not done() do
    if loom.get_running_loop():time() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    loom.sleep(0.005)
  end
end

-- The number of open file descriptors of this process. Compare counts
-- taken with no loop open, or on one loop that already has a stream:
-- libuv keeps a reserve descriptor per loop from its first stream on.
local nfds = core._nfds

-- The state letter of process pid ("S", "Z", ...), nil when it is gone.
local function state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s:match("^%d+ %(.*%) (%a)")
end

-- The zombie children of this process.
local function zombies()
  local me, n = core._getpid(), 0
  local p = assert(io.popen("cat /proc/[0-9]*/stat 2>/dev/null"))
  for line in p:lines() do
    local st, ppid = line:match("^%d+ %(.*%) (%a) (%d+)")
    if st == "Z" and tonumber(ppid) == me then n = n + 1 end
  end
  p:close()
  return n
end

-- A subprocess protocol that records its calls, in order, in .trace.
local function recorder()
  local p = { trace = {}, out = { [1] = {}, [2] = {} }, lost_err = {} }
  local function add(s) p.trace[#p.trace + 1] = s end
  function p.connection_made(self, t) self.transport = t; add("made") end
  function p.pipe_data_received(self, fd, data)
    local o = self.out[fd]
    o[#o + 1] = data
  end
  function p.pipe_connection_lost(self, fd, err)
    self.lost_err[fd] = err
    add("pipe_lost " .. fd)
  end
  function p.process_exited(self) add("exited") end
  function p.connection_lost(self, err)
    self.final_err = err
    add("lost")
    if self.on_lost then self.on_lost:set_result() end
  end
  function p.pause_writing() add("pause") end
  function p.resume_writing() add("resume") end
  return p
end

local function has(list, item)
  for _, v in ipairs(list) do if v == item then return true end end
  return false
end

local function pos(list, item)
  for i, v in ipairs(list) do if v == item then return i end end
  return nil
end

describe("loop:subprocess_exec and subprocess_shell", function()
  it("calls the protocol in asyncio's order and gives the return code", function()
    run(function(loop)
      local p = recorder()
      p.on_lost = loop:create_future()
      local t, p2 = loop:subprocess_exec(function() return p end, "sh", "-c",
        "echo out; echo err >&2; exit 3", { stdout = PIPE, stderr = PIPE })
      assert.are.equal(p, p2)
      assert.are.equal(t, p.transport)
      assert.are.same({ "made" }, p.trace)   -- before the call returns
      assert.is_true(math.type(t:get_pid()) == "integer" and t:get_pid() > 0)
      assert.is_nil(t:get_returncode())
      assert.is_nil(t:get_pipe_transport(0))
      assert.is_not_nil(t:get_pipe_transport(1))
      assert.is_not_nil(t:get_pipe_transport(2))
      assert.is_nil(t:get_pipe_transport(3))
      assert.is_false(t:is_closing())
      assert.are.equal(p, t:get_protocol())
      assert.are.equal(loop, t:get_loop())
      assert.are.equal("dflt", t:get_extra_info("subprocess", "dflt"))
      p.on_lost:await()
      assert.are.equal("out\n", table.concat(p.out[1]))
      assert.are.equal("err\n", table.concat(p.out[2]))
      assert.are.equal(3, t:get_returncode())
      -- each pipe lost once, the exit once, connection_lost last
      assert.are.equal(4, #p.trace - 1)
      assert.is_true(has(p.trace, "pipe_lost 1") and has(p.trace, "pipe_lost 2"))
      assert.is_true(has(p.trace, "exited"))
      assert.are.equal("lost", p.trace[#p.trace])
      assert.is_nil(p.final_err)
      assert.is_nil(p.lost_err[1])
      H.contains("returncode 3", tostring(t))
    end)
  end)

  it("runs a shell command line with subprocess_shell", function()
    run(function(loop)
      local p = recorder()
      p.on_lost = loop:create_future()
      local t = loop:subprocess_shell(function() return p end,
        "x=shell; echo \"$x\" | cat; exit 7", { stdout = PIPE })
      p.on_lost:await()
      assert.are.equal("shell\n", table.concat(p.out[1]))
      assert.are.equal(7, t:get_returncode())
    end)
  end)

  it("works on a loop that is not running yet, from outside a task", function()
    local loop = H.loop { virtual_time = false }
    local p = recorder()
    local t = loop:subprocess_exec(function() return p end, "sh", "-c",
      "echo early", { stdout = PIPE })
    assert.are.same({ "made" }, p.trace)
    loop:run_until_complete(function()
      p.on_lost = loop:create_future()
      if p.trace[#p.trace] ~= "lost" then p.on_lost:await() end
    end)
    assert.are.equal("early\n", table.concat(p.out[1]))
    assert.are.equal(0, t:get_returncode())
  end)

  it("writes to stdin through its pipe transport, with flow control", function()
    run(function(loop)
      local p = recorder()
      p.on_lost = loop:create_future()
      local t = loop:subprocess_exec(function() return p end, "sh", "-c",
        "read x; sleep 0.2; cat >/dev/null; echo \"got $x\"",
        { stdin = PIPE, stdout = PIPE })
      local stdin = t:get_pipe_transport(0)
      stdin:write("first\n")
      local chunk = string.rep("z", 1 << 20)
      for _ = 1, 4 do stdin:write(chunk) end
      assert.is_true(stdin:get_write_buffer_size() > 0)
      assert.is_true(has(p.trace, "pause"))
      wait_until(function() return has(p.trace, "resume") end, "resume_writing")
      stdin:write_eof()
      p.on_lost:await()
      assert.are.equal("got first\n", table.concat(p.out[1]))
      assert.are.equal(0, t:get_returncode())
      assert.is_true(pos(p.trace, "pause") < pos(p.trace, "resume"))
      assert.is_true(has(p.trace, "pipe_lost 0"))
    end)
  end)

  it("sees a child close its stdin: the stdin pipe is lost without a write", function()
    run(function(loop)
      local p = recorder()
      p.on_lost = loop:create_future()
      local t = loop:subprocess_exec(function() return p end, "sh", "-c",
        "exec <&-; sleep 0.1", { stdin = PIPE })
      wait_until(function() return has(p.trace, "pipe_lost 0") end, "stdin lost")
      assert.is_nil(t:get_returncode())     -- still running
      p.on_lost:await()
      assert.are.equal(0, t:get_returncode())
    end)
  end)

  it("close() kills a running child; process_exited and connection_lost still come", function()
    run(function(loop)
      local p = recorder()
      p.on_lost = loop:create_future()
      local t = loop:subprocess_exec(function() return p end, "sleep", "30",
        { stdin = PIPE, stdout = PIPE })
      local pid = t:get_pid()
      t:close()
      assert.is_true(t:is_closing())
      assert.is_true(t:get_pipe_transport(0):is_closing())
      assert.is_true(t:get_pipe_transport(1):is_closing())
      t:close()                                -- idempotent
      p.on_lost:await()
      assert.are.equal(-9, t:get_returncode())
      assert.is_true(has(p.trace, "exited"))
      assert.is_nil(state(pid))
    end)
  end)

  it("reports errors raised by protocol methods and goes on", function()
    run(function(loop)
      local got = H.capture(loop)
      local p = recorder()
      p.on_lost = loop:create_future()
      local boom = setmetatable({}, { __tostring = function() return "boom" end })
      p.pipe_data_received = function() error(boom) end
      p.process_exited = function() error("exit boom") end
      local t = loop:subprocess_exec(function() return p end, "sh", "-c",
        "echo a; sleep 0.05; echo b", { stdout = PIPE })
      p.on_lost:await()
      assert.are.equal(0, t:get_returncode())
      local r = H.reports(got, "Exception in protocol.pipe_data_received() of a subprocess transport")
      assert.is_true(#r >= 1)
      assert.are.equal(boom, r[1].exception)
      assert.are.equal(t, r[1].transport)
      assert.are.equal(p, r[1].protocol)
      assert.is_string(r[1].traceback)
      r = H.reports(got, "Exception in protocol.process_exited() of a subprocess transport")
      assert.are.equal(1, #r)
      H.contains("exit boom", r[1].exception)
      assert.are.equal("lost", p.trace[#p.trace])
    end)
  end)

  it("calls the factory first: its error leaves no child", function()
    run(function(loop)
      local e = H.raised(loop.subprocess_exec, loop, function() error("no proto") end,
        "true")
      H.contains("no proto", e)
      local n = 0
      local e2 = H.raised(loop.subprocess_exec, loop, function() n = n + 1 end,
        "true", { bogus = 1 })
      H.contains("unknown option 'bogus'", e2)
      assert.are.equal(0, n)               -- arguments are checked before
    end)
  end)

  it("rejects bad arguments naming the method", function()
    run(function(loop)
      local f = function() return recorder() end
      local function err(...) return H.raised(loop.subprocess_exec, loop, ...) end
      assert.are.equal("bad argument #1 to 'subprocess_exec' (function expected, got nil)",
        err(nil, "true"))
      assert.are.equal("bad argument #2 to 'subprocess_exec' (string expected, got no value)",
        err(f))
      assert.are.equal("bad argument #2 to 'subprocess_exec' (program contains a NUL byte)",
        err(f, "tr\0ue"))
      assert.are.equal("bad argument #4 to 'subprocess_exec' (argument contains a NUL byte)",
        err(f, "echo", "a", "b\0c"))
      assert.are.equal("bad argument #3 to 'subprocess_exec' (string expected, got boolean)",
        err(f, "echo", true))
      assert.are.equal("bad argument #3 to 'subprocess_exec' (opts.stdout must be loom.PIPE, "
        .. "loom.DEVNULL or nil)", err(f, "true", { stdout = 5 }))
      assert.are.equal("bad argument #3 to 'subprocess_shell' (table expected, got string)",
        H.raised(loop.subprocess_shell, loop, f, "true", "x"))
      assert.are.equal("bad argument #2 to 'subprocess_shell' (command contains a NUL byte)",
        H.raised(loop.subprocess_shell, loop, f, "true\0; rm x"))
      local closed = H.loop()
      closed:close()
      H.contains("subprocess_exec: event loop is closed",
        H.raised(closed.subprocess_exec, closed, f, "true"))
    end)
  end)
end)

describe("create_subprocess_exec", function()
  it("runs a program with its arguments as they are, no shell", function()
    run(function()
      local p = loom.create_subprocess_exec("sh", "-c", 'printf "%s|" "$@"', "sh",
        "a b", "$HOME", "*", "", 42, { stdout = PIPE })
      assert.is_true(math.type(p.pid) == "integer" and p.pid > 0)
      assert.are.equal("a b|$HOME|*||42|", p.stdout:read())
      assert.are.equal(0, p:wait())
      assert.are.equal(0, p.returncode)
      H.contains("returncode 0", tostring(p))
    end)
  end)

  it("searches PATH, takes a path, and a nil where the options go", function()
    run(function()
      local p = loom.create_subprocess_exec("true", nil)
      assert.is_nil(p.stdin)
      assert.is_nil(p.stdout)
      assert.are.equal(0, p:wait())
      p = loom.create_subprocess_exec("/bin/sh", "-c", "exit 5")
      assert.are.equal(5, p:wait())
      assert.are.equal(5, p:wait())        -- again: at once
    end)
  end)

  it("gives nil for returncode while the child runs", function()
    run(function()
      local p = loom.create_subprocess_exec("sleep", "0.1")
      assert.is_nil(p.returncode)
      H.contains("running", tostring(p))
      assert.are.equal(0, p:wait())
      assert.are.equal(0, p.returncode)
    end)
  end)

  it("reads stdout line by line and stderr apart", function()
    run(function()
      local p = loom.create_subprocess_shell(
        "for i in 1 2 3; do echo line$i; echo e$i >&2; done", { stdout = PIPE, stderr = PIPE })
      local lines = {}
      for line in p.stdout:lines() do lines[#lines + 1] = line end
      assert.are.same({ "line1\n", "line2\n", "line3\n" }, lines)
      assert.are.equal("e1\ne2\ne3\n", p.stderr:read())
      assert.are.equal(0, p:wait())
    end)
  end)

  it("merges stderr into stdout's pipe with loom.STDOUT", function()
    run(function()
      local p = loom.create_subprocess_shell("echo a; echo b >&2; echo c",
        { stdout = PIPE, stderr = STDOUT })
      assert.is_nil(p.stderr)
      local out, err = p:communicate()
      assert.are.equal("a\nb\nc\n", out)
      assert.is_nil(err)
      -- with stdout to /dev/null, stderr follows it there
      p = loom.create_subprocess_shell("echo a; echo b >&2",
        { stdout = DEVNULL, stderr = STDOUT })
      out, err = p:communicate()
      assert.is_nil(out)
      assert.is_nil(err)
      assert.are.equal(0, p.returncode)
    end)
  end)

  it("gives /dev/null with loom.DEVNULL", function()
    run(function()
      local p = loom.create_subprocess_exec("cat", { stdin = DEVNULL, stdout = PIPE })
      assert.are.equal("", p.stdout:read())   -- EOF on stdin at once
      assert.are.equal(0, p:wait())
      p = loom.create_subprocess_shell("test -c /dev/stdin && test -c /dev/stdout "
        .. "&& test -c /dev/stderr", { stdin = DEVNULL, stdout = DEVNULL, stderr = DEVNULL })
      assert.are.equal(0, p:wait())
    end)
  end)

  it("runs in opts.cwd with opts.env as the whole environment", function()
    run(function()
      local p = loom.create_subprocess_exec("pwd", { cwd = "/tmp", stdout = PIPE })
      assert.are.equal("/tmp\n", (p:communicate()))
      p = loom.create_subprocess_exec("env", { stdout = PIPE,
        env = { FOO = "bar baz", EMPTY = "", N = 12, PATH = "/usr/bin:/bin" } })
      local lines = {}
      for line in (p:communicate()):gmatch("[^\n]+") do lines[#lines + 1] = line end
      table.sort(lines)
      assert.are.same({ "EMPTY=", "FOO=bar baz", "N=12", "PATH=/usr/bin:/bin" }, lines)
      -- no PATH: execvp's default path still finds sh
      p = loom.create_subprocess_exec("sh", "-c", 'echo "$FOO"',
        { env = { FOO = "x" }, stdout = PIPE })
      assert.are.equal("x\n", (p:communicate()))
    end)
  end)

  it("passes the limit option to the readers", function()
    run(function()
      local p = loom.create_subprocess_shell("printf '%0100d\\n' 0; exec sleep 30",
        { stdout = PIPE, limit = 16 })
      local e = H.raised(p.stdout.readline, p.stdout)
      assert.is_true(loom.LimitOverrunError:is(e) or tostring(e):find("limit") ~= nil)
      p:kill()
      p:wait()
    end)
  end)

  it("writes and drains stdin while reading stdout", function()
    run(function()
      local p = loom.create_subprocess_exec("cat", { stdin = PIPE, stdout = PIPE })
      local chunk = string.rep("0123456789abcdef", 1 << 14)   -- 256 KiB
      local reader = loom.create_task(function() return p.stdout:read() end)
      for _ = 1, 16 do
        p.stdin:write(chunk)
        p.stdin:drain()
      end
      p.stdin:close()
      p.stdin:wait_closed()
      local out = reader:await()
      assert.are.equal(16 * #chunk, #out)
      assert.are.equal(chunk:rep(16), out)
      assert.are.equal(0, p:wait())
    end)
  end)
end)

describe("Process:communicate", function()
  it("feeds input, closes stdin, collects stdout and stderr", function()
    run(function()
      local p = loom.create_subprocess_shell("cat; echo done >&2; exit 2",
        { stdin = PIPE, stdout = PIPE, stderr = PIPE })
      local out, err = p:communicate("hello\nworld\n")
      assert.are.equal("hello\nworld\n", out)
      assert.are.equal("done\n", err)
      assert.are.equal(2, p.returncode)
      assert.is_true(p.stdin:is_closing())
    end)
  end)

  it("moves several MiB both ways without deadlock", function()
    run(function()
      local n = 6 << 20
      local input = string.rep("abcdefghijklmnopqrstuvwxyz012345", n // 32)
      local p = loom.create_subprocess_exec("cat", { stdin = PIPE, stdout = PIPE })
      local out = p:communicate(input)
      assert.are.equal(n, #out)
      assert.is_true(out == input)
      assert.are.equal(0, p.returncode)
      -- stdout and stderr both large at once
      p = loom.create_subprocess_shell(
        "head -c 5000000 /dev/zero; head -c 4000000 /dev/zero >&2; head -c 3000000 /dev/zero",
        { stdout = PIPE, stderr = PIPE })
      local o, e = p:communicate()
      assert.are.equal(8000000, #o)
      assert.are.equal(4000000, #e)
    end, 60)
  end)

  it("does not fail when the child does not read its input", function()
    run(function()
      local p = loom.create_subprocess_exec("true", { stdin = PIPE, stdout = PIPE })
      local out = p:communicate(string.rep("x", 4 << 20))
      assert.are.equal("", out)
      assert.are.equal(0, p.returncode)
    end)
  end)

  it("without pipes it only waits", function()
    run(function()
      local p = loom.create_subprocess_shell("exit 9")
      local out, err = p:communicate()
      assert.is_nil(out)
      assert.is_nil(err)
      assert.are.equal(9, p.returncode)
    end)
  end)

  it("rejects input when stdin is not a pipe, and non-string input", function()
    run(function()
      local p = loom.create_subprocess_exec("true")
      H.contains("stdin is not a pipe", H.raised(p.communicate, p, "x"))
      local q = loom.create_subprocess_exec("cat", { stdin = PIPE })
      assert.are.equal("bad argument #1 to 'communicate' (string expected, got number)",
        H.raised(q.communicate, q, 5))
      q:communicate()
      p:wait()
    end)
  end)

  it("is cancelled with its task: the readers and the writer stop", function()
    run(function()
      local p = loom.create_subprocess_exec("sleep", "30", { stdin = PIPE, stdout = PIPE })
      local e = H.raised(loom.wait_for, function() return p:communicate("x") end, 0.1)
      assert.is_true(loom.TimeoutError:is(e))
      assert.is_nil(p.returncode)
      p:kill()
      assert.are.equal(-9, p:wait())
    end)
  end)
end)

describe("signals", function()
  it("wait_for times out on a child that never exits; kill gives -9", function()
    run(function()
      local p = loom.create_subprocess_exec("sleep", "30")
      local e = H.raised(loom.wait_for, function() return p:wait() end, 0.1)
      assert.is_true(loom.TimeoutError:is(e))
      assert.is_nil(p.returncode)
      p:kill()
      assert.are.equal(-9, p:wait())
    end)
  end)

  it("terminate() and send_signal by name or number", function()
    run(function()
      local p = loom.create_subprocess_exec("sleep", "30")
      p:terminate()
      assert.are.equal(-15, p:wait())
      p = loom.create_subprocess_exec("sleep", "30")
      p:send_signal("SIGINT")
      assert.are.equal(-2, p:wait())
      p = loom.create_subprocess_exec("sleep", "30")
      p:send_signal("usr1")
      assert.are.equal(-10, p:wait())
      p = loom.create_subprocess_exec("sleep", "30")
      p:send_signal(1)
      assert.are.equal(-1, p:wait())
    end)
  end)

  it("a signal the child handles does not end it", function()
    run(function()
      local p = loom.create_subprocess_shell(
        "trap 'echo got; exit 4' TERM; echo ready; while :; do sleep 0.01; done",
        { stdout = PIPE })
      assert.are.equal("ready\n", p.stdout:readline())
      p:send_signal("TERM")
      assert.are.equal("got\n", p.stdout:readline())
      assert.are.equal(4, p:wait())
    end)
  end)

  it("rejects bad signals and signals after the exit", function()
    run(function()
      local p = loom.create_subprocess_exec("sleep", "30")
      assert.are.equal("bad argument #1 to 'send_signal' (unknown signal name 'SIGNOPE')",
        H.raised(p.send_signal, p, "SIGNOPE"))
      H.contains("invalid signal number", H.raised(p.send_signal, p, 0))
      H.contains("signal number or name expected",
        H.raised(p.send_signal, p, {}))
      p:kill()
      p:wait()
      local e = H.raised(p.kill, p)
      assert.are.equal("ESRCH", e.code)
      assert.are.equal("ESRCH", H.raised(p.send_signal, p, "TERM").code)
    end)
  end)
end)

describe("subprocess errors", function()
  it("raises OSError ENOENT from create_subprocess_exec for a missing program", function()
    run(function()
      loom.create_subprocess_exec("true", { stdout = PIPE }):communicate()
      local before = nfds()
      local e = H.raised(loom.create_subprocess_exec, "loom-no-such-program-xyz",
        { stdin = PIPE, stdout = PIPE, stderr = PIPE })
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("ENOENT", e.code)
      H.contains("loom-no-such-program-xyz", tostring(e))
      loom.sleep(0.01)                       -- the pipes' close callbacks
      assert.are.equal(before, nfds())
      e = H.raised(loom.create_subprocess_exec, "/etc/passwd")
      assert.are.equal("EACCES", e.code)
    end)
  end)

  it("raises OSError naming a cwd that does not exist", function()
    run(function()
      local e = H.raised(loom.create_subprocess_exec, "true",
        { cwd = "/nonexistent/loom-dir" })
      assert.are.equal("ENOENT", e.code)
      H.contains("cwd '/nonexistent/loom-dir'", tostring(e))
      e = H.raised(loom.create_subprocess_shell, "true", { cwd = "/etc/passwd" })
      assert.are.equal("ENOTDIR", e.code)
    end)
  end)

  it("rejects embedded NUL bytes, never truncating", function()
    run(function()
      local function err(...) return H.raised(loom.create_subprocess_exec, ...) end
      assert.are.equal("bad argument #1 to 'create_subprocess_exec' (program contains a NUL byte)",
        err("true\0x"))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (argument contains a NUL byte)",
        err("echo", "a\0b"))
      assert.are.equal("bad argument #1 to 'create_subprocess_shell' (command contains a NUL byte)",
        H.raised(loom.create_subprocess_shell, "true\0; false"))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.cwd contains a NUL byte)",
        err("true", { cwd = "/tmp\0/x" }))
      H.contains("opts.env name 'A' is empty or contains '=' or a NUL byte",
        err("true", { env = { ["A\0B"] = "x" } }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.env value of 'A' "
        .. "contains a NUL byte)", err("true", { env = { A = "x\0y" } }))
      H.contains("opts.env name 'A=B' is empty or contains '='",
        err("true", { env = { ["A=B"] = "x" } }))
    end)
  end)

  it("rejects bad options naming the function", function()
    run(function()
      local function err(...) return H.raised(loom.create_subprocess_exec, ...) end
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.stdin must be "
        .. "loom.PIPE, loom.DEVNULL or nil)", err("true", { stdin = "pipe" }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.stdout must be "
        .. "loom.PIPE, loom.DEVNULL or nil)", err("true", { stdout = STDOUT }))
      assert.are.equal("bad argument #3 to 'create_subprocess_exec' (opts.stderr must be "
        .. "loom.PIPE, loom.DEVNULL, loom.STDOUT or nil)", err("echo", "x", { stderr = true }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (unknown option 'stdot')",
        err("true", { stdot = PIPE }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.cwd must be a "
        .. "string, got number)", err("true", { cwd = 1 }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.env must be a "
        .. "table, got string)", err("true", { env = "A=1" }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.env value of 'A' "
        .. "must be a string, got boolean)", err("true", { env = { A = true } }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (opts.env names must be "
        .. "strings)", err("true", { env = { "x" } }))
      assert.are.equal("bad argument #2 to 'create_subprocess_exec' (limit must be a "
        .. "positive integer, got 0)", err("true", { limit = 0 }))
      assert.are.equal("bad argument #1 to 'create_subprocess_exec' (string expected, "
        .. "got no value)", err())
      assert.are.equal("bad argument #2 to 'create_subprocess_shell' (opts.stdin must be "
        .. "loom.PIPE, loom.DEVNULL or nil)",
        H.raised(loom.create_subprocess_shell, "true", { stdin = 0 }))
    end)
  end)

  it("needs a running loop", function()
    H.contains("create_subprocess_exec: no running event loop",
      H.raised(loom.create_subprocess_exec, "true"))
    H.contains("create_subprocess_shell: no running event loop",
      H.raised(loom.create_subprocess_shell, "true"))
  end)
end)

describe("subprocess faults", function()
  it("a child that closes its pipes early: EOF at once, exit later", function()
    run(function(loop)
      local p = loom.create_subprocess_shell("exec >&- 2>&-; sleep 0.2; exit 3",
        { stdout = PIPE, stderr = PIPE })
      local t0 = loop:time()
      assert.are.equal("", p.stdout:read())
      assert.are.equal("", p.stderr:read())
      assert.is_nil(p.returncode)
      assert.is_true(loop:time() - t0 < 0.15)
      assert.are.equal(3, p:wait())
      assert.is_true(loop:time() - t0 >= 0.15)
    end)
  end)

  it("wait returns at the exit even when a grandchild keeps the pipe open", function()
    run(function()
      local p = loom.create_subprocess_shell("sleep 0.5 & echo started",
        { stdout = PIPE })
      assert.are.equal("started\n", p.stdout:readline())
      assert.are.equal(0, p:wait())
      assert.are.equal("", p.stdout:read())  -- EOF when the grandchild ends
    end)
  end)

  -- Under the sanitizers, after the rest of the suite, the process is
  -- large (its heap, ASan's shadow memory and quarantine) and each fork
  -- copies its page tables (some 70 ms a fork): there 200 processes, not
  -- 2000.
  local NPROC = os.getenv("ASAN_OPTIONS") and 200 or 2000

  it(("runs %d short processes, 50 at a time, leaking no descriptor and no zombie")
      :format(NPROC), function()
    local before = nfds()
    run_closed(function()
      local sem = loom.Semaphore(50)
      local codes, running, most = {}, 0, 0
      loom.task_group(function(tg)
        for i = 1, NPROC do
          sem:acquire()
          tg:create_task(function()
            running = running + 1
            if running > most then most = running end
            local p = loom.create_subprocess_exec("true",
              i % 2 == 0 and { stdout = PIPE } or nil)
            codes[i] = p:wait()
            if p.stdout then p.stdout:read() end
            running = running - 1
            sem:release()
          end)
        end
      end)
      assert.are.equal(NPROC, #codes)
      for i = 1, NPROC do assert.are.equal(0, codes[i]) end
      assert.is_true(most <= 50 and most > 1)
      loom.sleep(0.05)
    end, 120)
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, nfds())
    assert.are.equal(0, zombies())
  end)

  it("a Process collected while its child runs: the child runs on and is reaped", function()
    local before = nfds()
    local pid
    local weak = setmetatable({}, { __mode = "v" })
    run_closed(function()
      do
        local p = loom.create_subprocess_shell("sleep 0.2; echo bye",
          { stdin = PIPE, stdout = PIPE })
        pid = p.pid
        weak.p, weak.t = p, p._transport
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak.p)                  -- the Process is gone
      assert.is_not_nil(weak.t)              -- its transport is kept
      assert.is_not_nil(state(pid))          -- the child runs on
      wait_until(function()
        collectgarbage()
        return weak.t == nil
      end, "the transport to be collected")
      assert.is_nil(state(pid))
    end)
    assert.are.equal(before, nfds())
  end)

  it("<close> closes the pipes and kills the child, reaped in the background", function()
    run(function()
      local pid, t
      do
        local p <close> = loom.create_subprocess_exec("sleep", "30",
          { stdin = PIPE, stdout = PIPE })
        pid, t = p.pid, p._transport
      end
      assert.is_true(t:is_closing())
      assert.is_true(t:get_pipe_transport(0):is_closing())
      wait_until(function() return t:get_returncode() ~= nil end, "the exit")
      assert.are.equal(-9, t:get_returncode())
      assert.is_nil(state(pid))
    end)
  end)

  it("closing the loop while a child runs: no Lua called, child killed and reaped", function()
    local before = nfds()
    local loop = H.loop { virtual_time = false }
    local calls = 0
    local p = recorder()
    local pid
    loop:run_until_complete(function()
      local t = loop:subprocess_exec(function() return p end, "sh", "-c",
        "echo hi; exec sleep 30", { stdin = PIPE, stdout = PIPE, stderr = PIPE })
      pid = t:get_pid()
      wait_until(function() return #p.out[1] > 0 end, "output")
      -- a Process too, with a task waiting for it
      local q = loom.create_subprocess_exec("sleep", "30", { stdout = PIPE })
      loop:create_task(function() q:wait() end)
      loom.sleep(0.01)
    end)
    local n = #p.trace
    for _, k in ipairs { "pipe_data_received", "pipe_connection_lost",
                         "process_exited", "connection_lost" } do
      p[k] = function() calls = calls + 1 end
    end
    loop:close()
    assert.are.equal(0, calls)
    assert.are.equal(n, #p.trace)
    assert.are.equal(0, core._orphans())
    assert.is_nil(state(pid))
    assert.are.equal(0, zombies())
    collectgarbage()
    assert.are.equal(before, nfds())
  end)

  it("a loop collected with a child running kills it too", function()
    local before = nfds()
    local pid
    do
      local loop = loom.new_event_loop()
      loop:run_until_complete(function()
        local p = loom.create_subprocess_exec("sleep", "30")
        pid = p.pid
      end)
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(0, core._orphans())
    assert.is_nil(state(pid))
    assert.are.equal(before, nfds())
  end)

  it("a loop dropped without close() with the child's pipes open is collected", function()
    local before = nfds()
    local pid
    H.drop_loop(function(_, keep)
      local p = loom.create_subprocess_exec("sleep", "30",
        { stdin = loom.PIPE, stdout = loom.PIPE, stderr = loom.PIPE })
      pid = p.pid
      keep[p], keep[p.stdin], keep[p.stdout] = "process", "stdin", "stdout"
    end)
    assert.are.equal(0, core._orphans())
    assert.is_nil(state(pid))
    assert.are.equal(before, nfds())
  end)
end)
