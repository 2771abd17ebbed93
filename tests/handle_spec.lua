-- handle_spec.lua - Handle and TimerHandle (host/handle.c) and call_soon:
-- FIFO order, arguments, cancel, cancelled(), tostring, and the errors of
-- bad input.
--
-- Ordering specs compare traces with what asyncio does.

local H = require "helper"
local loom = require "loom"
H.setup()

local errof, contains, line = H.raised, H.contains, H.line

-- Runs the loop until what is scheduled now and what that schedules are
-- done: stops from a timer far in the (virtual) future.
local function drain(loop)
  loop:call_later(1e6, function() loop:stop() end)
  loop:run_forever()
end

describe("call_soon", function()
  it("runs callbacks in FIFO order", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    local expected = {}
    for i = 1, 100 do
      loop:call_soon(add, i)
      expected[i] = i
    end
    drain(loop)
    assert.are.same(expected, trace)
  end)

  it("returns a Handle", function()
    local loop = H.loop()
    local h = loop:call_soon(function() end)
    assert.matches("^<Handle ", tostring(h))
    assert.is_false(h:cancelled())
    assert.is_nil(h.when)     -- only timer handles have when()
    drain(loop)
  end)

  it("runs a callback scheduled by a callback in the next iteration, after the others", function()
    -- asyncio: a b c a2 b2
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_soon(function() add "a"; loop:call_soon(add, "a2") end)
    loop:call_soon(function() add "b"; loop:call_soon(add, "b2") end)
    loop:call_soon(add, "c")
    drain(loop)
    assert.are.same({ "a", "b", "c", "a2", "b2" }, trace)
  end)

  it("passes its arguments, nils in the middle and at the end included", function()
    local loop = H.loop()
    local got
    loop:call_soon(function(...) got = table.pack(...) end, 1, nil, "three", nil)
    drain(loop)
    assert.are.same({ n = 4, 1, nil, "three", nil }, got)
  end)

  it("passes no argument when given none", function()
    local loop = H.loop()
    local n
    loop:call_soon(function(...) n = select("#", ...) end)
    drain(loop)
    assert.are.equal(0, n)
  end)

  it("passes many arguments", function()
    local loop = H.loop()
    local args = {}
    for i = 1, 1000 do args[i] = (i % 7 ~= 0) and i or nil end
    local got
    loop:call_soon(function(...) got = table.pack(...) end, table.unpack(args, 1, 1000))
    drain(loop)
    assert.are.equal(1000, got.n)
    for i = 1, 1000 do assert.are.equal(args[i], got[i]) end
  end)

  it("refuses more arguments than a handle can hold with a clear error", function()
    local loop = H.loop()
    local err = errof(function() loop:call_soon(print, table.unpack({}, 1, 70000)) end)
    contains("too many arguments", err)
    assert.are.equal(0, loop:_counts().ready)
  end)

  it("ignores what the callback returns", function()
    local loop = H.loop()
    loop:call_soon(H.expect(function() return 1, 2, 3 end, 1))
    drain(loop)
  end)

  it("accepts a table with __call, called with the table and the arguments", function()
    local loop = H.loop()
    local got
    local obj = setmetatable({}, { __call = function(...) got = table.pack(...) end })
    local h = loop:call_soon(obj, "x", nil)
    drain(loop)
    assert.are.same({ n = 3, obj, "x", nil }, got)
    assert.are.equal("<Handle table>", tostring(h))
  end)

  it("accepts a C function", function()
    local loop = H.loop()
    local t = {}
    loop:call_soon(table.insert, t, "c")
    drain(loop)
    assert.are.same({ "c" }, t)
  end)

  it("call_soon_threadsafe schedules like call_soon from the loop's own thread", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_soon(add, 1)
    local h = loop:call_soon_threadsafe(add, 2)
    loop:call_soon(add, 3)
    assert.matches("^<Handle ", tostring(h))
    drain(loop)
    assert.are.same({ 1, 2, 3 }, trace)
  end)

  it("drops its callback and arguments once it ran", function()
    local loop = H.loop()
    local weak = setmetatable({}, { __mode = "k" })
    do
      local arg = {}
      weak[arg] = true
      loop:call_soon(function(_) end, arg)
    end
    drain(loop)
    collectgarbage()
    collectgarbage()
    assert.is_nil(next(weak))
  end)
end)

describe("Handle:cancel", function()
  it("before it runs: the callback never runs", function()
    local loop = H.loop()
    local h = loop:call_soon(H.expect(nil, 0))
    assert.is_false(h:cancelled())
    assert.is_nil(h:cancel())
    assert.is_true(h:cancelled())
    drain(loop)
    assert.is_true(h:cancelled())
  end)

  it("is idempotent", function()
    local loop = H.loop()
    local h = loop:call_soon(H.expect(nil, 0))
    h:cancel()
    h:cancel()
    h:cancel()
    assert.is_true(h:cancelled())
    drain(loop)
  end)

  it("keeps the order of the other callbacks", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    local hs = {}
    for i = 1, 10 do hs[i] = loop:call_soon(add, i) end
    for i = 2, 10, 2 do hs[i]:cancel() end
    drain(loop)
    assert.are.same({ 1, 3, 5, 7, 9 }, trace)
  end)

  it("from an earlier callback of the same iteration: it does not run", function()
    -- asyncio: _run_once skips a handle cancelled before its turn
    local loop = H.loop()
    local trace, add = H.tracer()
    local later
    loop:call_soon(function() add "a"; later:cancel() end)
    later = loop:call_soon(add, "b")
    loop:call_soon(add, "c")
    drain(loop)
    assert.are.same({ "a", "c" }, trace)
  end)

  it("from its own callback: harmless, and cancelled() says so", function()
    local loop = H.loop()
    local h
    h = loop:call_soon(H.expect(function() h:cancel() end, 1))
    drain(loop)
    assert.is_true(h:cancelled())
  end)

  it("after it ran: harmless", function()
    local loop = H.loop()
    local h = loop:call_soon(H.expect(nil, 1))
    drain(loop)
    assert.is_false(h:cancelled())
    h:cancel()
    assert.is_true(h:cancelled())
  end)

  it("after the loop was closed: harmless", function()
    local loop = H.loop()
    local h = loop:call_soon(H.expect(nil, 0))
    local th = loop:call_later(5, H.expect(nil, 0))
    loop:close()
    h:cancel()
    th:cancel()
    assert.is_true(th:cancelled())
  end)

  it("releases nothing early: cancelling many handles then running is fine", function()
    local loop = H.loop()
    local f = H.expect(nil, 0)
    for _ = 1, 10000 do loop:call_soon(f):cancel() end
    local last = H.expect(nil, 1)
    loop:call_soon(last)
    drain(loop)
    assert.are.equal(0, loop:_counts().ready)
  end)
end)

describe("tostring", function()
  it("names the kind and where the callback is defined", function()
    local loop = H.loop()
    local function cb() end
    local h = loop:call_soon(cb)
    local th = loop:call_later(1, cb)
    assert.matches("^<Handle .*handle_spec%.lua:" .. line(cb) .. ">$", tostring(h))
    assert.matches("^<TimerHandle .*handle_spec%.lua:" .. line(cb) .. ">$", tostring(th))
    drain(loop)
  end)

  it("says when the handle is cancelled", function()
    local loop = H.loop()
    local function cb() end
    local h = loop:call_soon(cb)
    local th = loop:call_later(1, cb)
    h:cancel()
    th:cancel()
    assert.matches("^<Handle .*handle_spec%.lua:%d+ cancelled>$", tostring(h))
    assert.matches("^<TimerHandle .*handle_spec%.lua:%d+ cancelled>$", tostring(th))
    drain(loop)
  end)

  it("describes C functions and callable tables", function()
    local loop = H.loop()
    assert.are.equal("<Handle [C]>", tostring(loop:call_soon(print)))
    local obj = setmetatable({}, { __call = function() end })
    assert.are.equal("<TimerHandle table>", tostring(loop:call_later(1, obj)))
    loop:close()
  end)
end)

describe("bad input", function()
  it("a callback that is not callable", function()
    local loop = H.loop()
    contains("bad argument #1 to 'call_soon' (function expected, got number)",
      errof(function() loop:call_soon(42) end))
    contains("bad argument #1 to 'call_soon' (function expected, got no value)",
      errof(function() loop:call_soon() end))
    contains("bad argument #1 to 'call_soon' (function expected, got nil)",
      errof(function() loop:call_soon(nil, 1) end))
    contains("bad argument #1 to 'call_soon' (function expected, got string)",
      errof(function() loop:call_soon("print") end))
    contains("bad argument #1 to 'call_soon' (function expected, got table)",
      errof(function() loop:call_soon({}) end))
    contains("bad argument #1 to 'call_soon' (function expected, got table)",
      errof(function() loop:call_soon(setmetatable({}, {})) end))
    contains("bad argument #1 to 'call_soon_threadsafe' (function expected, got boolean)",
      errof(function() loop:call_soon_threadsafe(true) end))
    assert.are.equal(0, loop:_counts().ready)
  end)

  it("a callback that is not callable, called as a plain function", function()
    local loop = H.loop()
    contains("bad argument #2 to 'call_soon' (function expected, got number)",
      errof(function() loop.call_soon(loop, 42) end))
  end)

  it("bad self", function()
    local f = function() end
    local loop = H.loop()
    contains("bad argument #1 to 'call_soon' (loom.Loop expected, got nil)",
      errof(function() loop.call_soon(nil, f) end))
    contains("bad argument #1 to 'call_soon' (loom.Loop expected, got table)",
      errof(function() loop.call_soon({}, f) end))
    local h = loop:call_soon(f)
    contains("bad argument #1 to 'call_soon' (loom.Loop expected, got loom.Handle)",
      errof(function() loop.call_soon(h, f) end))
    contains("bad argument #1 to 'cancel'", errof(function() h.cancel(nil) end))
    contains("bad argument #1 to 'cancel'", errof(function() h.cancel(loop) end))
    contains("bad argument #1 to 'cancelled'", errof(function() h.cancelled({}) end))
    local th = loop:call_later(1, f)
    contains("bad argument #1 to 'when' (loom.TimerHandle expected, got loom.Handle)",
      errof(function() th.when(h) end))
    drain(loop)
  end)

  it("the error is raised at the caller's level", function()
    local loop = H.loop()
    local err = errof(function() loop:call_soon(42) end)
    assert.matches("^[^:]*handle_spec%.lua:%d+: bad argument", err)
  end)
end)
