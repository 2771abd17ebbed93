-- helper.lua: shared by the specs (require "helper").
--
-- H.setup() installs, for the spec file that calls it at its top level, an
-- after_each that
--   (a) closes every loop made through H.loop() (running it until idle
--       first, when asked),
--   (b) asserts that every H.expect(fn, n) wrapper ran exactly n times,
--   (c) collects garbage twice and checks that no registry reference
--       leaked, and that closed loops hold no pins or tasks.
-- Loops are virtual-time by default, so timer-heavy specs take no real
-- time: pass {virtual_time = false} for a real clock.

local loom = require "loom"
local assert = require "luassert"

local H = {}

H.mode = os.getenv("LOOM_TEST_MODE") or "module"

local loops, expects = {}, {}

-- Number of live integer-keyed entries in the registry (luaL_ref slots).
local function registry_refs()
  local reg, n = debug.getregistry(), 0
  for k, v in pairs(reg) do
    if math.type(k) == "integer" and k > 2 and type(v) ~= "number" then
      n = n + 1
    end
  end
  return n
end

-- A new loop, closed (and checked) after the test.
function H.loop(opts)
  opts = opts or {}
  if opts.virtual_time == nil then opts.virtual_time = true end
  local loop = loom.new_event_loop(opts)
  loops[#loops + 1] = loop
  return loop
end

-- Runs fn(...) as a task on a new loop until it completes; returns its
-- results, raises its error. The loop is closed by the after_each.
function H.run(fn, ...)
  local loop = H.loop()
  return loop:run_until_complete(fn, ...)
end

-- A new loop on the real clock (for sockets, processes, threads).
function H.rtloop()
  return H.loop{virtual_time = false}
end

-- Runs fn as a task on loop with a guard: the task is cancelled with
-- TimeoutError after secs seconds (default 10).
function H.run_task(loop, fn, secs)
  return loop:run_until_complete(function()
    return loom.wait_for(loom.create_task(fn), secs or 10)
  end)
end

-- The port of a server's first listening socket.
function H.port_of(server) return server:sockets()[1].port end

-- Wraps fn; the after_each asserts the wrapper ran exactly n times.
function H.expect(fn, n)
  local e = { calls = 0, n = n, where = debug.traceback("", 2) }
  expects[#expects + 1] = e
  return function(...)
    e.calls = e.calls + 1
    if fn then return fn(...) end
  end
end

-- Collects the contexts passed to the loop's exception handler.
function H.capture(loop)
  local got = {}
  loop:set_exception_handler(function(_, ctx) got[#got + 1] = ctx end)
  return got
end

-- Appends what it is called with to a trace list: H.tracer() -> list, add.
function H.tracer()
  local trace = {}
  return trace, function(s) trace[#trace + 1] = s end
end

-- The error value fn(...) raises; fails when it does not raise.
function H.raised(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

-- Asserts that string s contains needle (plain).
function H.contains(needle, s)
  assert(type(s) == "string", ("expected a string containing %q, got %s")
    :format(needle, tostring(s)))
  assert(s:find(needle, 1, true), ("expected %q in %q"):format(needle, s))
end

-- The line where function fn is defined.
function H.line(fn)
  return debug.getinfo(fn, "S").linedefined
end

-- Runs fn with io.stderr replaced by a buffer; returns what was written.
function H.capture_stderr(fn)
  local buf, real = {}, io.stderr
  io.stderr = {
    write = function(self, ...)
      for i = 1, select("#", ...) do buf[#buf + 1] = tostring((select(i, ...))) end
      return self
    end,
    flush = function(self) return self end,
  }
  local ok, err = pcall(fn)
  io.stderr = real
  if not ok then error(err, 0) end
  return table.concat(buf)
end

-- The contexts in got (from H.capture) whose message is msg.
function H.reports(got, msg)
  local r = {}
  for _, ctx in ipairs(got) do
    if ctx.message == msg then r[#r + 1] = ctx end
  end
  return r
end

-- The whole content of the file at path.
function H.readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- Writes s as the whole content of the file at path.
function H.writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- n bytes of a pattern that does not repeat every power of two (a
-- different one for each seed, 7 by default).
function H.pattern(n, seed)
  local s, x = {}, seed or 7
  for i = 1, 251 do
    x = (x * 1103515245 + 12345) % 2147483648
    s[i] = string.char(x % 256)
  end
  local block = table.concat(s)
  return block:rep(n // #block + 1):sub(1, n)
end

-- Runs a shell command with the sanitizer runtime (preloaded into the
-- interpreter under the asan-module run) left out; returns os.execute's
-- results.
function H.sh(cmd)
  return os.execute("unset LD_PRELOAD; " .. cmd)
end

-- Runs fn(loop, keep) as the main task of a new loop, then drops the
-- loop without closing it and collects. keep is a weak-keyed table: fn
-- puts there what must go with the loop, as keep[obj] = "what it is".
-- Fails naming what survived; returns what the collection wrote on
-- stderr (tasks collected pending say so).
function H.drop_loop(fn)
  local keep = setmetatable({}, { __mode = "k" })
  do
    local loop = loom.new_event_loop()
    keep[loop] = "loop"
    loop:run_until_complete(fn, loop, keep)
  end
  local said = H.capture_stderr(function()
    collectgarbage(); collectgarbage(); collectgarbage()
  end)
  local left = {}
  for _, what in pairs(keep) do left[#left + 1] = what end
  table.sort(left)
  assert.are.same({}, left)
  return said
end

-- Polls pred() until it returns a true value, and returns that value;
-- fails after secs seconds (default 30), naming what was awaited. This is
-- for conditions that other processes, threads or the kernel bring about:
-- a test waits for the condition itself, never for a fixed time, and the
-- deadline is generous, since the specs also run under ASan on a loaded
-- machine. Inside a task it sleeps on the running loop between polls
-- (the loop goes on); outside, it blocks in a 50 ms sleep.
function H.wait_until(pred, secs, what)
  local ok, task = pcall(loom.current_task)   -- raises with no running loop
  local in_task = ok and task ~= nil
  local deadline = os.time() + (secs or 30) + 1   -- os.time has whole seconds
  while true do
    local v = pred()
    if v then return v end
    if os.time() > deadline then
      error(("timed out after %s s waiting for %s")
        :format(secs or 30, what or "a condition"), 2)
    end
    if in_task then loom.sleep(0.01) else H.sh("sleep 0.05") end
  end
end

-- Runs the loop until n (default 1) sleep(0) steps of a helper task are
-- done.
function H.spin(loop, n)
  loop:run_until_complete(function()
    for _ = 1, n or 1 do loom.sleep(0) end
  end)
end

local baseline

function H.setup()
  local busted = require "busted"
  local before_each, after_each = busted.before_each, busted.after_each
  before_each(function()
    collectgarbage()
    collectgarbage()
    baseline = registry_refs()
  end)
  after_each(function()
    local ls = loops
    loops = {}
    for _, loop in ipairs(ls) do
      if not loop:is_closed() then
        assert(not loop:is_running(), "a loop is still running after the test")
        loop:close()
      end
      local c = loop:_counts()
      assert.are.equal(0, c.ready, "ready entries left in a closed loop")
      assert.are.equal(0, c.timers, "timers left in a closed loop")
      assert.are.equal(0, c.pins, "pins left in a closed loop")
    end
    local es = expects
    expects = {}
    for _, e in ipairs(es) do
      if e.calls ~= e.n then
        error(("expected %d call(s), got %d%s"):format(e.n, e.calls, e.where), 0)
      end
    end
    ls = nil
    collectgarbage()
    collectgarbage()
    local now = registry_refs()
    assert(now <= baseline, ("registry references leaked: %d before, %d after")
      :format(baseline, now))
  end)
end

return H
