-- task_spec.lua
-- Tasks (host/task.c): stepping, await and sleep, results and errors,
-- cancellation with asyncio's cancelling()/uncancel() rules, to-be-closed
-- variables, names and introspection, and what is reported when tasks are
-- collected. Expected traces are the orders asyncio produces; the
-- reasoning is written next to each.

local H = require "helper"
local loom = require "loom"
H.setup()

local reports, raised, spin = H.reports, H.raised, H.spin

local core = loom._core

-- A to-be-closed value that calls fn(err) when closed.
local function closer(fn)
  return setmetatable({}, { __close = function(_, err) fn(err) end })
end

describe("Task", function()

  describe("create_task", function()
    it("through the loop: the first step runs in the next iteration", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      loop:call_soon(add, "cb1")
      local t = loop:create_task(function(a, b)
        add("task " .. a .. b)
      end, "x", "y")
      add("created")
      loop:call_soon(add, "cb2")
      assert.is_false(t:done())
      loop:run_until_complete(t)
      -- asyncio: Task() call_soon()s its first __step, so it runs between
      -- the callbacks queued before and after it.
      assert.same({ "created", "cb1", "task xy", "cb2" }, trace)
    end)

    it("loom.create_task inside a task uses the running loop, not synchronously", function()
      local trace, add = H.tracer()
      local t = H.run(function()
        local child = loom.create_task(function() add("child") end)
        add("parent")
        assert.is_true(rawequal(loom.get_running_loop(), child:get_loop()))
        loom.await(child)
        add("joined")
        return child
      end)
      assert.same({ "parent", "child", "joined" }, trace)
      assert.is_true(t:done())
    end)

    it("needs a callable and an open loop", function()
      local loop = H.loop()
      assert.has_error(function() loop:create_task(42) end)
      loop:close()
      assert.has_error(function() loop:create_task(function() end) end,
        "create_task: event loop is closed")
      assert.has_error(function() loom.create_task(function() end) end)
    end)
  end)

  describe("results and errors", function()
    it("several results with nil holes come through await and run_until_complete", function()
      local loop = H.loop()
      local inner = loop:create_task(function() return 1, nil, "three", nil end)
      local r = loop:run_until_complete(function()
        return table.pack(loom.await(inner))
      end)
      assert.same({ n = 4, 1, nil, "three", nil }, r)
      assert.equal(4, select("#", inner:result()))
      assert.equal(0, select("#", H.run(function() end)))
    end)

    it("a task awaiting a task awaiting a task", function()
      local trace, add = H.tracer()
      local a, b = H.run(function()
        local t1 = loom.create_task(function()
          add("t1")
          loom.sleep(1)
          return "deep", 1
        end)
        local t2 = loom.create_task(function()
          add("t2")
          local x, y = loom.await(t1)
          return x .. "er", y + 1
        end)
        add("main")
        return t2:await()
      end)
      assert.equal("deeper", a)
      assert.equal(2, b)
      assert.same({ "main", "t1", "t2" }, trace)
    end)

    local errs = {
      string = function() return "plain" end,
      table = function() return { code = 7 } end,
      ["error object"] = function() return loom.QueueFull("full") end,
      number = function() return 3.5 end,
      boolean = function() return false end,
    }
    for kind, make in pairs(errs) do
      it("an error " .. kind .. " propagates through await unchanged", function()
        local loop = H.loop()
        local e = make()
        local t = loop:create_task(function() error(e, 0) end)
        local ok, got = loop:run_until_complete(function()
          return pcall(loom.await, t)
        end)
        assert.is_false(ok)
        assert.is_true(rawequal(e, got))
        assert.is_true(t:done())
        assert.is_false(t:cancelled())
        assert.is_true(rawequal(e, t:exception()))
        assert.is_true(rawequal(e, raised(t.result, t)))
        -- and through run_until_complete
        local e2 = make()
        local ok2, got2 = pcall(loop.run_until_complete, loop, function()
          error(e2, 0)
        end)
        assert.is_false(ok2)
        assert.is_true(rawequal(e2, got2))
      end)
    end

    it("error() with a position keeps the message as raised", function()
      local ok, e = pcall(H.run, function() error("boom") end)
      assert.is_false(ok)
      assert.matches("task_spec.lua:%d+: boom$", e)
    end)

    it("set_result and set_exception are not for tasks", function()
      local loop = H.loop()
      local t = loop:create_task(function() end)
      assert.has_error(function() t:set_result(1) end)
      assert.has_error(function() t:set_exception("x") end)
      loop:run_until_complete(t)
    end)

    it("await inside pcall inside a task catches the awaited error", function()
      local loop = H.loop()
      local f = loop:create_future()
      local r = loop:run_until_complete(function()
        loop:call_later(1, f.set_exception, f, "bad")
        local ok, e = pcall(function() return loom.await(f) end)
        return tostring(ok) .. " " .. e
      end)
      assert.equal("false bad", r)
    end)
  end)

  describe("sleep", function()
    it("returns its extra arguments, nils included", function()
      local r = H.run(function()
        local a = table.pack(loom.sleep(0.5, "a", nil, 3))
        local b = table.pack(loom.sleep(0, "z"))
        local c = table.pack(loom.sleep(1))
        return { a, b, c }
      end)
      assert.same({ n = 3, "a", nil, 3 }, r[1])
      assert.same({ n = 1, "z" }, r[2])
      assert.same({ n = 0 }, r[3])
    end)

    it("takes the virtual time it says", function()
      local loop = H.loop()
      local t0 = loop:time()
      loop:run_until_complete(function() loom.sleep(5); loom.sleep(2.5) end)
      assert.near(7.5, loop:time() - t0, 1e-9)
    end)

    it("outside a task is a clear error", function()
      assert.has_error(function() loom.sleep(0) end,
        "sleep: not inside a task (no task is running)")
      assert.has_error(function() loom.sleep(1) end)
    end)

    it("rejects NaN", function()
      local ok, e = H.run(function() return pcall(loom.sleep, 0 / 0) end)
      assert.is_false(ok)
      assert.matches("NaN", e)
    end)

    it("rejects a negative delay with a clear error", function()
      -- asyncio treats delay <= 0 as sleep(0); loom rejects negative delays
      -- as bad input (see the manual, Choices).
      local ok, e = H.run(function() return pcall(loom.sleep, -1, "r") end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w.]*sleep' %(delay is negative%)", e)
    end)

    it("a task sleeping until T resumes in the iteration after its timer fired", function()
      -- asyncio.sleep(d) is a future completed by call_later(d, ...): at
      -- T the sleep's timer handle and cb (same deadline, scheduled after
      -- it) run in one iteration, and the task's wakeup, call_soon()ed by
      -- the completed future, runs in the next one.
      local loop = H.loop()
      local trace, add = H.tracer()
      loop:run_until_complete(function()
        loom.create_task(function() loom.sleep(1); add("task") end)
        loom.sleep(0)                       -- the task now sleeps until 1
        loop:call_later(1, add, "cb")
        loom.sleep(2)
      end)
      assert.same({ "cb", "task" }, trace)
    end)

    it("a cancel at the sleep's deadline still cancels the task, as in asyncio", function()
      -- Same timeline: in asyncio the sleep future is done but the task
      -- has not resumed, so cancel() returns true and the task is
      -- cancelled at its next step.
      local loop = H.loop()
      local r, sleeper
      loop:run_until_complete(function()
        sleeper = loom.create_task(function() loom.sleep(1); return "woke" end)
        loom.sleep(0)
        loop:call_later(1, function() r = sleeper:cancel() end)
        loom.sleep(2)
      end)
      assert.is_true(r)
      assert.is_true(sleeper:cancelled())
    end)
  end)

  describe("bare coroutine.yield()", function()
    local function pingpong(yield_a, yield_b)
      local loop = H.loop()
      local trace, add = H.tracer()
      local a = loop:create_task(function()
        for i = 1, 3 do add("a" .. i); yield_a() end
      end)
      local b = loop:create_task(function()
        for i = 1, 3 do add("b" .. i); yield_b() end
      end)
      loop:call_soon(add, "cb")
      loop:run_until_complete(function() loom.await(a); loom.await(b) end)
      return trace
    end

    it("interleaves two tasks like asyncio's sleep(0) ping-pong", function()
      -- asyncio: each sleep(0) re-queues the task's __step at the end of
      -- the ready queue.
      local expected = { "a1", "b1", "cb", "a2", "b2", "a3", "b3" }
      assert.same(expected, pingpong(coroutine.yield, coroutine.yield))
      assert.same(expected, pingpong(function() loom.sleep(0) end,
                                     function() loom.sleep(0) end))
      assert.same(expected, pingpong(coroutine.yield,
                                     function() loom.sleep(0) end))
    end)

    it("returns nothing and ignores the values yielded", function()
      local n, m = H.run(function()
        local n = select("#", coroutine.yield("ignored", 1))
        local m = select("#", coroutine.yield())
        return n, m
      end)
      assert.equal(0, n)
      assert.equal(0, m)
    end)

    it("a cancel at a bare yield raises CancelledError at the next step, like sleep(0)", function()
      -- asyncio: sleep(0) is a bare yield; __step throws CancelledError in
      -- at the next step.
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        for i = 1, 3 do add("step" .. i); coroutine.yield() end
        add("end")
      end)
      loop:call_soon(function() t:cancel("stop") end)
      local ok, e = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.is_true(t:cancelled())
      assert.same({ "step1" }, trace)
    end)

    it("a yield inside a plain coroutine inside a task stays in that coroutine", function()
      local r = H.run(function()
        local gen = coroutine.wrap(function()
          for i = 1, 3 do coroutine.yield(i) end
        end)
        local a, b, c = gen(), gen(), gen()
        loom.sleep(0)
        return a + b + c
      end)
      assert.equal(6, r)
    end)
  end)

  describe("await: clear errors", function()
    it("from a plain coroutine nested inside a task", function()
      local loop = H.loop()
      local f = loop:create_future()
      local ok, e = loop:run_until_complete(function()
        local co = coroutine.wrap(function() return pcall(loom.await, f) end)
        return co()
      end)
      assert.is_false(ok)
      assert.matches("coroutine", e)
      assert.matches("not a task", e)
      -- sleep too
      local ok2, e2 = loop:run_until_complete(function()
        return coroutine.wrap(function() return pcall(loom.sleep, 1) end)()
      end)
      assert.is_false(ok2)
      assert.matches("coroutine", e2)
      assert.is_false(f:done())
    end)

    it("the error of a nested coroutine fails the task when not caught", function()
      local loop = H.loop()
      local f = loop:create_future()
      local ok, e = pcall(loop.run_until_complete, loop, function()
        coroutine.wrap(function() loom.await(f) end)()
      end)
      assert.is_false(ok)
      assert.matches("coroutine", e)
    end)

    it("a task awaiting itself", function()
      local loop = H.loop()
      local me
      me = loop:create_task(function() return pcall(loom.await, me) end)
      local ok, e = loop:run_until_complete(me)
      assert.is_false(ok)
      assert.matches("itself", e)
      local ok2, e2 = H.run(function()
        return pcall(function() return loom.current_task():await() end)
      end)
      assert.is_false(ok2)
      assert.matches("itself", e2)
    end)

    it("outside any task", function()
      local loop = H.loop()
      local t = loop:create_task(function() loom.sleep(1) end)
      assert.has_error(function() loom.await(t) end,
        "await: not inside a task (no task is running)")
      loop:run_until_complete(t)
    end)
  end)

  describe("cancel", function()
    it("#cancel-then-await a task that cancels itself, then awaits a pending future, gets CancelledError", function()
      local loop = H.loop()
      local fut = loop:create_future()
      local ok, e = pcall(loop.run_until_complete, loop, function()
        loom.current_task():cancel("self")
        fut:await()
      end)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("self", e.message)
      assert.is_true(fut:cancelled())
    end)

    it("while sleeping: CancelledError with the message, at the next iteration", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        local ok, e = pcall(loom.sleep, 10)
        add("caught " .. tostring(e))
        error(e, 0)
      end)
      loop:call_later(1, function()
        add("cancel " .. tostring(t:cancel("enough")))
        loop:call_soon(add, "soon")
      end)
      local ok, e = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("enough", e.message)
      assert.is_true(t:cancelled())
      assert.is_true(t:done())
      -- asyncio: cancel() cancels the sleep future, whose callbacks (the
      -- task's wakeup) are call_soon()ed: the task runs next iteration,
      -- before "soon", which was queued after it.
      assert.same({ "cancel true", "caught CancelledError: enough", "soon" }, trace)
      assert.near(1, loop:time(), 1e-9)
    end)

    it("while awaiting a future cancels the future too", function()
      local loop = H.loop()
      local f = loop:create_future()
      local t = loop:create_task(function() return loom.await(f) end)
      spin(loop)
      assert.is_true(t:cancel("why"))
      assert.is_true(f:cancelled())
      local e = raised(loop.run_until_complete, loop, t)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("why", e.message)
      assert.is_true(t:cancelled())
      assert.equal("why", raised(f.result, f).message)
    end)

    it("while awaiting a task cancels that task too", function()
      local loop = H.loop()
      local inner = loop:create_task(function() loom.sleep(100) end)
      local outer = loop:create_task(function() return loom.await(inner) end)
      spin(loop)
      assert.is_true(outer:cancel("chain"))
      local e = raised(loop.run_until_complete, loop, outer)
      assert.is_true(loom.CancelledError:is(e))
      assert.is_true(outer:cancelled())
      assert.is_true(inner:cancelled())
      assert.equal("chain", raised(inner.result, inner).message)
    end)

    it("after the awaited future completed, before the task resumed: CancelledError", function()
      -- asyncio: the waiter is done so cancel() sets _must_cancel, and the
      -- wakeup's __step throws CancelledError into the coroutine.
      local loop = H.loop()
      local f = loop:create_future()
      local t = loop:create_task(function() return pcall(loom.await, f) end)
      spin(loop)
      f:set_result("value")
      assert.is_true(t:cancel("late"))
      assert.is_false(f:cancelled())
      local ok, e = loop:run_until_complete(t)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("late", e.message)
      assert.equal("value", f:result())
    end)

    it("before the first step: the body never runs", function()
      local loop = H.loop()
      local body = H.expect(nil, 0)
      local t = loop:create_task(body)
      assert.is_true(t:cancel("early"))
      assert.is_false(t:done())
      local e = raised(loop.run_until_complete, loop, t)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("early", e.message)
      assert.is_true(t:cancelled())
      local e2 = raised(t.exception, t)
      assert.is_true(loom.CancelledError:is(e2))
    end)

    it("a task that cancels itself is cancelled at its next await", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        loom.current_task():cancel("self")
        add("still running")
        local ok, e = pcall(loom.sleep, 1)
        add(tostring(ok) .. " " .. tostring(e))
        return "went on"
      end)
      assert.equal("went on", loop:run_until_complete(t))
      assert.same({ "still running", "false CancelledError: self" }, trace)
      assert.is_false(t:cancelled())
    end)

    it("a task that cancels itself and returns ends cancelled", function()
      -- asyncio: "Task is cancelled right before coro stops"
      local loop = H.loop()
      local t = loop:create_task(function()
        loom.current_task():cancel()
        return 1
      end)
      local e = raised(loop.run_until_complete, loop, t)
      assert.is_true(loom.CancelledError:is(e))
      assert.is_true(t:cancelled())
    end)

    it("returns false on done tasks", function()
      local loop = H.loop()
      local ok = loop:create_task(function() return 1 end)
      local bad = loop:create_task(function() error("x", 0) end)
      local gone = loop:create_task(function() loom.sleep(1) end)
      gone:cancel()
      spin(loop, 3)
      assert.is_false(ok:cancel())
      assert.is_false(bad:cancel())
      assert.is_false(gone:cancel())
      assert.is_false(ok:cancelled())
      assert.is_false(bad:cancelled())
      assert.is_true(gone:cancelled())
      assert.equal(0, ok:cancelling())
      assert.equal(1, gone:cancelling())
      assert.equal("x", bad:exception())
    end)

    it("awaiting a cancelled task raises CancelledError", function()
      local loop = H.loop()
      local t = loop:create_task(function() loom.sleep(10) end)
      loop:call_later(1, t.cancel, t, "m")
      local ok, e = loop:run_until_complete(function()
        return pcall(loom.await, t)
      end)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("m", e.message)
      -- and once more, after it is done
      local ok2, e2 = loop:run_until_complete(function()
        return pcall(function() return t:await() end)
      end)
      assert.is_false(ok2)
      assert.is_true(loom.CancelledError:is(e2))
    end)

    it("a task that catches CancelledError goes on; cancelling() stays 1", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        local ok, e = pcall(loom.sleep, 10)
        add(loom.CancelledError:is(e) and "cancelled" or "?")
        add("cancelling " .. loom.current_task():cancelling())
        loom.sleep(1)  -- not cancelled again
        add("slept")
        return "survived"
      end)
      loop:call_later(1, t.cancel, t)
      assert.equal("survived", loop:run_until_complete(t))
      assert.is_false(t:cancelled())
      assert.equal(1, t:cancelling())
      assert.same({ "cancelled", "cancelling 1", "slept" }, trace)
    end)

    it("uncancel() counts down the requests (asyncio 3.11+)", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        local me = loom.current_task()
        pcall(loom.sleep, 10)
        add("cancelling " .. me:cancelling())
        add("uncancel " .. me:uncancel())
        add("uncancel " .. me:uncancel())  -- stays at 0
        pcall(loom.sleep, 10)              -- cancelled again
        add("cancelling " .. me:cancelling())
        return "ok"
      end)
      loop:call_later(1, t.cancel, t)
      loop:call_later(2, t.cancel, t)
      assert.equal("ok", loop:run_until_complete(t))
      assert.same({ "cancelling 1", "uncancel 0", "uncancel 0", "cancelling 1" }, trace)
      assert.near(2, loop:time(), 1e-9)
    end)

    it("two cancels before the task runs raise one CancelledError", function()
      local loop = H.loop()
      local caught = 0
      local t = loop:create_task(function()
        for _ = 1, 3 do
          if not pcall(loom.sleep, 1) then caught = caught + 1 end
        end
        return loom.current_task():cancelling()
      end)
      loop:call_later(0.5, function()
        assert.is_true(t:cancel())
        assert.is_true(t:cancel())
      end)
      assert.equal(2, loop:run_until_complete(t))
      assert.equal(1, caught)
    end)

    it("uncancel() to zero drops a pending cancel request (asyncio 3.13)", function()
      local loop = H.loop()
      local t = loop:create_task(function()
        local me = loom.current_task()
        me:cancel()
        assert.equal(0, me:uncancel())
        loom.sleep(1)
        return "not cancelled"
      end)
      assert.equal("not cancelled", loop:run_until_complete(t))
    end)

    it("a cancelled task awaiting another task leaves the awaited one done", function()
      local loop = H.loop()
      local inner = loop:create_task(function() return "inner" end)
      local outer = loop:create_task(function()
        loom.current_task():cancel()
        return loom.await(inner)
      end)
      local e = raised(loop.run_until_complete, loop, outer)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("inner", inner:result())
    end)
  end)

  describe("to-be-closed variables", function()
    it("close when the task errors, with the error, and the error is kept", function()
      local loop = H.loop()
      local seen
      local e = { "task error" }
      local t = loop:create_task(function()
        local _ <close> = closer(function(err) seen = err end)
        error(e)
      end)
      local ok, got = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(rawequal(e, got))
      assert.is_true(rawequal(e, seen))
    end)

    it("close when the task is cancelled, with the CancelledError", function()
      local loop = H.loop()
      local seen
      local t = loop:create_task(function()
        local _ <close> = closer(function(err) seen = err end)
        loom.sleep(10)
      end)
      loop:call_later(1, t.cancel, t, "bye")
      assert.has_error(function() loop:run_until_complete(t) end)
      assert.is_true(loom.CancelledError:is(seen))
      assert.equal("bye", seen.message)
      assert.is_true(t:cancelled())
    end)

    it("close in reverse order on normal return", function()
      local trace, add = H.tracer()
      H.run(function()
        local _ <close> = closer(function() add("outer") end)
        local _ <close> = closer(function() add("inner") end)
        loom.sleep(0)
      end)
      assert.same({ "inner", "outer" }, trace)
    end)

    it("a __close may await while an error unwinds", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        local _ <close> = closer(function(err)
          add("closing " .. tostring(err))
          add("slept " .. tostring(loom.sleep(2, "ok")))
          add("closed at " .. loop:time())
        end)
        error("boom", 0)
      end)
      local ok, e = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.equal("boom", e)
      assert.same({ "closing boom", "slept ok", "closed at 2.0" }, trace)
    end)

    it("a __close may await while a cancellation unwinds", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local f = loop:create_future()
      local t = loop:create_task(function()
        local _ <close> = closer(function()
          loom.sleep(1)
          add("closed at " .. loop:time())
        end)
        loom.await(f)
      end)
      loop:call_later(1, t.cancel, t)
      assert.has_error(function() loop:run_until_complete(t) end)
      assert.same({ "closed at 2.0" }, trace)
      assert.is_true(t:cancelled())
      assert.is_true(f:cancelled())
    end)

    it("a __close may await on normal return, and the results survive", function()
      local a, b = H.run(function()
        local _ <close> = closer(function() loom.sleep(1) end)
        return "r1", "r2"
      end)
      assert.equal("r1", a)
      assert.equal("r2", b)
    end)
  end)

  describe("names and introspection", function()
    it("get_name defaults to Task-N, set_name changes it", function()
      local loop = H.loop()
      local t1 = loop:create_task(function() end)
      local t2 = loop:create_task(function() end)
      local n1 = tonumber(t1:get_name():match("^Task%-(%d+)$"))
      local n2 = tonumber(t2:get_name():match("^Task%-(%d+)$"))
      assert.is_number(n1)
      assert.equal(n1 + 1, n2)
      t1:set_name("worker")
      assert.equal("worker", t1:get_name())
      t2:set_name(42)
      assert.equal("42", t2:get_name())
      assert.matches("worker", tostring(t1))
      spin(loop)
    end)

    it("get_coro returns the task's coroutine", function()
      local loop = H.loop()
      local inside
      local t = loop:create_task(function() inside = coroutine.running() end)
      local co = t:get_coro()
      assert.equal("thread", type(co))
      loop:run_until_complete(t)
      assert.is_true(rawequal(co, inside))
      assert.equal("dead", coroutine.status(co))
    end)

    it("current_task() is the running task inside, nil in a callback, an error with no loop", function()
      local loop = H.loop()
      local inside, in_cb = "unset", "unset"
      local t = loop:create_task(function()
        inside = loom.current_task()
        loom.sleep(0)
      end)
      loop:call_soon(function() in_cb = loom.current_task() end)
      loop:run_until_complete(t)
      assert.is_true(rawequal(t, inside))
      assert.is_nil(in_cb)
      assert.has_error(function() loom.current_task() end,
        "current_task: no running event loop")
      assert.is_nil(loom.current_task(loop))
    end)

    it("loom.Task(loop, fn, ...) makes a task without the factory", function()
      local loop = H.loop()
      loop:set_task_factory(function() error("factory used") end)
      local t = loom.Task(loop, function(a, b) return a + b end, 2, 3)
      assert.equal(5, loop:run_until_complete(t))
      assert.has_error(function() loom.Task(loop, 42) end)
      assert.has_error(function() loom.Task(nil, function() end) end)
    end)

    it("loom.Future([loop]) makes a future of the loop, or of the running one", function()
      local loop = H.loop()
      local f = loom.Future(loop)
      assert.is_true(rawequal(loop, f:get_loop()))
      local g = loop:run_until_complete(function() return loom.Future() end)
      assert.is_true(rawequal(loop, g:get_loop()))
    end)

    it("all_tasks() lists the pending tasks only, the current one included", function()
      local loop = H.loop()
      local done = loop:create_task(function() return 1 end)
      local sleeper = loop:create_task(function() loom.sleep(5) end)
      local waiting = loop:create_task(function() loom.await(loop:create_future()) end)
      local r = loop:run_until_complete(function()
        loom.sleep(0)
        local set = {}
        for _, t in ipairs(loom.all_tasks()) do set[t] = true end
        return { set = set, me = loom.current_task(), n = #loom.all_tasks() }
      end)
      assert.is_true(done:done())
      assert.is_nil(r.set[done])
      assert.is_true(r.set[sleeper])
      assert.is_true(r.set[waiting])
      assert.is_true(r.set[r.me])
      assert.equal(3, r.n)
      assert.equal(2, #loom.all_tasks(loop))
      waiting:cancel()
      sleeper:cancel()
      spin(loop, 2)
      assert.same({}, loom.all_tasks(loop))
      assert.has_error(function() loom.all_tasks() end)
    end)

    it("a task factory makes the tasks of create_task, run_until_complete and loom.create_task", function()
      local loop = H.loop()
      local calls = {}
      local function factory(l, fn, ...)
        calls[#calls + 1] = { loop = l, fn = fn, args = table.pack(...) }
        local t = loom.Task(l, fn, ...)
        t:set_name("made-" .. #calls)
        return t
      end
      loop:set_task_factory(factory)
      assert.equal(factory, loop:get_task_factory())
      local names = loop:run_until_complete(function(a)
        local c = loom.create_task(function(x, y)
          return loom.current_task():get_name(), x * y
        end, a, 2)
        local name, v = loom.await(c)
        return loom.current_task():get_name() .. " " .. name .. " " .. v
      end, 21)
      assert.equal("made-1 made-2 42", names)
      assert.equal(2, #calls)
      assert.is_true(rawequal(loop, calls[1].loop))
      assert.same({ n = 1, 21 }, calls[1].args)
      assert.same({ n = 2, 21, 2 }, calls[2].args)
      loop:set_task_factory(nil)
      assert.is_nil(loop:get_task_factory())
      local t = loop:create_task(function() end)
      assert.matches("^Task%-", t:get_name())
      loop:run_until_complete(t)
    end)
  end)

  describe("reports when tasks are collected", function()
    local function spawn_failing(loop, e)
      loop:create_task(function()
        local function raise_it() error(e, 0) end
        raise_it()
      end)
    end

    it("Task exception was never retrieved, with the task's traceback", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local e = { "nobody looks" }
      spawn_failing(loop, e)
      spin(loop, 2)
      assert.same({}, got)
      collectgarbage()
      collectgarbage()
      local r = reports(got, "Task exception was never retrieved")
      assert.equal(1, #r)
      assert.equal(1, #got)
      local ctx = r[1]
      assert.is_true(rawequal(e, ctx.exception))
      assert.is_not_nil(ctx.task)
      assert.is_true(ctx.task:done())
      assert.is_string(ctx.traceback)
      assert.matches("raise_it", ctx.traceback)

      -- the default handler prints message, error and traceback, also
      -- when the context has only the task
      local out = {}
      local stderr = io.stderr
      io.stderr = { write = function(self, ...)
        for _, s in ipairs { ... } do out[#out + 1] = s end
        return self
      end, flush = function() end }
      local ok, err = pcall(function()
        loop:default_exception_handler(ctx)
        loop:default_exception_handler { message = "again", task = ctx.task,
                                         exception = "E" }
      end)
      io.stderr = stderr
      assert(ok, err)
      local text = table.concat(out)
      assert.matches("Task exception was never retrieved", text, 1, true)
      local first, second = text:match("^(.*)(again.*)$")
      assert.matches("raise_it", first)
      assert.matches("raise_it", second)
      assert.matches("error: E", second, 1, true)
    end)

    it("not reported when the error was awaited, or asked with exception()", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local function make()
        local a = loop:create_task(function() error("a", 0) end)
        local b = loop:create_task(function() error("b", 0) end)
        loop:run_until_complete(function() pcall(loom.await, a) end)
        assert.equal("b", b:exception())
      end
      make()
      collectgarbage()
      collectgarbage()
      assert.same({}, got)
    end)

    it("not reported for cancelled or successful tasks", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local function make()
        loop:create_task(function() return 1 end)
        local t = loop:create_task(function() loom.sleep(1) end)
        loop:create_task(function() error(loom.CancelledError("own"), 0) end)
        spin(loop)
        t:cancel()
        spin(loop, 2)
      end
      make()
      collectgarbage()
      collectgarbage()
      assert.same({}, got)
    end)

    it("Task was destroyed but it is pending! for a task waiting on an unreachable future", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local function make()
        local t = loop:create_task(function()
          loom.await(loop:create_future())
        end)
        t:set_name("lost")
      end
      make()
      spin(loop, 2)
      collectgarbage()
      collectgarbage()
      local r = reports(got, "Task was destroyed but it is pending!")
      assert.equal(1, #r)
      assert.equal(1, #got)
      assert.equal("lost", r[1].task:get_name())
      assert.is_false(r[1].task:done())
    end)

    it("a closed loop with pending tasks and timers is collected without a crash", function()
      local loop = H.loop()
      local got = H.capture(loop)
      local function make()
        -- the awaited futures stay referenced until the loop is closed: a
        -- task waiting on an unreachable future may be collected (and
        -- rightly reported) while the loop is still open
        local keep = {}
        for i = 1, 20 do
          loop:create_task(function() loom.sleep(i) end)
          local waited = loop:create_future()
          keep[i] = waited
          loop:create_task(function() loom.await(waited) end)
          loop:create_task(function()
            local _ <close> = closer(function() end)
            coroutine.yield()
            loom.sleep(1)
          end)
          loop:call_later(i, function() end)
          local f = loop:create_future()
          f:add_done_callback(function() end)
        end
        spin(loop)
        loop:create_task(function() end)  -- never started
        loop:close()
        keep = nil
      end
      make()
      collectgarbage()
      collectgarbage()
      for _, ctx in ipairs(got) do
        assert.is_nil(ctx.message:match("pending"), "reported: " .. ctx.message)
      end
    end)

    it("tasks and their unclosed loop are collected together, in any order", function()
      local reported = {}
      local weak = setmetatable({}, { __mode = "k" })
      local function make()
        local loop = loom.new_event_loop { virtual_time = true }
        loop:set_exception_handler(function(_, ctx)
          reported[#reported + 1] = ctx.message
        end)
        weak[loop] = true
        -- each task keeps the one made before it reachable: through its
        -- results, its error value or its function's upvalues
        local prev = false
        for i = 1, 30 do
          local p1 = prev
          prev = loop:create_task(function() return i, p1 end)
          local p2 = prev
          prev = loop:create_task(function() error({ i, p2 }) end)
          local p3 = prev
          prev = loop:create_task(function()
            loom.await(loop:create_future())
            return p3
          end)
        end
        loop:run_until_complete(function() loom.sleep(0); loom.sleep(0) end)
      end
      make()
      for _ = 1, 4 do collectgarbage() end
      assert.is_nil(next(weak), "the loop was not collected")
      local pending, unretrieved = 0, 0
      for _, m in ipairs(reported) do
        if m == "Task was destroyed but it is pending!" then pending = pending + 1 end
        if m == "Task exception was never retrieved" then unretrieved = unretrieved + 1 end
      end
      assert.equal(30, pending)
      assert.equal(30, unretrieved)
    end)

    it("a dropped, unclosed loop with a sleeping task is collected", function()
      -- asyncio's loop is collected with its timers (it warns about being
      -- unclosed); a loom loop must not be kept forever by its own timer
      -- pins.
      local weak = setmetatable({}, { __mode = "k" })
      local function make()
        local loop = loom.new_event_loop { virtual_time = true }
        loop:set_exception_handler(function() end)
        weak[loop] = true
        loop:create_task(function() loom.sleep(100) end)
        loop:run_until_complete(function() loom.sleep(0) end)
      end
      make()
      for _ = 1, 4 do collectgarbage() end
      assert.is_nil(next(weak), "the loop was not collected")
    end)
  end)

  describe("traceback of a failed task", function()
    it("is its own, also when __close handlers of other failing tasks yield", function()
      local loop = H.loop()
      local function raise_a() error("A", 0) end
      local function raise_b() error("B", 0) end
      local function slow_closer(d)
        return closer(function() loom.sleep(d) end)
      end
      local ta = loop:create_task(function()
        local _ <close> = slow_closer(1)
        raise_a()
      end)
      local tb = loop:create_task(function()
        local _ <close> = slow_closer(2)
        raise_b()
      end)
      loop:run_until_complete(function() loom.sleep(3) end)
      assert.equal("A", ta:exception())
      assert.equal("B", tb:exception())
      local tba, tbb = core._task_traceback(ta), core._task_traceback(tb)
      assert.is_string(tba)
      assert.is_string(tbb)
      assert.matches("raise_a", tba)
      assert.matches("raise_b", tbb)
    end)

    it("is kept for a task that errors", function()
      local loop = H.loop()
      local function deep_raise() error("deep", 0) end
      local t = loop:create_task(function() deep_raise() end)
      assert.has_error(function() loop:run_until_complete(t) end, "deep")
      assert.matches("deep_raise", core._task_traceback(t))
    end)
  end)

  describe("many tasks", function()
    it("10000 tasks that each sleep(0) then finish", function()
      local loop = H.loop()
      local finished = 0
      local n = 10000
      local r = loop:run_until_complete(function()
        local tasks = {}
        for i = 1, n do
          tasks[i] = loom.create_task(function()
            loom.sleep(0)
            finished = finished + 1
            return i
          end)
        end
        local sum = 0
        for i = 1, n do sum = sum + loom.await(tasks[i]) end
        return sum
      end)
      assert.equal(n, finished)
      assert.equal(n * (n + 1) // 2, r)
      assert.same({}, loom.all_tasks(loop))
    end)
  end)
end)
