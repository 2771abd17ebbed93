-- loop_spec.lua - the event loop (host/loop.c, loom.run in lua/loom/init.lua):
-- creation, the current and running loop, run_forever/stop,
-- run_until_complete, closing, the clock and virtual time, the exception
-- handler, debug mode, the task factory, loom.run and the GC of loops.
--
-- Ordering specs compare traces with what asyncio does; each expected
-- trace is asyncio's (checked against CPython 3.11's _run_once).
--
-- Regression tests carry a tag naming the bug they guard against.

local H = require "helper"
local loom = require "loom"
H.setup()

local errof, contains, line, capture_stderr = H.raised, H.contains, H.line, H.capture_stderr

-- A real-time loop used only as a wall clock.
local function wall()
  return H.loop { virtual_time = false }
end

-- Runs Lua code in a child process (the same interpreter and loom as this
-- run; under the sanitizers, with the same runtime preloaded) and returns
-- its stdout and stderr together. Bounded by `timeout`.
local function child(code)
  local interp = "lua5.4"
  if H.mode == "exe" then
    interp = "'" .. assert(os.getenv("LOOM_EXE")) .. "' --plain"
  end
  local preload = os.getenv("LD_PRELOAD")
  if preload and preload ~= "" then
    interp = "env LD_PRELOAD='" .. preload .. "' " .. interp
  end
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen("unset LD_PRELOAD; timeout -s KILL 20 " .. interp
    .. " '" .. path .. "' 2>&1", "r"))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

describe("new_event_loop", function()
  it("makes a new, idle, open loop each time", function()
    local a, b = H.loop(), H.loop()
    assert.are_not.equal(a, b)
    assert.is_false(a:is_running())
    assert.is_false(a:is_closed())
    assert.matches("^loom%.Loop", tostring(a))
    assert.matches("virtual time", tostring(a))
    assert.is_nil(tostring(wall()):find("virtual", 1, true))
  end)

  it("accepts no options", function()
    local loop = loom.new_event_loop()
    assert.is_false(loop:is_closed())
    loop:close()
  end)

  it("rejects options that are not a table", function()
    assert.are.equal("bad argument #1 to 'new_event_loop' (table expected, got number)",
      errof(loom.new_event_loop, 5):match("bad argument.*"))
  end)

  it("rejects an unknown option and a bad virtual_time, at the caller's line", function()
    local err = H.raised
    assert.matches("^[^:]*loop_spec%.lua:%d+: bad argument #1 to 'new_event_loop' "
      .. "%(unknown option 'virtual'%)",
      err(function() loom.new_event_loop { virtual = true } end))
    assert.matches("^[^:]*loop_spec%.lua:%d+: bad argument #1 to 'new_event_loop' "
      .. "%(virtual_time must be true, false or \"manual\"%)",
      err(function() loom.new_event_loop { virtual_time = "" } end))
  end)

  it("loom.Future([loop]) checks its loop", function()
    local err = H.raised
    local here = "^[^:]*loop_spec%.lua:%d+: "
    assert.matches(here .. "bad argument #1 to 'Future' %(loom.Loop expected, got boolean%)",
      err(function() loom.Future(true) end))
    assert.matches(here .. "Future: no running event loop",
      err(function() loom.Future() end))
    local closed = loom.new_event_loop()
    closed:close()
    assert.matches(here .. "Future: event loop is closed",
      err(function() loom.Future(closed) end))
    local loop = H.loop()
    assert.are.equal(loop, loom.Future(loop):get_loop())
  end)

  it("takes opts.debug", function()
    assert.is_true(H.loop { debug = true }:get_debug())
    assert.is_false(H.loop():get_debug())
  end)
end)

describe("current and running loop", function()
  after_each(function() loom.set_event_loop(nil) end)

  it("get_running_loop raises outside a running loop", function()
    contains("no running event loop", errof(loom.get_running_loop))
  end)

  it("get_running_loop returns the loop inside a callback and a task", function()
    local loop = H.loop()
    local seen = {}
    loop:call_soon(function() seen[#seen + 1] = loom.get_running_loop() end)
    loop:run_until_complete(function() seen[#seen + 1] = loom.get_running_loop() end)
    assert.are.equal(2, #seen)
    assert.are.equal(loop, seen[1])
    assert.are.equal(loop, seen[2])
    contains("no running event loop", errof(loom.get_running_loop))
  end)

  it("set_event_loop / get_event_loop", function()
    local loop = H.loop()
    loom.set_event_loop(loop)
    assert.are.equal(loop, loom.get_event_loop())
    assert.are.equal(loop, loom.get_event_loop())
  end)

  it("get_event_loop returns the running loop over the one set", function()
    local set, running = H.loop(), H.loop()
    loom.set_event_loop(set)
    local got
    running:call_soon(function() got = loom.get_event_loop() end)
    running:call_soon(function() running:stop() end)
    running:run_forever()
    assert.are.equal(running, got)
    assert.are.equal(set, loom.get_event_loop())
  end)

  it("get_event_loop makes a loop when none is set, and a new one once it is closed", function()
    loom.set_event_loop(nil)
    local a = loom.get_event_loop()
    assert.matches("^loom%.Loop", tostring(a))
    assert.are.equal(a, loom.get_event_loop())
    a:close()
    local b = loom.get_event_loop()
    assert.are_not.equal(a, b)
    assert.is_false(b:is_closed())
    b:close()
  end)

  it("set_event_loop rejects what is not a loop", function()
    contains("bad argument #1 to 'set_event_loop' (loom.Loop expected, got number)",
      errof(loom.set_event_loop, 5))
    contains("bad argument #1 to 'set_event_loop'", errof(loom.set_event_loop, {}))
  end)
end)

describe("run_forever and stop", function()
  it("stop from a callback finishes the current iteration only", function()
    -- asyncio: a b c | d   (d was scheduled during the stopping iteration)
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_soon(function()
      add "a"
      loop:call_soon(function() add "d" end)
    end)
    loop:call_soon(function() add "b"; loop:stop() end)
    loop:call_soon(function() add "c" end)
    loop:run_forever()
    add "|"
    assert.is_false(loop:is_running())
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
    assert.are.same({ "a", "b", "c", "|", "d" }, trace)
  end)

  it("stop before run_forever runs exactly one iteration", function()
    -- asyncio: a | b
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:stop()
    loop:call_soon(function()
      add "a"
      loop:call_soon(function() add "b" end)
    end)
    loop:run_forever()
    add "|"
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
    assert.are.same({ "a", "|", "b" }, trace)
  end)

  it("stop from a timer lets the timers due with it run", function()
    -- asyncio: t1 t2   (t3 is scheduled during the stopping iteration)
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_later(1, function()
      add "t1"
      loop:stop()
      loop:call_later(0, function() add "t3" end)
    end)
    loop:call_later(1, function() add "t2" end)
    loop:run_forever()
    assert.are.same({ "t1", "t2" }, trace)
    assert.are.equal(1, loop:_counts().timers)
  end)

  it("is_running is true only while it runs", function()
    local loop = H.loop()
    local inside
    loop:call_soon(function() inside = loop:is_running(); loop:stop() end)
    assert.is_false(loop:is_running())
    loop:run_forever()
    assert.is_true(inside)
    assert.is_false(loop:is_running())
  end)

  it("stopping twice is harmless and the loop runs again afterwards", function()
    local loop = H.loop()
    local n = 0
    for _ = 1, 3 do
      loop:call_soon(function() n = n + 1; loop:stop(); loop:stop() end)
      loop:run_forever()
    end
    assert.are.equal(3, n)
  end)

  it("#stop-last-raises a callback that raises last in the stopping iteration does not make run_forever raise", function()
    -- asyncio: the error goes to the exception handler, run_forever returns
    local loop = H.loop()
    local got = H.capture(loop)
    loop:call_soon(function() loop:stop() end)
    loop:call_soon(function() error("last", 0) end)
    local ok, err = pcall(loop.run_forever, loop)
    assert.is_true(ok, tostring(err))
    assert.are.equal(1, #got)
    assert.are.equal("last", got[1].exception)
  end)
end)

describe("run_until_complete", function()
  it("runs a future to completion and returns all its results", function()
    local loop = H.loop()
    local fut = loop:create_future()
    loop:call_later(5, function() fut:set_result(1, nil, "three") end)
    local r = table.pack(loop:run_until_complete(fut))
    assert.are.same({ n = 3, 1, nil, "three" }, r)
    assert.are.equal(5, loop:time())
    assert.is_false(loop:is_running())
  end)

  it("runs a function with arguments as a task and returns its results", function()
    local loop = H.loop()
    local r = table.pack(loop:run_until_complete(function(a, b, c)
      assert.is_nil(b)
      return a + c, a * c, nil, "x"
    end, 2, nil, 3))
    assert.are.same({ n = 4, 5, 6, nil, "x" }, r)
  end)

  it("returns at once for a future already done", function()
    local loop = H.loop()
    local fut = loop:create_future()
    fut:set_result("done")
    assert.are.equal("done", loop:run_until_complete(fut))
  end)

  it("raises the task's error unchanged (same value)", function()
    local loop = H.loop()
    local E = loom.TimeoutError("late")
    assert.are.equal(E, errof(loop.run_until_complete, loop, function() error(E) end))
    local plain = { code = 7 }
    assert.are.equal(plain, errof(loop.run_until_complete, loop, function() error(plain) end))
  end)

  it("raises when the loop is stopped before the future is done", function()
    -- asyncio: RuntimeError('Event loop stopped before Future completed.')
    local loop = H.loop()
    local fut = loop:create_future()
    loop:call_soon(function() loop:stop() end)
    contains("stopped before the future completed",
      errof(loop.run_until_complete, loop, fut))
    -- the loop did not keep a stale stop callback on the future
    fut:set_result(1)
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
  end)

  it("rejects what is neither a future nor a function", function()
    local loop = H.loop()
    contains("bad argument #1 to 'run_until_complete' (future or function expected, got number)",
      errof(function() loop:run_until_complete(42) end))
  end)

  it("rejects a future of another loop", function()
    local loop, other = H.loop(), H.loop()
    contains("different loop",
      errof(loop.run_until_complete, loop, other:create_future()))
  end)

  it("#late-error returns the result when a callback raises after the future is done", function()
    -- asyncio: returns 1; the error goes to the exception handler
    local loop = H.loop()
    local got = H.capture(loop)
    local fut = loop:create_future()
    loop:call_soon(function()
      fut:set_result(1)
      loop:call_soon(function() error("late", 0) end)
    end)
    local r = table.pack(pcall(loop.run_until_complete, loop, fut))
    assert.are.same({ n = 2, true, 1 }, r)
    assert.are.equal(1, #got)
    assert.are.equal("late", got[1].exception)
  end)
end)

describe("close", function()
  it("is idempotent", function()
    local loop = H.loop()
    loop:call_soon(function() end)
    loop:call_later(10, function() end)
    loop:close()
    assert.is_true(loop:is_closed())
    loop:close()
    assert.is_true(loop:is_closed())
    assert.are.same(0, loop:_counts().ready)
    assert.are.same(0, loop:_counts().timers)
  end)

  it("is an error while the loop runs", function()
    local loop = H.loop()
    local err
    loop:call_soon(function()
      err = select(2, pcall(loop.close, loop))
      loop:stop()
    end)
    loop:run_forever()
    contains("close: cannot close a running event loop", err)
    assert.is_false(loop:is_closed())
  end)

  it("makes the methods of a closed loop raise errors naming them", function()
    local loop = H.loop()
    loop:close()
    local f = function() end
    local calls = {
      call_soon = function() return loop:call_soon(f) end,
      call_later = function() return loop:call_later(1, f) end,
      call_at = function() return loop:call_at(1, f) end,
      create_future = function() return loop:create_future() end,
      create_task = function() return loop:create_task(f) end,
      run_forever = function() return loop:run_forever() end,
      run_until_complete = function() return loop:run_until_complete(f) end,
    }
    for name, call in pairs(calls) do
      contains(name .. ": event loop is closed", errof(call))
    end
  end)

  it("leaves the closed loop's cheap queries working", function()
    local loop = H.loop()
    loop:close()
    assert.is_false(loop:is_running())
    assert.is_number(loop:time())
    assert.matches("closed", tostring(loop))
    loop:stop()
  end)
end)

describe("nested loops", function()
  it("running the running loop again is an error and does not break it", function()
    -- asyncio: RuntimeError('This event loop is already running')
    local loop = H.loop()
    local errs = {}
    loop:call_soon(function()
      errs[1] = select(2, pcall(loop.run_forever, loop))
      errs[2] = select(2, pcall(loop.run_until_complete, loop, loop:create_future()))
      errs[3] = select(2, pcall(loop.run_until_complete, loop, function() end))
    end)
    local after = H.expect(function() loop:stop() end, 1)
    loop:call_soon(after)
    loop:run_forever()
    contains("run_forever: this event loop is already running", errs[1])
    contains("run_until_complete: this event loop is already running", errs[2])
    contains("run_until_complete: this event loop is already running", errs[3])
    assert.are.equal(0, loop:_counts().ready)
  end)

  it("running another loop inside a running loop is an error", function()
    -- asyncio: RuntimeError('Cannot run the event loop while another loop is running')
    local loop, other = H.loop(), H.loop()
    local errs, running = {}, nil
    loop:call_soon(function()
      errs[1] = select(2, pcall(other.run_forever, other))
      errs[2] = select(2, pcall(other.run_until_complete, other, function() end))
      running = loom.get_running_loop()
      loop:stop()
    end)
    loop:run_forever()
    contains("run_forever: cannot run the event loop while another loop is running", errs[1])
    contains("run_until_complete: cannot run the event loop while another loop is running",
      errs[2])
    assert.are.equal(loop, running)
    assert.is_false(other:is_running())
    -- the other loop still works once the first one is done
    assert.are.equal(7, other:run_until_complete(function() return 7 end))
  end)

  it("running another loop from inside a task is an error too", function()
    local loop, other = H.loop(), H.loop()
    local err = loop:run_until_complete(function()
      return select(2, pcall(other.run_until_complete, other, function() end))
    end)
    contains("cannot run the event loop while another loop is running", err)
  end)
end)

describe("time", function()
  it("is monotonic on a real-time loop", function()
    local loop = wall()
    local prev = loop:time()
    for _ = 1, 1000 do
      local t = loop:time()
      assert(t >= prev, "time went backwards")
      prev = t
    end
    local t0 = loop:time()
    while loop:time() - t0 < 0.002 do end
    assert.is_true(loop:time() > t0)
  end)

  it("does not move in virtual time unless the loop jumps", function()
    local loop = H.loop()
    local t0 = loop:time()
    local w, w0 = wall(), nil
    w0 = w:time()
    while w:time() - w0 < 0.002 do end
    assert.are.equal(t0, loop:time())
  end)

  it("virtual time: call_later(3600) completes at once, time advanced by exactly 3600", function()
    local loop = H.loop()
    local w = wall()
    local w0, t0 = w:time(), loop:time()
    local at
    loop:call_later(3600, H.expect(function() at = loop:time(); loop:stop() end, 1))
    loop:run_forever()
    assert.are.equal(t0 + 3600, at)
    assert.are.equal(t0 + 3600, loop:time())
    assert.is_true(w:time() - w0 < 0.5)
  end)

  it("virtual time: sleep(3600) in a task advances time by exactly 3600", function()
    local loop = H.loop()
    local t0 = loop:time()
    local t = loop:run_until_complete(function()
      loom.sleep(3600)
      return loop:time()
    end)
    assert.are.equal(t0 + 3600, t)
  end)

  it("virtual time never goes backwards for a call_at in the past", function()
    local loop = H.loop()
    loop:call_later(100, function()
      loop:call_at(10, H.expect(function() end, 1))
      loop:call_soon(function() loop:stop() end)
    end)
    loop:run_forever()
    assert.are.equal(100, loop:time())
  end)
end)

describe("virtual-time deadlock", function()
  it("run_forever with nothing to do raises a clear error instead of hanging", function()
    local loop = H.loop()
    contains("deadlock", errof(loop.run_forever, loop))
    assert.is_false(loop:is_running())
    -- the loop is still usable
    loop:call_soon(H.expect(function() loop:stop() end, 1))
    loop:run_forever()
  end)

  it("#ruc-error run_until_complete of a future nobody completes raises the deadlock error", function()
    local loop = H.loop()
    local err = errof(loop.run_until_complete, loop, loop:create_future())
    contains("deadlock", err)
    assert.is_false(loop:is_running())
  end)

  it("#ruc-error a task awaiting forever raises the deadlock error", function()
    local loop = H.loop()
    local fut = loop:create_future()
    local err = errof(loop.run_until_complete, loop, function() fut:await() end)
    contains("deadlock", err)
  end)

  it("only cancelled timers left is a deadlock too", function()
    local loop = H.loop()
    loop:call_later(5, H.expect(nil, 0)):cancel()
    contains("deadlock", errof(loop.run_forever, loop))
  end)
end)

describe("exception handler", function()
  it("set/get", function()
    local loop = H.loop()
    assert.is_nil(loop:get_exception_handler())
    local h = function() end
    loop:set_exception_handler(h)
    assert.are.equal(h, loop:get_exception_handler())
    local callable = setmetatable({}, { __call = function() end })
    loop:set_exception_handler(callable)
    assert.are.equal(callable, loop:get_exception_handler())
    loop:set_exception_handler(nil)
    assert.is_nil(loop:get_exception_handler())
    contains("bad argument #1 to 'set_exception_handler'",
      errof(function() loop:set_exception_handler(42) end))
  end)

  it("gets (loop, ctx) for a callback that raises, with message, exception, handle, traceback", function()
    local loop = H.loop()
    local args
    loop:set_exception_handler(function(...) args = table.pack(...) end)
    local E = loom.InvalidStateError("broken")
    local function cb() error(E) end
    local h = loop:call_soon(cb)
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
    assert.are.equal(2, args.n)
    assert.are.equal(loop, args[1])
    local ctx = args[2]
    assert.are.equal("Exception in callback " .. tostring(h), ctx.message)
    contains("Exception in callback <Handle ", ctx.message)
    contains("loop_spec.lua:" .. line(cb), ctx.message)
    assert.are.equal(E, ctx.exception)
    assert.are.equal(h, ctx.handle)
    contains("loop_spec.lua:" .. line(cb), ctx.traceback)
  end)

  it("keeps error values of every type", function()
    local loop = H.loop()
    local got = H.capture(loop)
    local plain = {}
    loop:call_soon(function() error("text", 0) end)
    loop:call_soon(function() error(plain) end)
    loop:call_soon(function() error(42) end)
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
    assert.are.equal(3, #got)
    assert.are.equal("text", got[1].exception)
    assert.are.equal(plain, got[2].exception)
    assert.are.equal(42, got[3].exception)
  end)

  it("a callback that raises does not stop the iteration", function()
    -- asyncio: a b | c   (b runs in the same iteration as the failing a)
    local loop = H.loop()
    local got = H.capture(loop)
    local trace, add = H.tracer()
    loop:call_soon(function()
      add "a"
      loop:call_soon(function() add "c" end)
      error("a failed", 0)
    end)
    loop:call_soon(function() add "b"; loop:stop() end)
    loop:run_forever()
    add "|"
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
    assert.are.same({ "a", "b", "|", "c" }, trace)
    assert.are.equal(1, #got)
  end)

  it("several failing callbacks in one iteration are each reported, in order", function()
    local loop = H.loop()
    local got = H.capture(loop)
    for i = 1, 5 do loop:call_soon(function() error(i) end) end
    loop:call_soon(H.expect(function() loop:stop() end, 1))
    loop:run_forever()
    assert.are.equal(5, #got)
    for i = 1, 5 do assert.are.equal(i, got[i].exception) end
  end)

  it("a failing timer callback is reported with its TimerHandle", function()
    local loop = H.loop()
    local got = H.capture(loop)
    local h = loop:call_later(2, function() error("tick", 0) end)
    loop:call_later(3, function() loop:stop() end)
    loop:run_forever()
    assert.are.equal(1, #got)
    assert.are.equal(h, got[1].handle)
    contains("Exception in callback <TimerHandle ", got[1].message)
  end)

  it("#handler-raises a handler that raises is reported by the default handler and the loop goes on", function()
    -- asyncio: logs 'Unhandled error in exception handler' with the
    -- handler's exception and the original context; the loop goes on.
    -- In a child process: when this fails, the loop can be left marked
    -- running, which would break every later spec of this process.
    local out = child [[
      local loom = require "loom"
      local loop = loom.new_event_loop { virtual_time = true }
      loop:set_exception_handler(function() error("handler broke", 0) end)
      local trace = {}
      loop:call_soon(function() trace[#trace + 1] = "a"; error("cb broke", 0) end)
      loop:call_soon(function() trace[#trace + 1] = "b" end)
      loop:call_soon(function() trace[#trace + 1] = "c"; loop:stop() end)
      local ok, err = pcall(loop.run_forever, loop)
      io.stdout:write("run_forever: ", tostring(ok), " ", tostring(err), "\n")
      io.stdout:write("trace: ", table.concat(trace, " "), "\n")
      io.stdout:write("running: ", tostring(loop:is_running()), "\n")
      local other = loom.new_event_loop { virtual_time = true }
      ok, err = pcall(other.run_until_complete, other, function() return "other ran" end)
      io.stdout:write("other: ", tostring(err), "\n")
    ]]
    contains("run_forever: true nil\n", out)
    contains("trace: a b c\n", out)
    contains("running: false\n", out)
    contains("other: other ran\n", out)
    contains("Unhandled error in exception handler", out)
    contains("handler broke", out)
  end)

  it("#handler-raises call_exception_handler does not raise when the handler does", function()
    local loop = H.loop()
    loop:set_exception_handler(function() error("handler broke", 0) end)
    local out = capture_stderr(function()
      local ok, err = pcall(loop.call_exception_handler, loop, { message = "m" })
      assert(ok, tostring(err))
    end)
    contains("Unhandled error in exception handler", out)
    contains("handler broke", out)
  end)

  it("call_exception_handler passes (loop, ctx) to the handler", function()
    local loop = H.loop()
    local args
    loop:set_exception_handler(function(...) args = table.pack(...) end)
    local ctx = { message = "hello" }
    loop:call_exception_handler(ctx)
    assert.are.equal(2, args.n)
    assert.are.equal(loop, args[1])
    assert.are.equal(ctx, args[2])
    contains("bad argument #1 to 'call_exception_handler' (table expected, got number)",
      errof(function() loop:call_exception_handler(3) end))
  end)

  it("without a handler, call_exception_handler uses the default one (stderr)", function()
    local loop = H.loop()
    local out = capture_stderr(function()
      loop:call_exception_handler { message = "something odd", exception = "boom", extra = 5 }
    end)
    contains("something odd", out)
    contains("boom", out)
    contains("extra: 5", out)
  end)

  it("default_exception_handler writes message, fields, error and traceback to io.stderr", function()
    local loop = H.loop()
    local out = capture_stderr(function()
      loop:default_exception_handler {
        message = "msg here",
        exception = loom.TimeoutError("too slow"),
        traceback = "stack traceback:\n\tsomewhere",
        zeta = "z",
      }
    end)
    assert.are.equal(1, select(2, out:gsub("msg here", "")))
    contains("zeta: z", out)
    contains("TimeoutError: too slow", out)
    contains("stack traceback:\n\tsomewhere", out)
    assert.are.equal("\n", out:sub(-1))
    contains("bad argument #1 to 'default_exception_handler' (table expected, got number)",
      errof(function() loop:default_exception_handler(3) end))
  end)

  it("a failing callback without a handler goes to io.stderr", function()
    local loop = H.loop()
    local out = capture_stderr(function()
      loop:call_soon(function() error("to stderr", 0) end)
      loop:call_soon(function() loop:stop() end)
      loop:run_forever()
    end)
    contains("Exception in callback <Handle ", out)
    contains("to stderr", out)
  end)
end)

describe("debug mode", function()
  it("set_debug / get_debug", function()
    local loop = H.loop()
    assert.is_false(loop:get_debug())
    loop:set_debug(true)
    assert.is_true(loop:get_debug())
    loop:set_debug(false)
    assert.is_false(loop:get_debug())
  end)

  it("reports a slow callback through the exception handler", function()
    local loop = H.loop { virtual_time = false }
    loop:set_debug(true)
    assert.are.equal(0.01, loop:slow_callback_duration(0.01))
    assert.are.equal(0.01, loop:slow_callback_duration())
    local got = H.capture(loop)
    local function slow()
      local t0 = loop:time()
      while loop:time() - t0 < 0.05 do end
    end
    local h = loop:call_soon(slow)
    loop:call_soon(function() end)
    loop:call_soon(function() loop:stop() end)
    loop:run_forever()
    assert.are.equal(1, #got)
    contains("Executing", got[1].message)
    contains("loop_spec.lua:" .. line(slow), got[1].message)
    assert.are.equal(h, got[1].handle)
  end)

  it("reports nothing when debug is off", function()
    local loop = H.loop { virtual_time = false }
    loop:slow_callback_duration(0.001)
    local got = H.capture(loop)
    loop:call_soon(function()
      local t0 = loop:time()
      while loop:time() - t0 < 0.005 do end
      loop:stop()
    end)
    loop:run_forever()
    assert.are.equal(0, #got)
  end)

  it("slow_callback_duration rejects negative values", function()
    local loop = H.loop()
    contains("bad argument #1 to 'slow_callback_duration'",
      errof(function() loop:slow_callback_duration(-1) end))
  end)
end)

describe("task factory", function()
  -- Makes tasks with the factory off, so it does not call itself.
  local function plain_task(loop, factory, fn, ...)
    loop:set_task_factory(nil)
    local t = loop:create_task(fn, ...)
    loop:set_task_factory(factory)
    return t
  end

  it("set/get", function()
    local loop = H.loop()
    assert.is_nil(loop:get_task_factory())
    local f = function() end
    loop:set_task_factory(f)
    assert.are.equal(f, loop:get_task_factory())
    loop:set_task_factory(nil)
    assert.is_nil(loop:get_task_factory())
    contains("bad argument #1 to 'set_task_factory'",
      errof(function() loop:set_task_factory(5) end))
  end)

  it("receives (loop, fn, ...) from create_task, loom.create_task and run_until_complete", function()
    local loop = H.loop()
    local calls = {}
    local function factory(lp, fn, ...)
      calls[#calls + 1] = table.pack(lp, fn, ...)
      return plain_task(lp, factory, fn, ...)
    end
    loop:set_task_factory(factory)
    local function body(a, b, c) return a, b, c end
    local r = table.pack(loop:run_until_complete(function()
      local t1 = loop:create_task(body, 1, nil, 3)
      local t2 = loom.create_task(body, "x")
      return (t1:await()), (t2:await())
    end))
    assert.are.same({ n = 2, 1, "x" }, r)
    assert.are.equal(3, #calls)
    assert.are.equal(loop, calls[1][1])
    assert.are.equal(2, calls[1].n)          -- run_until_complete: no args
    assert.are.same({ n = 5, loop, body, 1, nil, 3 }, calls[2])
    assert.are.same({ n = 3, loop, body, "x" }, calls[3])
  end)
end)

describe("loom.run", function()
  after_each(function() loom.set_event_loop(nil) end)

  it("returns every result of the function", function()
    local r = table.pack(loom.run(function(a, b) return b, a, nil end, 1, 2))
    assert.are.same({ n = 3, 2, 1, nil }, r)
  end)

  it("raises the function's error unchanged", function()
    local E = loom.TimeoutError("t")
    assert.are.equal(E, errof(loom.run, function() error(E) end))
    local plain = {}
    assert.are.equal(plain, errof(loom.run, function() error(plain) end))
    assert.are.equal("as is", errof(loom.run, function() error("as is", 0) end))
  end)

  it("runs on a fresh loop that it closes afterwards", function()
    local loop = loom.run(function() return loom.get_running_loop() end)
    assert.is_true(loop:is_closed())
    local again = loom.run(function() return loom.get_running_loop() end)
    assert.are_not.equal(loop, again)
    contains("no running event loop", errof(loom.get_running_loop))
  end)

  it("cancels the tasks left over, like asyncio.run", function()
    local trace, add = H.tracer()
    local child
    local r = loom.run(function()
      child = loom.create_task(function()
        local ok, err = pcall(loom.sleep, 3600)
        add(ok and "woke" or tostring(err))
        error(err, 0)
      end)
      loom.sleep(0)
      return "main"
    end)
    assert.are.equal("main", r)
    assert.is_true(child:cancelled())
    assert.are.same({ "CancelledError" }, trace)
  end)

  it("cancels the tasks left over when the function raises", function()
    local child
    local err = errof(loom.run, function()
      child = loom.create_task(function() loom.sleep(3600) end)
      loom.sleep(0)
      error("main failed", 0)
    end)
    assert.are.equal("main failed", err)
    assert.is_true(child:cancelled())
  end)

  it("refuses to run inside a running loop", function()
    local loop = H.loop()
    local err = loop:run_until_complete(function()
      return select(2, pcall(loom.run, function() end))
    end)
    contains("run: cannot be called from a running event loop", err)
  end)

  it("rejects what is not a function", function()
    contains("bad argument #1 to 'run' (function expected, got number)", errof(loom.run, 5))
  end)
end)

describe("loops and the GC", function()
  it("a dropped loop with pending callbacks and timers is collected without a crash", function()
    local weak = setmetatable({}, { __mode = "v" })
    for i = 1, 10 do
      do
        local loop = loom.new_event_loop { virtual_time = i % 2 == 0 }
        local f = H.expect(nil, 0)
        loop:call_soon(f, i)
        loop:call_later(10, f)
        loop:call_at(1e9, f)
        loop:call_later(1, f):cancel()
        weak[i] = loop
      end
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
  end)

  it("a dropped loop that ran and stopped is collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local loop = loom.new_event_loop { virtual_time = true }
      local stop = function() loop:stop() end
      loop:call_later(1, stop)
      loop:run_forever()
      loop:call_soon(print)   -- left pending
      weak[1] = loop
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("#loop-cycle a dropped loop whose pending callback refers to it is collected", function()
    -- asyncio: the cycle loop -> ready queue -> handle -> closure -> loop
    -- is garbage and gets collected
    local weak = setmetatable({}, { __mode = "v" })
    do
      local loop = loom.new_event_loop { virtual_time = true }
      loop:call_soon(function() loop:stop() end)
      loop:call_later(5, function() loop:stop() end)
      weak[1] = loop
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("#loop-cycle a dropped loop with a pending task is collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local loop = loom.new_event_loop { virtual_time = true }
      loop:set_exception_handler(function() end)  -- "Task was destroyed ..."
      loop:create_task(function() end)
      weak[1] = loop
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)
end)

describe("the poll for I/O", function()
  -- A wait of 1 ms while a handle that never fires is alive (a listening
  -- socket): when libuv's clock (whole milliseconds) had reached the
  -- deadline before libuv polled, the wakeup timer was spent before the
  -- poll, which then waited with no limit. The window is narrow, so this makes many such
  -- waits; in a child, since a loop stuck in its poll runs no guard.
  it("ends at the next timer while a handle that never fires is alive", function()
    local out = child([[
      local loom = require "loom"
      local loop = loom.new_event_loop { virtual_time = false }
      loop:run_until_complete(function()
        local server = loom.start_server(function() end, "127.0.0.1", 0)
        for _ = 1, 2000 do loom.sleep(0.001) end
        server:close()
        server:wait_closed()
      end)
      loop:close()
      print("done")
    ]])
    assert.are.equal("done\n", out)
  end)
end)
