-- combinators_spec.lua - gather, wait, as_completed, shield and wait_for
-- (lua/loom/combinators.lua). Expected traces are the orders asyncio 3.12
-- produces; the reasoning (which iteration each step runs in) is written
-- next to them. Deadlines and task groups have their own specs
-- (timeout_spec.lua, taskgroup_spec.lua).

local H = require "helper"
local loom = require "loom"
H.setup()

local CancelledError = loom.CancelledError
local TimeoutError = loom.TimeoutError

local raised = H.raised

-- A task body that sleeps d seconds, traces, and returns v (and "extra").
local function after(add, d, v)
  return function()
    loom.sleep(d)
    if add then add(v) end
    return v, "extra"
  end
end

-- Runs fn as a task on a new loop, returning the loop and fn's results.
local function run(fn)
  local loop = H.loop()
  return loop, loop:run_until_complete(fn)
end

describe("gather", function()
  it("returns the first result of each awaitable, in argument order", function()
    local trace, add = H.tracer()
    local loop, a, b, c, d = run(function()
      local t = loom.create_task(after(add, 0.3, "task"))
      local f = loom.get_running_loop():create_future()
      loom.get_running_loop():call_later(0.1, f.set_result, f, "fut", "more")
      return loom.gather(t, f, after(add, 0.2, "fn"),
        function() return nil, "second" end)
    end)
    assert.same({ "task", "fut", "fn" }, { a, b, c })
    assert.is_nil(d)
    assert.same({ "fn", "task" }, trace)
    assert.near(0.3, loop:time(), 1e-9)
  end)

  it("wakes the gathering task the iteration after the last child's callbacks", function()
    -- asyncio: the child finishes in iteration 1 and schedules gather's
    -- _done_callback; that runs in iteration 2 and completes the outer
    -- future, whose callback wakes the task in iteration 3. A ticker
    -- stepping once per iteration shows where each happens.
    local trace, add = H.tracer()
    run(function()
      local child = loom.create_task(function() add("child") return 1 end)
      local ticker = loom.create_task(function()
        for i = 1, 4 do
          add("tick" .. i)
          loom.sleep(0)
        end
      end)
      add("gather")
      add("got " .. loom.gather(child))
      ticker:await()
    end)
    assert.same({ "gather", "child", "tick1", "tick2", "got 1", "tick3", "tick4" },
      trace)
  end)

  it("with no awaitables returns nothing at once", function()
    local trace, add = H.tracer()
    run(function()
      loom.get_running_loop():call_soon(add, "soon")
      add("n=" .. select("#", loom.gather()))
      add("n=" .. select("#", loom.gather({ return_exceptions = true })))
      local r = loom.gather({}, {})
      add("list n=" .. r.n .. " #" .. #r)
      loom.sleep(0)
    end)
    assert.same({ "n=0", "n=0", "list n=0 #0", "soon" }, trace)
  end)

  it("with only done futures returns without suspending", function()
    local trace, add = H.tracer()
    run(function()
      local loop = loom.get_running_loop()
      local f1, f2 = loop:create_future(), loop:create_future()
      f1:set_result("x")
      f2:set_result("y")
      loop:call_soon(add, "soon")
      add(table.concat({ loom.gather(f1, f2, f1) }, ","))
      loom.sleep(0)
    end)
    assert.same({ "x,y,x", "soon" }, trace)
  end)

  it("counts a future given twice once and returns its value twice", function()
    local _, r = run(function()
      local t = loom.create_task(after(nil, 0.1, "t"))
      return { loom.gather(t, t, after(nil, 0.2, "u"), t) }
    end)
    assert.same({ "t", "t", "u", "t" }, r)
  end)

  it("runs the same function twice as two tasks", function()
    local n = 0
    local _, a, b = run(function()
      local function f() n = n + 1; return n end
      return loom.gather(f, f)
    end)
    assert.same({ 1, 2 }, { a, b })
  end)

  it("takes a list and returns a list with .n, for 10,000 children", function()
    local _, r = run(function()
      local list = {}
      for i = 1, 10000 do
        list[i] = loom.create_task(function()
          loom.sleep(0)
          return i * 2
        end)
      end
      return loom.gather(list)
    end)
    assert.equal(10000, r.n)
    for i = 1, 10000 do assert(r[i] == i * 2) end
  end)

  it("keeps nils in the list form", function()
    local _, r = run(function()
      return loom.gather({ function() return nil end, function() return 2 end,
                           function() end }, { return_exceptions = true })
    end)
    assert.equal(3, r.n)
    assert.same({ nil, 2, nil }, { r[1], r[2], r[3] })
  end)

  it("raises the first error unchanged; the other children keep running", function()
    local trace, add = H.tracer()
    local boom = { "boom" }
    local loop = H.loop()
    local slow
    local e = raised(loop.run_until_complete, loop, function()
      slow = loom.create_task(after(add, 0.5, "slow"))
      loom.gather(slow, function()
        loom.sleep(0.1)
        error(boom)
      end, after(add, 0.2, "medium"))
    end)
    assert.is_true(rawequal(boom, e))
    assert.near(0.1, loop:time(), 1e-9)
    assert.is_false(slow:done())
    loop:run_until_complete(slow)
    assert.same({ "medium", "slow" }, trace)
  end)

  it("raises a string error unchanged (no position added)", function()
    local e = raised(H.run, function()
      loom.gather(function() error("plain", 0) end)
    end)
    assert.equal("plain", e)
  end)

  it("marks the errors of the other children retrieved", function()
    local loop = H.loop()
    local got = H.capture(loop)
    raised(loop.run_until_complete, loop, function()
      loom.gather(function() error("one", 0) end, function()
        loom.sleep(0)
        error("two", 0)
      end)
    end)
    loop:run_until_complete(function() loom.sleep(1) end)
    collectgarbage()
    collectgarbage()
    assert.same({}, got)
  end)

  it("return_exceptions puts errors and CancelledErrors in place", function()
    local boom = { "boom" }
    local _, a, b, c, d = run(function()
      local loop = loom.get_running_loop()
      local doomed = loom.create_task(function() loom.sleep(10) end)
      local fut = loop:create_future()
      loop:call_later(0.1, doomed.cancel, doomed, "stop")
      loop:call_later(0.2, fut.cancel, fut, "fut stop")
      return loom.gather(function() error(boom) end, doomed, fut,
        after(nil, 0.3, "ok"), { return_exceptions = true })
    end)
    assert.is_true(rawequal(boom, a))
    assert.is_true(CancelledError:is(b))
    assert.equal("stop", b.message)
    assert.is_true(CancelledError:is(c))
    assert.equal("fut stop", c.message)
    assert.equal("ok", d)
  end)

  it("without return_exceptions a cancelled child raises its CancelledError", function()
    -- asyncio test_one_cancellation: the gathering task itself is not
    -- cancelled, it just sees the child's CancelledError
    local loop = H.loop()
    local child
    local e, cancelling, others = loop:run_until_complete(function()
      child = loom.create_task(function() loom.sleep(10) end)
      local other = loom.create_task(after(nil, 1, "other"))
      loop:call_later(0.5, child.cancel, child, "child msg")
      local ok, err = pcall(loom.gather, child, other)
      assert(not ok)
      return err, loom.current_task():cancelling(), other:done()
    end)
    assert.is_true(CancelledError:is(e))
    assert.equal("child msg", e.message)
    assert.equal(0, cancelling)
    assert.is_false(others)
  end)

  describe("when the gathering task is cancelled", function()
    it("cancels every child, waits for them and raises CancelledError", function()
      -- asyncio: task.cancel() calls _GatheringFuture.cancel(), which
      -- cancels the children; the first one to end cancelled completes
      -- the gathering with its CancelledError. loom cancels the children
      -- when the gathering task next runs (one iteration later).
      local loop = H.loop()
      local trace, add = H.tracer()
      local kids = {}
      local function kid(name)
        return function()
          local ok, e = pcall(loom.sleep, 10)
          add(name .. (ok and " slept" or " " .. tostring(e)))
          error(e, 0)
        end
      end
      local main = loop:create_task(function()
        kids[1] = loom.create_task(kid("a"))
        kids[2] = loom.create_task(kid("b"))
        local ok, e = pcall(loom.gather, kids[1], kids[2])
        add("gather " .. tostring(e))
        add("cancelling " .. loom.current_task():cancelling())
        error(e, 0)
      end)
      loop:call_later(1, main.cancel, main, "stop")
      local e = raised(loop.run_until_complete, loop, main)
      assert.is_true(CancelledError:is(e))
      assert.same({ "a CancelledError: stop", "b CancelledError: stop",
                    "gather CancelledError: stop", "cancelling 1" }, trace)
      assert.is_true(kids[1]:cancelled())
      assert.is_true(kids[2]:cancelled())
      assert.is_true(main:cancelled())
      assert.near(1, loop:time(), 1e-9)
    end)

    it("raises CancelledError even with return_exceptions (bpo-32684)", function()
      local loop = H.loop()
      local kid
      local main = loop:create_task(function()
        kid = loom.create_task(function() loom.sleep(10) end)
        return loom.gather(kid, { return_exceptions = true })
      end)
      loop:call_later(1, main.cancel, main)
      local e = raised(loop.run_until_complete, loop, main)
      assert.is_true(CancelledError:is(e))
      assert.is_true(kid:cancelled())
    end)

    it("raises CancelledError when every child swallows the cancellation", function()
      local loop = H.loop()
      local kids = {}
      local function stubborn(v)
        return function()
          pcall(loom.sleep, 10)
          loom.sleep(1)
          return v
        end
      end
      local main = loop:create_task(function()
        kids[1] = loom.create_task(stubborn(1))
        kids[2] = loom.create_task(stubborn(2))
        return loom.gather(kids[1], kids[2])
      end)
      loop:call_later(1, main.cancel, main, "why")
      local e = raised(loop.run_until_complete, loop, main)
      assert.is_true(CancelledError:is(e))
      assert.equal("why", e.message)
      assert.equal(1, kids[1]:result())
      assert.equal(2, kids[2]:result())
      assert.near(2, loop:time(), 1e-9)
    end)

    it("a second cancel while the children finish cancels them again", function()
      local loop = H.loop()
      local kid
      local main = loop:create_task(function()
        kid = loom.create_task(function()
          for _ = 1, 2 do pcall(loom.sleep, 10) end
          return "done"
        end)
        return loom.gather(kid)
      end)
      loop:call_later(1, main.cancel, main)
      loop:call_later(2, main.cancel, main)
      local e = raised(loop.run_until_complete, loop, main)
      assert.is_true(CancelledError:is(e))
      assert.equal(2, kid:cancelling())
      assert.equal("done", kid:result())
      assert.near(2, loop:time(), 1e-9)
      assert.equal(2, main:cancelling())
    end)

    for _, first in ipairs { true, false } do
      it("cancelled while a result is in flight: the cancellation wins ("
         .. (first and "before" or "after") .. " gather's callback)", function()
        -- The child is done and its callbacks are queued when the task is
        -- cancelled, just before or just after gather's callback. asyncio:
        -- _GatheringFuture.cancel() finds no child left to cancel (or the
        -- gathering already done), so the task is marked _must_cancel and
        -- raises CancelledError at its wakeup; the result is dropped.
        local loop = H.loop()
        local kid
        local main = loop:create_task(function()
          kid = loom.create_task(function()
            loom.sleep(1)
            return "late"
          end)
          local me = loom.current_task()
          local function cancel_me()
            assert(kid:done())
            me:cancel()
          end
          if first then kid:add_done_callback(cancel_me) end
          local r = loom.gather(kid)
          return r
        end)
        if not first then
          loop:call_later(0.5, function() kid:add_done_callback(function()
            main:cancel()
          end) end)
        end
        local e = raised(loop.run_until_complete, loop, main)
        assert.is_true(CancelledError:is(e))
        assert.equal("late", kid:result())
        assert.is_false(kid:cancelled())
        assert.equal(1, main:cancelling())
      end)
    end
  end)

  describe("bad input", function()
    it("names the function and the argument", function()
      H.run(function()
        assert.has_error(function() loom.gather(1) end,
          "bad argument #1 to 'gather' (loom.Future or loom.Task or function expected, got number)")
        assert.has_error(function() loom.gather(function() end, "x") end,
          "bad argument #2 to 'gather' (loom.Future or loom.Task or function expected, got string)")
        assert.has_error(function() loom.gather({ function() end, 5 }) end,
          "bad argument #1 to 'gather' (item 2: loom.Future or loom.Task or function expected, got number)")
        assert.has_error(function() loom.gather({ function() end }, 5) end,
          "bad argument #2 to 'gather' (options table expected, got number)")
        -- a misspelt option is an error, in both forms
        assert.has_error(function() loom.gather({ function() end }, { return_exception = true }) end,
          "bad argument #2 to 'gather' (unknown option 'return_exception')")
        assert.has_error(function() loom.gather(function() end, function() end, { bogus = 1 }) end,
          "bad argument #3 to 'gather' (unknown option 'bogus')")
        assert.has_error(function() loom.gather({ function() end }, {}, {}) end)
      end)
    end)

    it("refuses a future of another loop before starting anything", function()
      local other = H.loop()
      local foreign = other:create_future()
      local started = false
      H.run(function()
        local e = raised(loom.gather, function() started = true end, foreign)
        assert.matches("bad argument #2 to 'gather' %(the future belongs to a different event loop%)", e)
        loom.sleep(0)
      end)
      assert.is_false(started)
    end)

    it("needs a task", function()
      assert.has_error(function() loom.gather(function() end) end,
        "gather: not inside a task")
      local loop = H.loop()
      local e
      loop:call_soon(function() e = raised(loom.gather, function() end) end)
      loop:run_until_complete(function() loom.sleep(0) end)
      assert.matches("gather: not inside a task", e)
    end)
  end)
end)

describe("wait", function()
  it("ALL_COMPLETED: every future done; lists keep the input order", function()
    local loop, done, pending = run(function()
      local a = loom.create_task(after(nil, 0.3, "a"))
      local b = loom.create_task(after(nil, 0.1, "b"))
      local c = loom.create_task(after(nil, 0.2, "c"))
      local d, p = loom.wait({ a, b, c })
      return { d[1] == a, d[2] == b, d[3] == c, #d }, p
    end)
    assert.same({ true, true, true, 3 }, done)
    assert.same({}, pending)
    assert.near(0.3, loop:time(), 1e-9)
  end)

  it("FIRST_COMPLETED returns when one is done", function()
    local loop, r = run(function()
      local a = loom.create_task(after(nil, 0.3, "a"))
      local b = loom.create_task(after(nil, 0.1, "b"))
      local c = loom.create_task(after(nil, 0.2, "c"))
      local d, p = loom.wait({ a, b, c }, { return_when = "FIRST_COMPLETED" })
      local r = { #d, d[1] == b, #p, p[1] == a, p[2] == c }
      a:cancel(); c:cancel()
      return r
    end)
    assert.same({ 1, true, 2, true, true }, r)
    assert.near(0.1, loop:time(), 1e-9)
  end)

  it("FIRST_EXCEPTION returns at the first error, else when all are done", function()
    local loop, r = run(function()
      local a = loom.create_task(after(nil, 0.1, "a"))
      local b = loom.create_task(function() loom.sleep(0.2); error("b", 0) end)
      local c = loom.create_task(after(nil, 0.3, "c"))
      local d, p = loom.wait({ a, b, c }, { return_when = loom.FIRST_EXCEPTION })
      local r = { #d, d[1] == a, d[2] == b, #p, p[1] == c,
                  loom.get_running_loop():time() }
      local d2, p2 = loom.wait({ c }, { return_when = "FIRST_EXCEPTION" })
      r[#r + 1] = #d2
      r[#r + 1] = #p2
      return r
    end)
    assert.same({ 2, true, true, 1, true, 0.2, 1, 0 }, r)
    assert.near(0.3, loop:time(), 1e-9)
  end)

  it("FIRST_EXCEPTION does not count a cancelled future as an error", function()
    local _, r = run(function()
      local loop = loom.get_running_loop()
      local f = loop:create_future()
      local a = loom.create_task(after(nil, 0.2, "a"))
      loop:call_later(0.1, f.cancel, f)
      local d, p = loom.wait({ f, a }, { return_when = "FIRST_EXCEPTION" })
      return { #d, #p, loop:time() }
    end)
    assert.same({ 2, 0, 0.2 }, r)
  end)

  it("returns at the timeout without cancelling anything", function()
    local loop, r = run(function()
      local a = loom.create_task(after(nil, 0.1, "a"))
      local b = loom.create_task(after(nil, 5, "b"))
      local d, p = loom.wait({ b, a }, { timeout = 1 })
      local r = { #d, d[1] == a, #p, p[1] == b, b:cancelled(),
                  loom.get_running_loop():time() }
      b:await()
      return r
    end)
    assert.same({ 1, true, 1, true, false, 1 }, r)
    assert.near(5, loop:time(), 1e-9)
  end)

  it("a completion at the same tick as the timeout: the earlier timer decides", function()
    -- asyncio: both timers fire in the same iteration, in scheduling
    -- order. (1) The child's sleep was scheduled first: it wakes in the
    -- next iteration just before the waiting task, so it is done. (2) wait's
    -- timer was scheduled first: the waiting task wakes first and the child
    -- is still pending.
    local _, r = run(function()
      local child = loom.create_task(after(nil, 1, "x"))
      loom.sleep(0)                     -- the child sleeps from now
      local d1, p1 = loom.wait({ child }, { timeout = 1 })
      local child2 = loom.create_task(after(nil, 1, "y"))
      local d2, p2 = loom.wait({ child2 }, { timeout = 1 })  -- before it sleeps
      local r = { #d1, #p1, #d2, #p2 }
      child2:await()
      return r
    end)
    assert.same({ 1, 0, 0, 1 }, r)
  end)

  it("with done futures still yields once, then returns them done", function()
    local trace, add = H.tracer()
    run(function()
      local loop = loom.get_running_loop()
      local f = loop:create_future()
      f:set_result(1)
      loop:call_soon(add, "soon")
      local d, p = loom.wait({ f }, { timeout = 0 })
      add("done " .. #d .. " pending " .. #p)
    end)
    assert.same({ "soon", "done 1 pending 0" }, trace)
  end)

  it("counts a future given twice once", function()
    local _, r = run(function()
      local a = loom.create_task(after(nil, 0.1, "a"))
      local d, p = loom.wait({ a, a })
      return { #d, #p }
    end)
    assert.same({ 1, 0 }, r)
  end)

  it("cancelling the waiting task leaves the futures running", function()
    local loop = H.loop()
    local child
    local main = loop:create_task(function()
      child = loom.create_task(after(nil, 2, "c"))
      loom.wait({ child })
    end)
    loop:call_later(1, main.cancel, main)
    local e = raised(loop.run_until_complete, loop, main)
    assert.is_true(CancelledError:is(e))
    assert.is_false(child:done())
    assert.equal("c", loop:run_until_complete(child))
  end)

  it("refuses bad input", function()
    H.run(function()
      local t = loom.create_task(function() end)
      assert.has_error(function() loom.wait({}) end,
        "bad argument #1 to 'wait' (the list of futures is empty)")
      assert.has_error(function() loom.wait(t) end,
        "bad argument #1 to 'wait' (list of futures expected, got a single future)")
      assert.has_error(function() loom.wait("x") end,
        "bad argument #1 to 'wait' (list of futures expected, got string)")
      assert.has_error(function() loom.wait({ t, 3 }) end,
        "bad argument #1 to 'wait' (item 2: loom.Future or loom.Task expected, got number)")
      assert.has_error(function() loom.wait({ function() end }) end,
        "bad argument #1 to 'wait' (item 1 is a function: passing functions is forbidden, make tasks explicitly)")
      assert.has_error(function() loom.wait({ t }, { timeout = -1 }) end,
        "bad argument #2 to 'wait' (timeout is negative)")
      assert.has_error(function() loom.wait({ t }, { timeout = 0 / 0 }) end,
        "bad argument #2 to 'wait' (timeout is NaN)")
      assert.has_error(function() loom.wait({ t }, { timeout = "1" }) end,
        "bad argument #2 to 'wait' (timeout: number expected, got string)")
      assert.has_error(function() loom.wait({ t }, { return_when = "SOMETIME" }) end,
        "bad argument #2 to 'wait' (invalid return_when value: SOMETIME)")
      assert.has_error(function() loom.wait({ t }, 5) end,
        "bad argument #2 to 'wait' (options table expected, got number)")
      assert.has_error(function() loom.wait({ t }, { timeot = 1 }) end,
        "bad argument #2 to 'wait' (unknown option 'timeot')")
      t:await()
    end)
    local other = H.loop():create_future()
    H.run(function()
      assert.has_error(function() loom.wait({ other }) end,
        "bad argument #1 to 'wait' (item 1: the future belongs to a different event loop)")
    end)
    assert.has_error(function() loom.wait({ other }) end, "wait: not inside a task")
  end)
end)

describe("as_completed", function()
  it("yields the futures in completion order", function()
    local trace, add = H.tracer()
    local loop = run(function()
      local list = {
        loom.create_task(after(nil, 0.3, "a")),
        loom.create_task(after(nil, 0.1, "b")),
        after(nil, 0.2, "c"),                      -- a function: a task
      }
      for fut in loom.as_completed(list) do
        add(fut:await() .. "@" .. loom.get_running_loop():time())
      end
    end)
    assert.same({ "b@0.1", "c@0.2", "a@0.3" }, trace)
    assert.near(0.3, loop:time(), 1e-9)
  end)

  it("yields done futures first, in input order", function()
    local trace, add = H.tracer()
    run(function()
      local loop = loom.get_running_loop()
      local f1, f2 = loop:create_future(), loop:create_future()
      local late = loom.create_task(after(nil, 0.1, "late"))
      f2:set_result("f2")
      f1:set_result("f1")
      for fut in loom.as_completed({ late, f1, f2, f1 }) do add(fut:result()) end
    end)
    assert.same({ "f1", "f2", "late" }, trace)
  end)

  it("a future's error is raised when it is awaited", function()
    local trace, add = H.tracer()
    run(function()
      local list = {
        loom.create_task(function() loom.sleep(0.1); error("bad", 0) end),
        loom.create_task(after(nil, 0.2, "good")),
      }
      for fut in loom.as_completed(list) do
        local ok, v = pcall(fut.await, fut)
        add(tostring(ok) .. " " .. v)
      end
    end)
    assert.same({ "false bad", "true good" }, trace)
  end)

  it("raises TimeoutError when the timeout expires first", function()
    local trace, add = H.tracer()
    local loop = H.loop()
    local slow
    local e = raised(loop.run_until_complete, loop, function()
      slow = loom.create_task(after(nil, 5, "slow"))
      local list = { slow, loom.create_task(after(nil, 0.5, "fast")) }
      for fut in loom.as_completed(list, { timeout = 1 }) do
        add(fut:await())
      end
    end)
    assert.is_true(TimeoutError:is(e))
    assert.same({ "fast" }, trace)
    assert.near(1, loop:time(), 1e-9)
    assert.is_false(slow:cancelled())   -- not cancelled
    loop:run_until_complete(slow)
  end)

  it("keeps raising TimeoutError for the futures left", function()
    local _, r = run(function()
      local a = loom.create_task(after(nil, 5, "a"))
      local b = loom.create_task(after(nil, 5, "b"))
      local step = loom.as_completed({ a, b }, { timeout = 1 })
      local r = {}
      for _ = 1, 3 do
        local ok, e = pcall(step)
        r[#r + 1] = ok and tostring(e) or tostring(e)
      end
      a:cancel(); b:cancel()
      return r
    end)
    assert.same({ "TimeoutError", "TimeoutError", "nil" }, r)
  end)

  it("runs a function given twice twice", function()
    local n = 0
    run(function()
      local function f() n = n + 1 end
      local k = 0
      for _ in loom.as_completed({ f, f }) do k = k + 1 end
      assert.equal(2, k)
    end)
    assert.equal(2, n)
  end)

  it("an empty list ends at once", function()
    local n = 0
    run(function()
      for _ in loom.as_completed({}, { timeout = 1 }) do n = n + 1 end
    end)
    assert.equal(0, n)
  end)

  it("leaving the loop early drops the timer and the callbacks", function()
    local loop = H.loop()
    loop:run_until_complete(function()
      local a, b = loop:create_future(), loop:create_future()
      loop:call_later(0.1, a.set_result, a, "a")
      local n = 0
      for fut in loom.as_completed({ a, b }, { timeout = 10 }) do
        n = n + 1
        assert.equal(a, fut)
        break
      end
      assert.equal(1, n)
      -- a's timer has fired and the timeout's is cancelled
      local c = loop:_counts()
      assert.equal(0, c.timers - c.cancelled_timers)
      b:set_result("b")
      loom.sleep(0)
    end)
    assert.near(0.1, loop:time(), 1e-9)
  end)

  it("cancelling the iterating task raises CancelledError from the step", function()
    local loop = H.loop()
    local a
    local main = loop:create_task(function()
      a = loom.create_task(after(nil, 5, "a"))
      for _ in loom.as_completed({ a }) do end
    end)
    loop:call_later(1, main.cancel, main)
    local e = raised(loop.run_until_complete, loop, main)
    assert.is_true(CancelledError:is(e))
    assert.is_false(a:done())
    a:cancel()
    raised(loop.run_until_complete, loop, a)
  end)

  it("refuses bad input", function()
    H.run(function()
      local t = loom.create_task(function() end)
      assert.has_error(function() loom.as_completed(t) end,
        "bad argument #1 to 'as_completed' (list of futures expected, got a single future)")
      assert.has_error(function() loom.as_completed({ 1 }) end,
        "bad argument #1 to 'as_completed' (item 1: loom.Future or loom.Task or function expected, got number)")
      assert.has_error(function() loom.as_completed({ t }, { timeout = -0.5 }) end,
        "bad argument #2 to 'as_completed' (timeout is negative)")
      assert.has_error(function() loom.as_completed({ t }, true) end,
        "bad argument #2 to 'as_completed' (options table expected, got boolean)")
      assert.has_error(function() loom.as_completed({ t }, { tmeout = 1 }) end,
        "bad argument #2 to 'as_completed' (unknown option 'tmeout')")
      t:await()
    end)
    assert.has_error(function() loom.as_completed({}) end,
      "as_completed: not inside a task")
  end)
end)

describe("shield", function()
  it("returns every result of the awaitable", function()
    local _, a, b = run(function()
      return loom.shield(after(nil, 0.1, "v"))
    end)
    assert.same({ "v", "extra" }, { a, b })
  end)

  it("cancelling the caller does not cancel the inner task (test_shield_effect)", function()
    local loop = H.loop()
    local proof = 0
    local fut = loop:create_future()
    local inner
    local outer = loop:create_task(function()
      inner = loom.create_task(function()
        fut:await()
        proof = proof + 1
        return "inner"
      end)
      loom.shield(inner)
      proof = proof + 100
    end)
    loop:call_later(1, outer.cancel, outer)
    local e = raised(loop.run_until_complete, loop, outer)
    assert.is_true(CancelledError:is(e))
    assert.is_false(inner:done())
    fut:set_result()
    assert.equal("inner", loop:run_until_complete(inner))
    assert.equal(1, proof)
  end)

  it("an inner error is raised unchanged; an inner cancel is CancelledError", function()
    local boom = {}
    local e = raised(H.run, function()
      loom.shield(function() loom.sleep(0.1); error(boom) end)
    end)
    assert.is_true(rawequal(boom, e))
    local e2 = raised(H.run, function()
      local t = loom.create_task(after(nil, 1, "x"))
      loom.get_running_loop():call_later(0.5, t.cancel, t)
      loom.shield(t)
    end)
    assert.is_true(CancelledError:is(e2))
  end)

  it("a done awaitable returns at once", function()
    local trace, add = H.tracer()
    run(function()
      local loop = loom.get_running_loop()
      local f = loop:create_future()
      f:set_result(1, 2)
      loop:call_soon(add, "soon")
      add(table.concat({ loom.shield(f) }, ","))
      loom.sleep(0)
    end)
    assert.same({ "1,2", "soon" }, trace)
  end)

  it("an inner error nobody awaits is reported once the caller was cancelled", function()
    -- asyncio: the cancelled outer future drops its callback on the inner
    -- one, so nothing retrieves the inner task's error, which is logged
    local loop = H.loop()
    local got = H.capture(loop)
    local inner
    local outer = loop:create_task(function()
      inner = loom.create_task(function() loom.sleep(2); error("late", 0) end)
      loom.shield(inner)
    end)
    loop:call_later(1, outer.cancel, outer)
    raised(loop.run_until_complete, loop, outer)
    loop:run_until_complete(function() loom.sleep(3) end)
    inner = nil
    collectgarbage()
    collectgarbage()
    assert.equal(1, #got)
    assert.equal("Task exception was never retrieved", got[1].message)
    assert.equal("late", got[1].exception)
  end)

  it("under gather: cancelling the gathering task spares the shielded child", function()
    -- asyncio test_shield_gather
    local loop = H.loop()
    local child1, child2
    local main = loop:create_task(function()
      child1 = loom.create_task(after(nil, 2, "c1"))
      child2 = loom.create_task(after(nil, 2, "c2"))
      loom.gather(function() return loom.shield(child1) end, child2)
    end)
    loop:call_later(1, main.cancel, main)
    raised(loop.run_until_complete, loop, main)
    assert.is_true(child2:cancelled())
    assert.is_false(child1:done())
    assert.equal("c1", loop:run_until_complete(child1))
  end)

  it("refuses bad input", function()
    H.run(function()
      assert.has_error(function() loom.shield(42) end,
        "bad argument #1 to 'shield' (loom.Future or loom.Task or function expected, got number)")
    end)
    assert.has_error(function() loom.shield(function() end) end,
      "shield: not inside a task")
  end)
end)

describe("wait_for", function()
  it("returns every result when the awaitable finishes in time", function()
    local loop, a, b = run(function()
      local t = loom.create_task(after(nil, 0.5, "v"))
      return loom.wait_for(t, 1)
    end)
    assert.same({ "v", "extra" }, { a, b })
    assert.near(0.5, loop:time(), 1e-9)
  end)

  it("a result set before the deadline is returned (test_wait_for_race_condition)", function()
    local _, v = run(function()
      local loop = loom.get_running_loop()
      local fut = loop:create_future()
      loop:call_later(0.1, fut.set_result, fut, "ok")
      return loom.wait_for(fut, 0.2)
    end)
    assert.equal("ok", v)
  end)

  it("on expiry cancels the task, waits for it to finish, raises TimeoutError", function()
    local trace, add = H.tracer()
    local loop = H.loop()
    local inner
    local e = raised(loop.run_until_complete, loop, function()
      inner = loom.create_task(function()
        local ok = pcall(loom.sleep, 10)
        add(("inner cancelled at %g"):format(loom.get_running_loop():time()))
        loom.sleep(0.5)              -- cleaning up takes a while
        add("inner cleaned up")
        if not ok then error(CancelledError("done")) end
      end)
      loom.wait_for(inner, 1)
    end)
    assert.is_true(TimeoutError:is(e))
    assert.same({ "inner cancelled at 1", "inner cleaned up" }, trace)
    assert.is_true(inner:cancelled())
    assert.near(1.5, loop:time(), 1e-9)
  end)

  it("on expiry cancels a plain future", function()
    local loop = H.loop()
    local fut
    local e = raised(loop.run_until_complete, loop, function()
      fut = loop:create_future()
      loom.wait_for(fut, 2)
    end)
    assert.is_true(TimeoutError:is(e))
    assert.is_true(fut:cancelled())
    assert.near(2, loop:time(), 1e-9)
  end)

  it("a function runs inline in the calling task, as a coroutine would", function()
    local _, same, r = run(function()
      local me = loom.current_task()
      local seen
      local r = loom.wait_for(function()
        seen = loom.current_task()
        loom.sleep(0.1)
        return "inline"
      end, 1)
      return seen == me, r
    end)
    assert.is_true(same)
    assert.equal("inline", r)
  end)

  it("returns the result of a task that swallows the cancellation", function()
    -- asyncio 3.12 test_wait_for_cancellation_race_condition: the
    -- timeout's cancellation reaches the inner task, which returns a value
    -- anyway; wait_for returns it rather than losing it
    local loop, v, cancelling = run(function()
      local r = loom.wait_for(function()
        local ok = pcall(loom.sleep, 1)
        assert(not ok)
        return 1
      end, 0.01)
      return r, loom.current_task():cancelling()
    end)
    assert.equal(1, v)
    assert.equal(0, cancelling)
    assert.near(0.01, loop:time(), 1e-9)
  end)

  it("returns the value an inner task gives back when cancelled", function()
    local _, v = run(function()
      local t = loom.create_task(function()
        if not pcall(loom.sleep, 10) then return "salvaged" end
      end)
      return loom.wait_for(t, 1)
    end)
    assert.equal("salvaged", v)
  end)

  it("a result arriving at the deadline's tick: the earlier timer decides", function()
    -- The future is completed by a timer scheduled before the deadline's
    -- timer at the same time: asyncio wakes the task, but its cancel
    -- request comes first (_must_cancel), so the timeout converts it.
    local loop = H.loop()
    local fut
    local e = raised(loop.run_until_complete, loop, function()
      fut = loop:create_future()
      loop:call_later(1, fut.set_result, fut, "just in time")
      return loom.wait_for(fut, 1)
    end)
    assert.is_true(TimeoutError:is(e))
    assert.equal("just in time", fut:result())
  end)

  it("an error raised while the inner task is cancelled is raised unchanged", function()
    -- asyncio test_wait_for_reraises_exception_during_cancellation
    local foo = { "Foo" }
    local e = raised(H.run, function()
      loom.wait_for(function()
        local _ <close> = setmetatable({}, { __close = function() error(foo) end })
        loom.sleep(0.2)
      end, 0.1)
    end)
    assert.is_true(rawequal(foo, e))
  end)

  it("timeout nil waits without a deadline", function()
    local loop, v = run(function()
      return loom.wait_for(after(nil, 1000, "eventually"), nil)
    end)
    assert.equal("eventually", v)
    assert.near(1000, loop:time(), 1e-9)
  end)

  describe("with timeout 0", function()
    it("a function never starts (test_..._coroutine_do_not_started)", function()
      local started = false
      local e = raised(H.run, function()
        loom.wait_for(function() started = true end, 0)
      end)
      assert.is_true(TimeoutError:is(e))
      assert.is_false(started)
    end)

    it("a done future gives its result", function()
      local _, a, b = run(function()
        local f = loom.get_running_loop():create_future()
        f:set_result("a", "b")
        return loom.wait_for(f, 0)
      end)
      assert.same({ "a", "b" }, { a, b })
    end)

    it("a pending task is cancelled and waited for", function()
      local trace, add = H.tracer()
      local loop = H.loop()
      local t
      local e = raised(loop.run_until_complete, loop, function()
        t = loom.create_task(function()
          local ok, err = pcall(loom.sleep, 10)
          add("cancelled")
          loom.sleep(1)
          add("cleaned up")
          error(err, 0)
        end)
        loom.sleep(0)
        loom.wait_for(t, 0)
      end)
      assert.is_true(TimeoutError:is(e))
      assert.same({ "cancelled", "cleaned up" }, trace)
      assert.near(1, loop:time(), 1e-9)
    end)

    it("a task that swallows the cancellation gives its result", function()
      local _, v = run(function()
        local t = loom.create_task(function()
          if not pcall(loom.sleep, 10) then return "kept" end
        end)
        loom.sleep(0)
        return loom.wait_for(t, 0)
      end)
      assert.equal("kept", v)
    end)
  end)

  it("cancelling the caller cancels the inner task, raising CancelledError (bpo-23219)", function()
    local loop = H.loop()
    local inner
    local main = loop:create_task(function()
      inner = loom.create_task(function() loop:create_future():await() end)
      loom.wait_for(inner, 60)
    end)
    loop:call_later(1, main.cancel, main)
    local e = raised(loop.run_until_complete, loop, main)
    assert.is_true(CancelledError:is(e))
    assert.is_false(TimeoutError:is(e))
    assert.is_true(inner:cancelled())
  end)

  it("cancelled by its caller at the deadline's tick stays CancelledError", function()
    local loop = H.loop()
    local main = loop:create_task(function()
      loom.wait_for(after(nil, 10, "x"), 1)
    end)
    loop:call_later(1, main.cancel, main)   -- same tick as the deadline
    local e = raised(loop.run_until_complete, loop, main)
    assert.is_true(CancelledError:is(e))
    assert.is_true(main:cancelled())
  end)

  it("refuses bad input", function()
    H.run(function()
      local t = loom.create_task(function() end)
      assert.has_error(function() loom.wait_for(t, -1) end,
        "bad argument #2 to 'wait_for' (timeout is negative)")
      assert.has_error(function() loom.wait_for(t, 0 / 0) end,
        "bad argument #2 to 'wait_for' (timeout is NaN)")
      assert.has_error(function() loom.wait_for(t, "1") end,
        "bad argument #2 to 'wait_for' (timeout: number expected, got string)")
      assert.has_error(function() loom.wait_for(nil, 1) end,
        "bad argument #1 to 'wait_for' (loom.Future or loom.Task or function expected, got nil)")
      t:await()
    end)
    local other = H.loop():create_future()
    H.run(function()
      assert.has_error(function() loom.wait_for(other, 1) end,
        "bad argument #1 to 'wait_for' (the future belongs to a different event loop)")
    end)
    assert.has_error(function() loom.wait_for(other, 1) end,
      "wait_for: not inside a task")
  end)
end)
