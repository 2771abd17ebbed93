-- future_spec.lua
-- Futures (host/future.c): results of several values, error values,
-- cancellation, done callbacks and the "never retrieved" report. Orders
-- are compared with what asyncio's Future does; the reasoning is written
-- next to each expected trace.

local H = require "helper"
local loom = require "loom"
H.setup()

-- Runs the loop for one more iteration than what is queued now needs: a
-- sleep(0) task is stepped once, then once more, then done.
local function spin(loop, n)
  loop:run_until_complete(function()
    for _ = 1, n or 1 do loom.sleep(0) end
  end)
end

-- Contexts of the handler whose message is msg.
local function reports(got, msg)
  local r = {}
  for _, ctx in ipairs(got) do
    if ctx.message == msg then r[#r + 1] = ctx end
  end
  return r
end

-- The error value raised by fn(...), which must raise.
local function raised(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

describe("Future", function()

  describe("create_future", function()
    it("makes a pending future of the loop", function()
      local loop = H.loop()
      local f = loop:create_future()
      assert.is_false(f:done())
      assert.is_false(f:cancelled())
      assert.is_true(rawequal(loop, f:get_loop()))
      assert.matches("pending", tostring(f))
    end)

    it("raises on a closed loop", function()
      local loop = H.loop()
      loop:close()
      assert.has_error(function() loop:create_future() end,
        "create_future: event loop is closed")
    end)
  end)

  describe("set_result", function()
    it("with no value: result() and await return nothing", function()
      local loop = H.loop()
      local f = loop:create_future()
      f:set_result()
      assert.is_true(f:done())
      assert.equal(0, select("#", f:result()))
      assert.equal(0, loop:run_until_complete(function()
        return select("#", loom.await(f))
      end))
    end)

    it("with one value, nil included", function()
      local loop = H.loop()
      local f, g = loop:create_future(), loop:create_future()
      f:set_result("one")
      g:set_result(nil)
      assert.equal("one", f:result())
      assert.equal(1, select("#", g:result()))
      assert.is_nil(g:result())
      local a, n = loop:run_until_complete(function()
        return loom.await(f), select("#", loom.await(g))
      end)
      assert.equal("one", a)
      assert.equal(1, n)
    end)

    it("with several values and nil holes, trailing nils kept", function()
      local loop = H.loop()
      local f = loop:create_future()
      local t = {}
      f:set_result(1, nil, t, nil)
      local r = table.pack(f:result())
      assert.equal(4, r.n)
      assert.equal(1, r[1])
      assert.is_nil(r[2])
      assert.is_true(rawequal(t, r[3]))
      assert.is_nil(r[4])
      local w = loop:run_until_complete(function()
        return table.pack(loom.await(f))
      end)
      assert.same({ n = 4, 1, nil, t, nil }, w)
      -- result() can be asked again: the values stay
      assert.equal(4, select("#", f:result()))
    end)

    it("on a done future raises InvalidStateError", function()
      local loop = H.loop()
      local f = loop:create_future()
      f:set_result(1)
      local e = raised(f.set_result, f, 2)
      assert.is_true(loom.InvalidStateError:is(e))
      e = raised(f.set_exception, f, "x")
      assert.is_true(loom.InvalidStateError:is(e))
      assert.equal(1, f:result())
      local c = loop:create_future()
      c:cancel()
      assert.is_true(loom.InvalidStateError:is(raised(c.set_result, c, 1)))
      assert.is_true(loom.InvalidStateError:is(raised(c.set_exception, c, "x")))
    end)
  end)

  describe("set_exception", function()
    local values = {
      string = function() return "plain string" end,
      table = function() return { code = 42 } end,
      ["error object"] = function() return loom.TimeoutError("too slow") end,
      number = function() return 17 end,
    }
    for kind, make in pairs(values) do
      it("with a " .. kind .. ": result(), exception() and await give the same value", function()
        local loop = H.loop()
        local f = loop:create_future()
        local e = make()
        f:set_exception(e)
        assert.is_true(f:done())
        assert.is_false(f:cancelled())
        assert.is_true(rawequal(e, raised(f.result, f)))
        assert.is_true(rawequal(e, f:exception()))
        local ok, got = loop:run_until_complete(function()
          return pcall(loom.await, f)
        end)
        assert.is_false(ok)
        assert.is_true(rawequal(e, got))
      end)
    end

    it("the error propagates unchanged through a task that does not catch it", function()
      local loop = H.loop()
      local f = loop:create_future()
      local e = loom.QueueEmpty("empty")
      f:set_exception(e)
      local ok, got = pcall(loop.run_until_complete, loop, function()
        return loom.await(f)
      end)
      assert.is_false(ok)
      assert.is_true(rawequal(e, got))
    end)

    it("rejects nil", function()
      local loop = H.loop()
      local f = loop:create_future()
      assert.has_error(function() f:set_exception(nil) end)
      assert.has_error(function() f:set_exception() end)
      assert.is_false(f:done())
    end)

    it("exception() is nil for a future with a result", function()
      local loop = H.loop()
      local f = loop:create_future()
      f:set_result(1, 2)
      assert.equal(0, select("#", f:exception()))
    end)
  end)

  describe("result() and exception() before the end", function()
    it("on a pending future raise InvalidStateError", function()
      local loop = H.loop()
      local f = loop:create_future()
      local e1 = raised(f.result, f)
      local e2 = raised(f.exception, f)
      assert.is_true(loom.InvalidStateError:is(e1))
      assert.is_true(loom.InvalidStateError:is(e2))
      assert.is_string(e1.message)
      assert.matches("^InvalidStateError", tostring(e1))
    end)

    it("on a cancelled future raise CancelledError with the message", function()
      local loop = H.loop()
      local f = loop:create_future()
      f:cancel("why")
      local e1 = raised(f.result, f)
      local e2 = raised(f.exception, f)
      assert.is_true(loom.CancelledError:is(e1))
      assert.is_true(loom.CancelledError:is(e2))
      assert.equal("why", e1.message)
      assert.equal("why", e2.message)
    end)
  end)

  describe("cancel", function()
    it("returns true once, then false; done() and cancelled() follow", function()
      local loop = H.loop()
      local f = loop:create_future()
      assert.is_true(f:cancel("first"))
      assert.is_false(f:cancel("second"))
      assert.is_true(f:done())
      assert.is_true(f:cancelled())
      assert.equal("first", raised(f.result, f).message)
    end)

    it("returns false on a finished future", function()
      local loop = H.loop()
      local f, g = loop:create_future(), loop:create_future()
      f:set_result(1)
      g:set_exception("e")
      assert.is_false(f:cancel())
      assert.is_false(g:cancel())
      assert.is_false(f:cancelled())
      assert.is_false(g:cancelled())
      assert.equal("e", g:exception())
    end)

    it("awaiting raises CancelledError whose .message is the message", function()
      local loop = H.loop()
      local f = loop:create_future()
      local ok, e = loop:run_until_complete(function()
        loop:call_soon(function() f:cancel("stop it") end)
        return pcall(loom.await, f)
      end)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("stop it", e.message)
      assert.equal("CancelledError: stop it", tostring(e))
    end)

    it("without a message: .message is nil and tostring is the class name", function()
      local loop = H.loop()
      local f = loop:create_future()
      f:cancel()
      local e = raised(f.result, f)
      assert.is_true(loom.CancelledError:is(e))
      assert.is_nil(e.message)
      assert.equal("CancelledError", tostring(e))
    end)

    it("a task not catching it ends cancelled", function()
      local loop = H.loop()
      local f = loop:create_future()
      local t = loop:create_task(function() return loom.await(f) end)
      loop:call_soon(function() loop:call_soon(function() f:cancel() end) end)
      local ok, e = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.is_true(t:cancelled())
    end)
  end)

  describe("done callbacks", function()
    it("run in registration order, in the next iteration, each with the future", function()
      local loop = H.loop()
      local f = loop:create_future()
      local trace, add = H.tracer()
      for _, name in ipairs { "one", "two", "three" } do
        f:add_done_callback(H.expect(function(fut)
          assert.is_true(rawequal(f, fut))
          add(name)
        end, 1))
      end
      loop:call_soon(function()
        add("setter")
        f:set_result(1)
        add("set")
        loop:call_soon(add, "after")
      end)
      spin(loop, 3)
      -- asyncio: set_result call_soon()s the callbacks one by one, in
      -- order, before the setter's own call_soon: they all run in the
      -- iteration after the setter's, ahead of "after".
      assert.same({ "setter", "set", "one", "two", "three", "after" }, trace)
    end)

    it("a callback scheduled before set_result runs before the done callbacks", function()
      local loop = H.loop()
      local f = loop:create_future()
      local trace, add = H.tracer()
      f:add_done_callback(function() add("done-cb") end)
      loop:call_soon(function()
        loop:call_soon(add, "first")
        f:set_result()
        loop:call_soon(add, "last")
      end)
      spin(loop, 3)
      assert.same({ "first", "done-cb", "last" }, trace)
    end)

    it("run on cancel and on set_exception too", function()
      local loop = H.loop()
      local f, g = loop:create_future(), loop:create_future()
      local seen = {}
      local function cb(fut) seen[#seen + 1] = fut end
      f:add_done_callback(H.expect(cb, 1))
      g:add_done_callback(H.expect(cb, 1))
      f:cancel()
      g:set_exception("boom")
      spin(loop)
      assert.equal(2, #seen)
      assert.is_true(rawequal(f, seen[1]))
      assert.is_true(rawequal(g, seen[2]))
      assert.equal("boom", g:exception())
    end)

    it("added after done: scheduled with call_soon, after what is already queued", function()
      local loop = H.loop()
      local f = loop:create_future()
      local trace, add = H.tracer()
      f:add_done_callback(function() add("registered") end)
      f:set_result(1)
      loop:call_soon(add, "queued")
      f:add_done_callback(H.expect(function(fut)
        assert.is_true(rawequal(f, fut))
        add("late")
      end, 1))
      -- not synchronous
      assert.same({}, trace)
      spin(loop)
      -- asyncio: set_result queued "registered", then "queued" was queued,
      -- then add_done_callback on a done future call_soon()s "late".
      assert.same({ "registered", "queued", "late" }, trace)
    end)

    it("a callback added while the callbacks run is scheduled on its own", function()
      local loop = H.loop()
      local f = loop:create_future()
      local trace, add = H.tracer()
      f:add_done_callback(function()
        add("a")
        loop:call_soon(add, "soon")
        f:add_done_callback(function() add("nested") end)
      end)
      f:add_done_callback(function() add("b") end)
      f:set_result()
      spin(loop, 2)
      assert.same({ "a", "b", "soon", "nested" }, trace)
    end)

    it("accept callable tables", function()
      local loop = H.loop()
      local f = loop:create_future()
      local hits = 0
      local obj = setmetatable({}, { __call = function(self, fut)
        hits = hits + 1
        assert.is_true(rawequal(f, fut))
        assert.is_table(self)
      end })
      f:add_done_callback(obj)
      f:set_result()
      spin(loop)
      assert.equal(1, hits)
      assert.has_error(function() f:add_done_callback(42) end)
      assert.has_error(function() f:add_done_callback({}) end)
    end)

    it("remove_done_callback returns how many registrations it removed", function()
      local loop = H.loop()
      local f = loop:create_future()
      local trace, add = H.tracer()
      local function cb() add("cb") end
      local function other() add("other") end
      f:add_done_callback(cb)
      f:add_done_callback(other)
      f:add_done_callback(cb)
      assert.equal(2, f:remove_done_callback(cb))
      assert.equal(0, f:remove_done_callback(cb))
      assert.equal(0, f:remove_done_callback(function() end))
      f:set_result()
      spin(loop)
      assert.same({ "other" }, trace)
    end)

    it("remove_done_callback on the only callback", function()
      local loop = H.loop()
      local f = loop:create_future()
      local cb = H.expect(nil, 0)
      f:add_done_callback(cb)
      assert.equal(1, f:remove_done_callback(cb))
      assert.equal(0, f:remove_done_callback(cb))
      f:set_result()
      spin(loop)
    end)

    it("remove_done_callback after completion removes nothing: the callback was already scheduled", function()
      -- asyncio: set_result() moves the callbacks to the ready queue and
      -- empties the list, so a later remove_done_callback returns 0 and
      -- the callback still runs.
      local loop = H.loop()
      local f = loop:create_future()
      local calls = 0
      local function cb() calls = calls + 1 end
      f:add_done_callback(cb)
      f:set_result(1)
      local removed = f:remove_done_callback(cb)
      spin(loop)
      assert.equal(1, calls)
      assert.equal(0, removed)
    end)

    it("a raising callback is reported and the others still run", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local f = loop:create_future()
      local err = { "callback error" }
      local trace, add = H.tracer()
      f:add_done_callback(function() add("before") end)
      f:add_done_callback(function() add("raiser"); error(err) end)
      f:add_done_callback(function() add("after") end)
      f:set_result()
      spin(loop)
      assert.same({ "before", "raiser", "after" }, trace)
      assert.equal(1, #got)
      local ctx = got[1]
      assert.is_true(rawequal(err, ctx.exception))
      assert.is_true(rawequal(f, ctx.future))
      assert.is_string(ctx.message)
      assert.matches("callback", ctx.message)
      assert.is_string(ctx.traceback)
    end)

    it("a raising single callback is reported with a string error", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local f = loop:create_future()
      f:add_done_callback(function() error("plain", 0) end)
      f:cancel()
      spin(loop)
      assert.equal(1, #got)
      assert.equal("plain", got[1].exception)
    end)
  end)

  describe("await", function()
    it("fut:await() is the method form of loom.await", function()
      local loop = H.loop()
      local f = loop:create_future()
      local a, b = loop:run_until_complete(function()
        loop:call_soon(f.set_result, f, "x", "y")
        return f:await()
      end)
      assert.equal("x", a)
      assert.equal("y", b)
    end)

    it("of a done future returns at once, without a switch", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local f = loop:create_future()
      f:set_result(7)
      loop:run_until_complete(function()
        loom.create_task(function() add("other") end)
        add(tostring(loom.await(f)))
        add("still me")
        loom.sleep(0)
      end)
      assert.same({ "7", "still me", "other" }, trace)
    end)

    it("a task wakes in the order its wakeup was registered among the callbacks", function()
      local loop = H.loop()
      local f = loop:create_future()
      local trace, add = H.tracer()
      f:add_done_callback(function() add("before") end)
      local t = loop:create_task(function()
        local v = loom.await(f)
        add("task " .. v)
      end)
      spin(loop)  -- the task now waits on f
      f:add_done_callback(function() add("after") end)
      f:set_result("v")
      loop:run_until_complete(t)
      assert.same({ "before", "task v", "after" }, trace)
    end)

    it("outside a task is a clear error", function()
      local loop = H.loop()
      local f = loop:create_future()
      assert.has_error(function() loom.await(f) end,
        "await: not inside a task (no task is running)")
      assert.has_error(function() f:await() end,
        "await: not inside a task (no task is running)")
      -- in a plain callback of a running loop
      local ok, e
      loop:call_soon(function() ok, e = pcall(loom.await, f) end)
      spin(loop)
      assert.is_false(ok)
      assert.matches("not inside a task", e)
      assert.is_false(f:done())
    end)

    it("of something that is not a future is a clear error", function()
      local ok, e = H.run(function() return pcall(loom.await, 42) end)
      assert.is_false(ok)
      assert.matches("loom.Future expected", e)
    end)

    it("a future of another loop is a clear error", function()
      local loop = H.loop()
      local other = H.loop()
      local f = other:create_future()
      local ok, e = loop:run_until_complete(function()
        return pcall(loom.await, f)
      end)
      assert.is_false(ok)
      assert.is_string(e)
      assert.matches("different event loop", e)
      assert.is_false(f:done())
    end)
  end)

  describe("an error nobody retrieved", function()
    local function failed_future(loop, e)
      local f = loop:create_future()
      f:set_exception(e)
    end

    it("is reported through the exception handler when the future is collected", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local e = { "lost" }
      failed_future(loop, e)
      collectgarbage()
      collectgarbage()
      local r = reports(got, "Future exception was never retrieved")
      assert.equal(1, #r)
      assert.equal(1, #got)
      assert.is_true(rawequal(e, r[1].exception))
      assert.is_not_nil(r[1].future)
    end)

    local lookers = {
      ["result()"] = function(_, f) pcall(f.result, f) end,
      ["exception()"] = function(_, f) f:exception() end,
      ["await"] = function(loop, f)
        loop:run_until_complete(function() pcall(loom.await, f) end)
      end,
      ["a done callback calling exception()"] = function(loop, f)
        spin(loop)
        assert.is_not_nil(f:exception())
      end,
    }
    for how, look in pairs(lookers) do
      it("is not reported once " .. how .. " looked at it", function()
        local loop = H.loop()
        local got = H.capture(loop)
        local function make()
          local f = loop:create_future()
          if how:match("callback") then
            f:add_done_callback(function(fut) fut:exception() end)
          end
          f:set_exception("seen")
          look(loop, f)
        end
        make()
        collectgarbage()
        collectgarbage()
        assert.same({}, got)
      end)
    end

    it("is not reported for results or cancellation", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local function make()
        loop:create_future():set_result(1)
        loop:create_future():cancel("x")
        loop:create_future()
      end
      make()
      collectgarbage()
      collectgarbage()
      assert.same({}, got)
    end)
  end)
end)
