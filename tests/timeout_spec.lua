-- timeout_spec.lua - deadlines: loom.timeout / loom.timeout_at, in the
-- function form and as a to-be-closed scope (lua/loom/combinators.lua),
-- with asyncio 3.12's Timeout semantics: the scope that expired converts
-- the CancelledError it caused into TimeoutError; other cancellations go
-- through. The cases follow CPython's test_timeouts.py.

local H = require "helper"
local loom = require "loom"
H.setup()

local CancelledError = loom.CancelledError
local TimeoutError = loom.TimeoutError

local raised = H.raised

local function now()
  return loom.get_running_loop():time()
end

describe("timeout", function()
  describe("the function form", function()
    it("returns fn's results when it finishes in time", function()
      local loop = H.loop()
      local a, b, c = loop:run_until_complete(function()
        return loom.timeout(1, function(x, y)
          loom.sleep(0.5)
          return x, y, nil
        end, "x", "y")
      end)
      assert.same({ "x", "y" }, { a, b })
      assert.is_nil(c)
      assert.near(0.5, loop:time(), 1e-9)
    end)

    it("keeps every result, nils included", function()
      local n = H.run(function()
        return select("#", loom.timeout(1, function() return nil, nil, 3 end))
      end)
      assert.equal(3, n)
    end)

    it("raises TimeoutError at the deadline; the body sees CancelledError", function()
      -- test_waiter_cancelled
      local trace, add = H.tracer()
      local loop = H.loop()
      local cancelling
      local e = loop:run_until_complete(function()
        local ok, err = pcall(loom.timeout, 1, function()
          local ok2, inner = pcall(loom.sleep, 10)
          add(("body: %s at %g"):format(tostring(inner), now()))
          if not ok2 then error(inner, 0) end
        end)
        assert(not ok)
        cancelling = loom.current_task():cancelling()
        return err
      end)
      assert.is_true(TimeoutError:is(e))
      assert.equal("TimeoutError", tostring(e))
      assert.same({ "body: CancelledError at 1" }, trace)
      assert.equal(0, cancelling)
    end)

    it("the task goes on after a timeout; it is not cancelled (test_outer_task_is_not_cancelled)", function()
      local loop = H.loop()
      local t = loop:create_task(function()
        local e = raised(loom.timeout, 0.001, loom.sleep, 10)
        assert(TimeoutError:is(e))
        loom.sleep(1)
        return "went on"
      end)
      assert.equal("went on", loop:run_until_complete(t))
      assert.is_false(t:cancelled())
    end)

    it("a body error passes unchanged (test_foreign_exception_passed)", function()
      local boom = {}
      local e = raised(H.run, function()
        loom.timeout(1, function() error(boom) end)
      end)
      assert.is_true(rawequal(boom, e))
    end)

    it("an error raised while cancelled passes unchanged (test_foreign_exception_on_timeout)", function()
      local boom = {}
      local e = raised(H.run, function()
        loom.timeout(0.01, function()
          local _ <close> = setmetatable({}, { __close = function() error(boom) end })
          loom.sleep(1)
        end)
      end)
      assert.is_true(rawequal(boom, e))
    end)

    it("a body that swallows the cancellation returns normally", function()
      local loop = H.loop()
      local r, cancelling = loop:run_until_complete(function()
        local r = loom.timeout(1, function()
          pcall(loom.sleep, 10)
          return "swallowed"
        end)
        return r, loom.current_task():cancelling()
      end)
      assert.equal("swallowed", r)
      assert.equal(0, cancelling)
      assert.near(1, loop:time(), 1e-9)
    end)

    it("delay nil means no deadline", function()
      local loop = H.loop()
      local r = loop:run_until_complete(function()
        return loom.timeout(nil, function() loom.sleep(1000) return "done" end)
      end)
      assert.equal("done", r)
      assert.near(1000, loop:time(), 1e-9)
    end)

    it("a body that never awaits finishes even with delay 0", function()
      local r = H.run(function()
        return loom.timeout(0, function() return "quick" end)
      end)
      assert.equal("quick", r)
    end)
  end)

  describe("the scope form", function()
    it("raises TimeoutError when the block is left (test_timeout_basic)", function()
      local loop = H.loop()
      local scope
      local e, after = loop:run_until_complete(function()
        local ok, err = pcall(function()
          local t <close> = loom.timeout(0.01)
          scope = t
          loom.sleep(10)
        end)
        assert(not ok)
        return err, now()
      end)
      assert.is_true(TimeoutError:is(e))
      assert.is_true(scope:expired())
      assert.near(0.01, after, 1e-9)
    end)

    it("not expired: when() is the deadline, expired() false (test_timeout_not_called)", function()
      local r = H.run(function()
        local t0 = now()
        local scope
        do
          local t <close> = loom.timeout(10)
          scope = t
          loom.sleep(0.01)
          assert.near(t0 + 10, t:when(), 1e-9)
        end
        loom.sleep(20)           -- the deadline is gone with the scope
        return scope:expired()
      end)
      assert.is_false(r)
    end)

    it("delay nil: when() is nil and nothing expires (test_timeout_disabled)", function()
      H.run(function()
        local t <close> = loom.timeout(nil)
        loom.sleep(0.01)
        assert.is_nil(t:when())
        assert.is_false(t:expired())
      end)
    end)

    it("timeout_at uses loop time (test_timeout_at_basic)", function()
      local loop = H.loop()
      local when, e = loop:run_until_complete(function()
        local deadline = now() + 0.01
        local scope
        local ok, err = pcall(function()
          local t <close> = loom.timeout_at(deadline)
          scope = t
          loom.sleep(10)
        end)
        assert(not ok and scope:expired())
        return scope:when() == deadline, err
      end)
      assert.is_true(when)
      assert.is_true(TimeoutError:is(e))
      assert.near(0.01, loop:time(), 1e-9)
    end)

    it("delay 0 expires at the first await, even sleep(0) (test_timeout_zero_sleep_zero)", function()
      -- the expiry is scheduled with call_soon ahead of the task's own
      -- step after sleep(0): the task is cancelled before it runs again
      local e, expired = H.run(function()
        local scope
        local ok, err = pcall(function()
          local t <close> = loom.timeout(0)
          scope = t
          loom.sleep(0)
        end)
        assert(not ok)
        return err, scope:expired()
      end)
      assert.is_true(TimeoutError:is(e))
      assert.is_true(expired)
    end)

    it("timeout_at in the past expires at the first await", function()
      local loop = H.loop()
      local e = loop:run_until_complete(function()
        loom.sleep(5)
        local ok, err = pcall(loom.timeout_at, now() - 3, loom.sleep, 10)
        assert(not ok)
        return err
      end)
      assert.is_true(TimeoutError:is(e))
      assert.near(5, loop:time(), 1e-9)
    end)

    it("a foreign cancel is not a timeout (test_foreign_cancel_doesnt_timeout_if_not_expired)", function()
      local loop = H.loop()
      local scope
      local t = loop:create_task(function()
        local s <close> = loom.timeout(10)
        scope = s
        loom.current_task():cancel()
        loom.sleep(10)
      end)
      local e = raised(loop.run_until_complete, loop, t)
      assert.is_true(CancelledError:is(e))
      assert.is_false(scope:expired())
      assert.is_true(t:cancelled())
    end)

    it("an outer cancel at the deadline's tick stays CancelledError", function()
      -- Both the deadline and an outside cancel() come in the same
      -- iteration: the count is 2 at __close, uncancel() leaves 1, more
      -- than when the scope was entered, so the error is not converted.
      local loop = H.loop()
      local scope
      local t = loop:create_task(function()
        local s <close> = loom.timeout(1)
        scope = s
        loom.sleep(10)
      end)
      loop:call_later(1, t.cancel, t, "outside")
      local e = raised(loop.run_until_complete, loop, t)
      assert.is_true(CancelledError:is(e))
      assert.is_true(scope:expired())
      assert.is_true(t:cancelled())
      assert.equal(1, t:cancelling())
    end)

    it("an outer cancel while the body cleans up after the expiry stays CancelledError", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local t = loop:create_task(function()
        loom.timeout(1, function()
          local ok = pcall(loom.sleep, 10)
          add("expired " .. tostring(not ok))
          loom.sleep(1)       -- cancelled from outside meanwhile
          add("not reached")
        end)
      end)
      loop:call_later(1.5, t.cancel, t)
      local e = raised(loop.run_until_complete, loop, t)
      assert.is_true(CancelledError:is(e))
      assert.same({ "expired true" }, trace)
    end)

    it("is closed by an error of the body too, without converting it", function()
      H.run(function()
        local scope
        local e = raised(function()
          local t <close> = loom.timeout(1)
          scope = t
          error("body", 0)
        end)
        assert.equal("body", e)
        assert.is_false(scope:expired())
        loom.sleep(2)          -- the deadline was dropped
      end)
    end)
  end)

  describe("nested", function()
    it("only the scope that expired converts: the inner one", function()
      local trace, add = H.tracer()
      H.run(function()
        local outer_scope
        loom.timeout(10, function()
          outer_scope = nil
          local e = raised(loom.timeout, 1, loom.sleep, 5)
          add(("inner: %s at %g"):format(tostring(e), now()))
          loom.sleep(1)
          add("outer body goes on")
        end)
        add("done at " .. now())
      end)
      assert.same({ "inner: TimeoutError at 1", "outer body goes on", "done at 2.0" },
        trace)
    end)

    it("only the scope that expired converts: the outer one", function()
      local trace, add = H.tracer()
      local loop = H.loop()
      local inner_scope
      local e = loop:run_until_complete(function()
        local ok, err = pcall(loom.timeout, 1, function()
          local ok2, e2 = pcall(function()
            local t <close> = loom.timeout(10)
            inner_scope = t
            loom.sleep(5)
          end)
          add("inner scope saw " .. tostring(e2))
          error(e2, 0)
        end)
        return err
      end)
      assert.is_true(TimeoutError:is(e))
      assert.is_false(inner_scope:expired())
      assert.same({ "inner scope saw CancelledError" }, trace)
      assert.near(1, loop:time(), 1e-9)
    end)

    it("both expire at once: the outermost converts (test_nested_timeouts)", function()
      local loop = H.loop()
      local cancelled = false
      local cm1, cm2
      local e, cancelling = loop:run_until_complete(function()
        local deadline = now() + 0.01
        local ok, err = pcall(function()
          local t1 <close> = loom.timeout_at(deadline)
          cm1 = t1
          local ok2, e2 = pcall(function()
            local t2 <close> = loom.timeout_at(deadline)
            cm2 = t2
            loom.sleep(10)
          end)
          if CancelledError:is(e2) then cancelled = true end
          error(e2, 0)
        end)
        return err, loom.current_task():cancelling()
      end)
      assert.is_true(TimeoutError:is(e))
      assert.is_true(cancelled)
      assert.is_true(cm1:expired())
      assert.is_true(cm2:expired())
      assert.equal(0, cancelling)
    end)

    it("an inner timeout inside an expiring outer one (test_nested_timeouts_loop_busy)", function()
      -- The inner deadline expires; the outer one's body goes on and is
      -- interrupted by the outer deadline later.
      local loop = H.loop()
      local e = loop:run_until_complete(function()
        local ok, err = pcall(loom.timeout, 0.1, function()
          local e1 = raised(loom.timeout, 0.01, loom.sleep, 1)
          assert(TimeoutError:is(e1))
          loom.sleep(10)
        end)
        return err
      end)
      assert.is_true(TimeoutError:is(e))
      assert.near(0.1, loop:time(), 1e-9)
    end)
  end)

  describe("reschedule", function()
    it("when, expired and reschedule check self, at the caller's line", function()
      local loop = H.loop()
      loop:run_until_complete(function()
        local t <close> = loom.timeout(100)
        for _, c in ipairs { { "when", nil, "nil" }, { "expired", 5, "number" },
                             { "reschedule", {}, "table" } } do
          local e = H.raised(function() t[c[1]](c[2], 1) end)
          assert.matches("^[^:]*timeout_spec%.lua:%d+: bad argument #1 to '"
            .. c[1] .. "' %(loom.Timeout expected, got " .. c[3] .. "%)", e)
        end
      end)
    end)

    it("moves the deadline later, earlier, or away", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      loop:run_until_complete(function()
        -- later
        local e = raised(function()
          local t <close> = loom.timeout(1)
          loom.sleep(0.5)
          t:reschedule(now() + 2)
          assert.near(2.5, t:when(), 1e-9)
          loom.sleep(5)
        end)
        add(("later: %s at %g"):format(tostring(e), now()))
        -- earlier, into the past: expires at the next await
        e = raised(function()
          local t <close> = loom.timeout(10)
          t:reschedule(now() - 1)
          loom.sleep(0)
        end)
        add(("past: %s at %g"):format(tostring(e), now()))
        -- away
        do
          local t <close> = loom.timeout(1)
          t:reschedule(nil)
          assert.is_nil(t:when())
          loom.sleep(5)
          add("away: " .. tostring(t:expired()))
        end
      end)
      assert.same({ "later: TimeoutError at 2.5", "past: TimeoutError at 2.5",
                    "away: false" }, trace)
    end)

    it("is refused once the scope expired or finished", function()
      H.run(function()
        local scope
        pcall(function()
          local t <close> = loom.timeout(0.1)
          scope = t
          pcall(loom.sleep, 1)          -- expiring now
          assert.has_error(function() t:reschedule(5) end,
            "reschedule: cannot change the deadline of an expiring Timeout")
          error("leave", 0)
        end)
        assert.has_error(function() scope:reschedule(5) end,
          "reschedule: cannot change the deadline of a expired Timeout")
        local t2 = loom.timeout(1)
        t2:__close()
        assert.has_error(function() t2:reschedule(nil) end,
          "reschedule: cannot change the deadline of a finished Timeout")
        assert.has_error(function() t2:reschedule(0 / 0) end,
          "bad argument #1 to 'reschedule' (deadline is NaN)")
      end)
    end)
  end)

  it("has a readable tostring", function()
    H.run(function()
      local t <close> = loom.timeout(1)
      assert.matches("^<Timeout %[active%] when=1>$", tostring(t))
    end)
  end)

  describe("bad input", function()
    it("names the function and the argument", function()
      H.run(function()
        assert.has_error(function() loom.timeout(-1) end,
          "bad argument #1 to 'timeout' (delay is negative)")
        assert.has_error(function() loom.timeout(0 / 0, print) end,
          "bad argument #1 to 'timeout' (delay is NaN)")
        assert.has_error(function() loom.timeout("1") end,
          "bad argument #1 to 'timeout' (delay: number expected, got string)")
        assert.has_error(function() loom.timeout(1, 42) end,
          "bad argument #2 to 'timeout' (function expected, got number)")
        assert.has_error(function() loom.timeout_at(0 / 0) end,
          "bad argument #1 to 'timeout_at' (deadline is NaN)")
        assert.has_error(function() loom.timeout_at({}) end,
          "bad argument #1 to 'timeout_at' (number expected, got table)")
        assert.has_error(function() loom.timeout_at(1, "f") end,
          "bad argument #2 to 'timeout_at' (function expected, got string)")
      end)
    end)

    it("needs a task", function()
      assert.has_error(function() loom.timeout(1) end, "timeout: not inside a task")
      assert.has_error(function() loom.timeout_at(1, print) end,
        "timeout_at: not inside a task")
      local loop = H.loop()
      local e
      loop:call_soon(function() e = raised(loom.timeout, 1) end)
      loop:run_until_complete(function() loom.sleep(0) end)
      assert.matches("timeout: not inside a task", e)
    end)
  end)
end)

describe("wait_for with deadlines", function()
  it("inside a timeout scope: the earlier deadline decides", function()
    local loop = H.loop()
    local e = loop:run_until_complete(function()
      local ok, err = pcall(loom.timeout, 1, loom.wait_for, function()
        loom.sleep(10)
      end, 5)
      return err
    end)
    assert.is_true(TimeoutError:is(e))
    assert.near(1, loop:time(), 1e-9)
  end)
end)
