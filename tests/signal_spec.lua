-- signal_spec.lua: loop:add_signal_handler / remove_signal_handler
-- (host/signal.c). The process signals itself with the private
-- core._kill(core._getpid(), sig); real-time loops with a call_later guard,
-- so no test can hang. Only SIGUSR1 and SIGUSR2 are sent, and never after
-- the last handler for them was closed (their default action ends the
-- process).

local H = require "helper"
local loom = require "loom"
H.setup()

local core = loom._core

local function kill(sig)
  assert(core._kill(core._getpid(), sig))
end

-- Runs a real-time loop until done() is true or 5 s pass; asserts the
-- first.
local function run_until(loop, done)
  local guard = loop:call_later(5, function() loop:stop() end)
  local function check()
    if done() then loop:stop() else loop:call_later(0.001, check) end
  end
  loop:call_soon(check)
  loop:run_forever()
  guard:cancel()
  assert.is_true(done(), "the signal callback did not run in time")
end

describe("add_signal_handler", function()
  it("runs the callback with its arguments when the signal arrives", function()
    local loop = H.loop { virtual_time = false }
    local got
    loop:add_signal_handler("SIGUSR1", function(...)
      got = table.pack(...)
    end, "a", nil, 3)
    loop:call_soon(kill, "SIGUSR1")
    run_until(loop, function() return got ~= nil end)
    assert.are.same({ n = 3, "a", nil, 3 }, got)
    assert.is_true(loop:remove_signal_handler("SIGUSR1"))
  end)

  it("takes the signal by number", function()
    local loop = H.loop { virtual_time = false }
    local n = 0
    local usr1 = 10  -- Linux
    loop:add_signal_handler(usr1, function() n = n + 1 end)
    loop:call_soon(kill, usr1)
    run_until(loop, function() return n == 1 end)
    assert.is_true(loop:remove_signal_handler("USR1"))
  end)

  it("takes names with or without SIG, in any case", function()
    local loop = H.loop { virtual_time = false }
    for _, name in ipairs { "SIGUSR2", "USR2", "sigusr2", "usr2" } do
      local ran = false
      loop:add_signal_handler(name, function() ran = true end)
      loop:call_soon(kill, "SIGUSR2")
      run_until(loop, function() return ran end)
    end
    assert.is_true(loop:remove_signal_handler(12))
  end)

  it("runs the callback through the ready queue, once per signal", function()
    local loop = H.loop { virtual_time = false }
    local trace, add = H.tracer()
    loop:add_signal_handler("SIGUSR1", add, "signal")
    loop:call_soon(function()
      kill("SIGUSR1")
      add("after kill")  -- the handler never runs inside the sender
    end)
    run_until(loop, function() return #trace == 2 end)
    loop:call_soon(kill, "SIGUSR1")
    run_until(loop, function() return #trace == 3 end)
    assert.are.same({ "after kill", "signal", "signal" }, trace)
    loop:remove_signal_handler("SIGUSR1")
  end)

  it("replaces the handler a signal had", function()
    local loop = H.loop { virtual_time = false }
    local trace, add = H.tracer()
    loop:add_signal_handler("SIGUSR1", H.expect(add, 0), "old")
    loop:add_signal_handler("SIGUSR1", add, "new")
    loop:call_soon(kill, "SIGUSR1")
    run_until(loop, function() return #trace == 1 end)
    assert.are.same({ "new" }, trace)
    assert.is_true(loop:remove_signal_handler("SIGUSR1"))
    assert.is_false(loop:remove_signal_handler("SIGUSR1"))
  end)

  it("keeps handlers of two signals apart", function()
    local loop = H.loop { virtual_time = false }
    local trace, add = H.tracer()
    loop:add_signal_handler("SIGUSR1", add, "usr1")
    loop:add_signal_handler("SIGUSR2", add, "usr2")
    loop:call_soon(kill, "SIGUSR2")
    run_until(loop, function() return #trace == 1 end)
    loop:call_soon(kill, "SIGUSR1")
    run_until(loop, function() return #trace == 2 end)
    assert.are.same({ "usr2", "usr1" }, trace)
    assert.is_true(loop:remove_signal_handler("SIGUSR1"))
    loop:call_soon(kill, "SIGUSR2")  -- USR2 still handled
    run_until(loop, function() return #trace == 3 end)
    assert.are.equal("usr2", trace[3])
    assert.is_true(loop:remove_signal_handler("SIGUSR2"))
  end)

  it("gives a raising handler's error to the exception handler; the loop goes on", function()
    local loop = H.loop { virtual_time = false }
    local got = H.capture(loop)
    local after = false
    local function boom() error("boom", 0) end
    loop:add_signal_handler("SIGUSR1", boom)
    loop:call_soon(kill, "SIGUSR1")
    run_until(loop, function() return #got == 1 end)
    loop:call_soon(function() after = true end)
    run_until(loop, function() return after end)
    assert.are.equal("boom", got[1].exception)
    H.contains("Exception in callback", got[1].message)
    assert.is_not_nil(got[1].handle)
    -- the handler stays installed and fires again
    loop:call_soon(kill, "SIGUSR1")
    run_until(loop, function() return #got == 2 end)
    assert.is_true(loop:remove_signal_handler("SIGUSR1"))
  end)

  it("coexists in two loops", function()
    local a = H.loop { virtual_time = false }
    local b = H.loop { virtual_time = false }
    local na, nb = 0, 0
    a:add_signal_handler("SIGUSR1", function() na = na + 1 end)
    b:add_signal_handler("SIGUSR1", function() nb = nb + 1 end)
    a:call_soon(kill, "SIGUSR1")
    run_until(a, function() return na == 1 end)
    run_until(b, function() return nb == 1 end)  -- delivered at its next run
    assert.is_true(b:remove_signal_handler("SIGUSR1"))
    a:call_soon(kill, "SIGUSR1")
    run_until(a, function() return na == 2 end)
    assert.are.equal(1, nb)
    assert.is_true(a:remove_signal_handler("SIGUSR1"))
  end)

  it("does not keep a virtual-time loop alive", function()
    local loop = H.loop()
    loop:add_signal_handler("SIGUSR1", H.expect(nil, 0))
    local t0 = loop:time()
    loop:run_until_complete(function() loom.sleep(100) end)
    assert.are.equal(t0 + 100, loop:time())
    assert.is_true(loop:remove_signal_handler("SIGUSR1"))
  end)

  it("is undone by close(), which drops the handlers", function()
    -- The signal's default action comes back: SIGUSR1 is not sent after.
    local loop = H.loop { virtual_time = false }
    loop:add_signal_handler("SIGUSR1", H.expect(nil, 0), {})
    loop:add_signal_handler("SIGUSR2", H.expect(nil, 0), {})
    loop:close()
    assert.is_false(loop:remove_signal_handler("SIGUSR1"))
    loop:close()  -- idempotent
  end)

  it("is undone when the loop is collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local loop = loom.new_event_loop { virtual_time = false }
      -- the callback refers to its loop: no cycle may pin it
      loop:add_signal_handler("SIGUSR2", function() loop:stop() end, {})
      weak[1] = loop
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
    -- a new handler on the same signal still works
    local loop = H.loop { virtual_time = false }
    local ran = false
    loop:add_signal_handler("SIGUSR2", function() ran = true end)
    loop:call_soon(kill, "SIGUSR2")
    run_until(loop, function() return ran end)
    assert.is_true(loop:remove_signal_handler("SIGUSR2"))
  end)

  it("may coexist with the executable's SIGINT handling", function()
    local loop = H.loop { virtual_time = false }
    loop:_catch_sigint(H.expect(nil, 0))
    loop:add_signal_handler("SIGINT", H.expect(nil, 0))
    assert.is_true(loop:remove_signal_handler("SIGINT"))
    loop:_catch_sigint(nil)
  end)
end)

describe("remove_signal_handler", function()
  it("returns false when the signal has no handler", function()
    local loop = H.loop()
    assert.is_false(loop:remove_signal_handler("SIGUSR1"))
    assert.is_false(loop:remove_signal_handler(15))
    assert.is_false(loop:remove_signal_handler("SIGKILL"))
  end)

  it("returns false on a closed loop", function()
    local loop = H.loop()
    loop:close()
    assert.is_false(loop:remove_signal_handler("SIGTERM"))
  end)
end)

describe("bad input", function()
  local function err(f)
    local ok, e = pcall(f)
    assert.is_false(ok)
    return e
  end

  it("SIGKILL and SIGSTOP cannot be caught", function()
    local loop = H.loop()
    H.contains("bad argument #1 to 'add_signal_handler' (SIGKILL cannot be caught)",
      err(function() loop:add_signal_handler("SIGKILL", print) end))
    H.contains("bad argument #1 to 'add_signal_handler' (SIGSTOP cannot be caught)",
      err(function() loop:add_signal_handler(19, print) end))
    H.contains("SIGKILL cannot be caught",
      err(function() loop:add_signal_handler("kill", print) end))
  end)

  it("rejects invalid numbers", function()
    local loop = H.loop()
    for _, n in ipairs { 0, -1, 65, 1000, math.maxinteger, math.mininteger } do
      H.contains(("bad argument #1 to 'add_signal_handler' (invalid signal number %d)")
        :format(n), err(function() loop:add_signal_handler(n, print) end))
      H.contains(("bad argument #1 to 'remove_signal_handler' (invalid signal number %d)")
        :format(n), err(function() loop:remove_signal_handler(n) end))
    end
    H.contains("signal number or name expected, got number",
      err(function() loop:add_signal_handler(1.5, print) end))
    H.contains("signal number or name expected, got number",
      err(function() loop:add_signal_handler(0 / 0, print) end))
  end)

  it("rejects unknown names", function()
    local loop = H.loop()
    for _, s in ipairs { "SIGFOO", "", "SIG", "TERMX", "15",
                         string.rep("X", 100) } do
      H.contains("bad argument #1 to 'add_signal_handler' (unknown signal name",
        err(function() loop:add_signal_handler(s, print) end))
      H.contains("bad argument #1 to 'remove_signal_handler' (unknown signal name",
        err(function() loop:remove_signal_handler(s) end))
    end
    -- a name cut at a zero byte would be a known one: said as it is
    for _, s in ipairs { "SIGTERM\0", "SIGUSR1\0x" } do
      H.contains("bad argument #1 to 'add_signal_handler' (signal name contains a zero byte)",
        err(function() loop:add_signal_handler(s, print) end))
      H.contains("bad argument #1 to 'remove_signal_handler' (signal name contains a zero byte)",
        err(function() loop:remove_signal_handler(s) end))
    end
  end)

  it("rejects other types of signal", function()
    local loop = H.loop()
    for _, v in ipairs { {}, true, print } do
      H.contains("bad argument #1 to 'add_signal_handler' (signal number or name expected, got "
        .. type(v) .. ")", err(function() loop:add_signal_handler(v, print) end))
    end
    H.contains("got nil", err(function() loop:add_signal_handler(nil, print) end))
    H.contains("got no value", err(function() loop:remove_signal_handler() end))
  end)

  it("names the function however it is called", function()
    local loop = H.loop()
    local ok, e = pcall(loop.add_signal_handler, loop, 0, print)
    assert.is_false(ok)
    assert.are.equal("bad argument #1 to 'add_signal_handler' (invalid signal number 0)", e)
    ok, e = pcall(loop.remove_signal_handler, loop, "X")
    assert.is_false(ok)
    assert.are.equal("bad argument #1 to 'remove_signal_handler' (unknown signal name 'X')", e)
  end)

  it("wants a callable", function()
    local loop = H.loop()
    H.contains("bad argument #2 to 'add_signal_handler' (function expected, got no value)",
      err(function() loop:add_signal_handler("SIGUSR1") end))
    H.contains("bad argument #2 to 'add_signal_handler' (function expected, got nil)",
      err(function() loop:add_signal_handler("SIGUSR1", nil, 1) end))
    H.contains("bad argument #2 to 'add_signal_handler' (function expected, got string)",
      err(function() loop:add_signal_handler("SIGUSR1", "f") end))
    H.contains("(function expected, got table)",
      err(function() loop:add_signal_handler("SIGUSR1", {}) end))
    -- a table with __call is callable
    local obj = setmetatable({}, { __call = function() end })
    loop:add_signal_handler("SIGUSR1", obj)
    assert.is_true(loop:remove_signal_handler("SIGUSR1"))
  end)

  it("a failed add leaves nothing installed", function()
    local loop = H.loop()
    err(function() loop:add_signal_handler("SIGUSR1", 1) end)
    assert.is_false(loop:remove_signal_handler("SIGUSR1"))
  end)

  it("raises on a closed loop", function()
    local loop = H.loop()
    loop:close()
    H.contains("add_signal_handler: event loop is closed",
      err(function() loop:add_signal_handler("SIGUSR1", print) end))
  end)

  it("wants a loop", function()
    H.contains("loom.Loop expected",
      err(function() return H.loop().add_signal_handler({}, 10, print) end))
  end)
end)

describe("core._kill", function()
  it("returns nil, message and code on failure", function()
    local ok, msg, code = core._kill(2 ^ 30 | 0, 0)
    assert.is_nil(ok)
    assert.are.equal("ESRCH", code)
    H.contains("ESRCH:", msg)
  end)

  it("checks that a process exists with signal 0", function()
    assert.is_true(core._kill(core._getpid(), 0))
    assert.are.equal("integer", math.type(core._getpid()))
  end)

  it("checks its signal", function()
    local ok, e = pcall(core._kill, 1, "NOPE")
    assert.is_false(ok)
    H.contains("bad argument #2 to '_kill' (unknown signal name 'NOPE')", e)
  end)
end)

describe("a busy loop", function()
  it("#signal-busy hears a signal while callbacks are always ready", function()
    local loop = H.loop { virtual_time = false }
    local got, spins = false, 0
    loop:add_signal_handler("SIGUSR1", function() got = true end)
    local function spin()
      spins = spins + 1
      if got or spins > 1000000 then loop:stop() else loop:call_soon(spin) end
    end
    loop:call_soon(function() kill("SIGUSR1") end)
    loop:call_soon(spin)
    loop:run_forever()
    assert.is_true(got, "the handler never ran while the loop was busy")
    assert.is_true(spins < 1000, "heard only after " .. spins .. " iterations")
    loop:remove_signal_handler("SIGUSR1")
  end)
end)
