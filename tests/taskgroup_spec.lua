-- taskgroup_spec.lua - task groups (lua/loom/combinators.lua):
-- loom.task_group(fn) and `local tg <close> = loom.TaskGroup()`, with
-- asyncio's TaskGroup semantics: leaving the scope awaits every child; the
-- first child error cancels the siblings and the body; the group raises
-- ExceptionGroup, or the parent's own CancelledError. The cases follow
-- CPython's test_taskgroups.py; the reasoning is written next to each.

local H = require "helper"
local loom = require "loom"
H.setup()

local CancelledError = loom.CancelledError
local ExceptionGroup = loom.ExceptionGroup
local TimeoutError = loom.TimeoutError

local raised = H.raised

local function now()
  return loom.get_running_loop():time()
end

-- A child body: sleeps d, then returns v or raises it when it is a table
-- with .raise.
local function after(d, v)
  return function()
    loom.sleep(d)
    if type(v) == "table" and v.raise then error(v.raise, 0) end
    return v
  end
end

-- The sorted messages (tostring) of a group's errors.
local function kinds(eg)
  local t = {}
  for i, e in ipairs(eg.errors) do t[i] = tostring(e) end
  table.sort(t)
  return t
end

describe("task groups", function()
  it("waits for every child; results stay on the tasks (test_taskgroup_01)", function()
    local loop = H.loop()
    local t1, t2, r = loop:run_until_complete(function()
      local tg <close> = loom.TaskGroup()
      local a = tg:create_task(after(0.1, 42))
      local b = tg:create_task(after(0.2, 11))
      return a, b, "body"
    end)
    assert.equal(42, t1:result())
    assert.equal(11, t2:result())
    assert.equal("body", r)
    assert.near(0.2, loop:time(), 1e-9)
  end)

  it("task_group(fn, ...) runs fn(tg, ...) in the current task and returns its results", function()
    local trace, add = H.tracer()
    local loop = H.loop()
    local a, b = loop:run_until_complete(function()
      local me = loom.current_task()
      return loom.task_group(function(tg, x)
        add("same task " .. tostring(loom.current_task() == me))
        tg:create_task(function()
          loom.sleep(0.5)
          add("child")
        end)
        return x, "y"
      end, "x")
    end)
    assert.same({ "x", "y" }, { a, b })
    assert.same({ "same task true", "child" }, trace)
    assert.near(0.5, loop:time(), 1e-9)
  end)

  it("children may be added later, and by children (test_taskgroup_02, _24)", function()
    local loop = H.loop()
    local n = 0
    loop:run_until_complete(function()
      loom.task_group(function(tg)
        tg:create_task(after(0.1, 42))
        loom.sleep(0.15)
        tg:create_task(function()
          loom.sleep(0.1)
          tg:create_task(function() loom.sleep(0.2); n = n + 1 end)
          n = n + 1
        end)
      end)
    end)
    assert.equal(2, n)
    assert.near(0.45, loop:time(), 1e-9)
  end)

  it("a child cancelled directly is not an error (test_taskgroup_03)", function()
    local t1, t2 = H.run(function()
      local a, b
      loom.task_group(function(tg)
        a = tg:create_task(after(1, 42))
        loom.sleep(0.15)
        a:cancel()
        b = tg:create_task(after(0.2, 11))
      end)
      return a, b
    end)
    assert.is_true(t1:cancelled())
    assert.equal(11, t2:result())
  end)

  it("passes a created child its arguments", function()
    local r = H.run(function()
      local t
      loom.task_group(function(tg)
        t = tg:create_task(function(a, b) return a + b end, 2, 3)
      end)
      return t:result()
    end)
    assert.equal(5, r)
  end)

  describe("a child error", function()
    it("cancels the siblings and the body; ExceptionGroup (test_cancel_children_on_child_error)", function()
      local trace, add = H.tracer()
      local loop = H.loop()
      local sibling
      local e, cancelling = loop:run_until_complete(function()
        local ok, err = pcall(function()
          local tg <close> = loom.TaskGroup()
          for i = 1, 3 do tg:create_task(after(0.1, { raise = "ZDE" .. i })) end
          sibling = tg:create_task(function()
            local ok2, e2 = pcall(loom.sleep, 5)
            add("sibling: " .. tostring(e2))
            error(e2, 0)
          end)
          local ok3, e3 = pcall(loom.sleep, 10)
          add("body: " .. tostring(e3))
          error(e3, 0)
        end)
        assert(not ok)
        add("after the group")
        return err, loom.current_task():cancelling()
      end)
      assert.is_true(ExceptionGroup:is(e))
      assert.equal("unhandled errors in a TaskGroup", e.message)
      -- the three crash in the same iteration: all three are collected
      assert.same({ "ZDE1", "ZDE2", "ZDE3" }, kinds(e))
      assert.is_true(sibling:cancelled())
      -- abort() cancels the sibling, then the parent; both wake in the
      -- next iteration, in that order
      assert.same({ "sibling: CancelledError", "body: CancelledError",
                    "after the group" }, trace)
      assert.equal(0, cancelling)   -- the group took its cancel request back
      assert.near(0.1, loop:time(), 1e-9)
    end)

    it("after the body ended: the group stops waiting and raises (test_taskgroup_04)", function()
      local num, t2_cancel = 0, false
      local t2
      local e = raised(H.run, function()
        loom.task_group(function(tg)
          tg:create_task(after(0.1, { raise = "ZDE" }))
          t2 = tg:create_task(function()
            if not pcall(loom.sleep, 1) then
              t2_cancel = true
              error(CancelledError(), 0)
            end
            num = num + 1
          end)
        end)
        num = num + 10
      end)
      assert.is_true(ExceptionGroup:is(e))
      assert.same({ "ZDE" }, kinds(e))
      assert.equal(0, num)
      assert.is_true(t2_cancel)
      assert.is_true(t2:cancelled())
    end)

    it("leaves the parent's cancel count at 0, so an enclosing timeout still works", function()
      -- the child fails while __close waits: the group cancelled the
      -- parent and must take that back (uncancel) after its wait
      local loop = H.loop()
      local e = loop:run_until_complete(function()
        local eg = raised(loom.task_group, function(tg)
          tg:create_task(after(0.1, { raise = "x" }))
          tg:create_task(after(1, "slow"))
        end)
        assert(ExceptionGroup:is(eg))
        assert.equal(0, loom.current_task():cancelling())
        local ok, err = pcall(loom.timeout, 0.5, loom.sleep, 10)
        return err
      end)
      assert.is_true(TimeoutError:is(e))
      assert.near(0.6, loop:time(), 1e-9)
    end)

    it("an error raised by a child as it is cancelled joins the group", function()
      local e = raised(H.run, function()
        loom.task_group(function(tg)
          tg:create_task(after(0.1, { raise = "first" }))
          tg:create_task(function()
            local _ <close> = setmetatable({}, { __close = function()
              error("cleanup", 0)
            end })
            loom.sleep(5)
          end)
        end)
      end)
      assert.same({ "cleanup", "first" }, kinds(e))
    end)

    it("the body's own error joins the children's (test_taskgroup_19)", function()
      local e = raised(H.run, function()
        loom.task_group(function(tg)
          tg:create_task(after(0.1, { raise = "ZDE" }))
          local _ <close> = setmetatable({}, { __close = function()
            error("MyExc", 0)
          end })
          loom.sleep(10)
        end)
      end)
      assert.is_true(ExceptionGroup:is(e))
      -- the child's error first, the body's last
      assert.same({ "ZDE", "MyExc" }, e.errors)
    end)

    it("create_task while the group shuts down is an error", function()
      local msg
      raised(H.run, function()
        loom.task_group(function(tg)
          tg:create_task(after(0.1, { raise = "x" }))
          local ok = pcall(loom.sleep, 10)
          msg = select(2, pcall(tg.create_task, tg, function() end))
          error(CancelledError(), 0)
        end)
      end)
      assert.matches("create_task: TaskGroup is shutting down", msg)
    end)

    it("with many children, the hydras (test_taskgroup_25)", function()
      local nhydras = 0
      local e = raised(H.run, function()
        loom.task_group(function(tg)
          local function hydra()
            nhydras = nhydras + 1
            loom.sleep(0.01)
            tg:create_task(hydra)
            tg:create_task(hydra)
          end
          tg:create_task(hydra)
          tg:create_task(function()
            while nhydras < 100 do loom.sleep(0.015) end
            error("hercules", 0)
          end)
        end)
      end)
      assert.same({ "hercules" }, e.errors)
      assert.is_true(nhydras >= 100)
    end)
  end)

  describe("the body's error", function()
    it("cancels the children; ExceptionGroup of it (test_taskgroup_09, _10)", function()
      for _, wait in ipairs { 0.1, false } do
        local t1, t2
        local e = raised(H.run, function()
          local tg <close> = loom.TaskGroup()
          t1 = tg:create_task(after(1, 42))
          t2 = tg:create_task(after(2, 11))
          if wait then loom.sleep(wait) end
          error("ZDE", 0)
        end)
        assert.is_true(ExceptionGroup:is(e))
        assert.same({ "ZDE" }, e.errors)
        assert.is_true(t1:cancelled())
        assert.is_true(t2:cancelled())
      end
    end)

    it("raised in place of a cancellation is wrapped (test_taskgroup_18)", function()
      local loop = H.loop()
      local num = 0
      local r = loop:create_task(function()
        loom.task_group(function()
          if not pcall(loom.sleep, 10) then
            num = num + 10
            error("MyExc", 0)
          end
        end)
      end)
      loop:call_later(0.1, r.cancel, r)
      local e = raised(loop.run_until_complete, loop, r)
      assert.is_true(ExceptionGroup:is(e))
      assert.same({ "MyExc" }, e.errors)
      assert.equal(10, num)
    end)
  end)

  describe("cancelled from outside", function()
    it("while the group waits: children cancelled, CancelledError with its message (test_cancellation)", function()
      local loop = H.loop()
      local num = 0
      local r = loop:create_task(function()
        loom.task_group(function(tg)
          for _ = 1, 5 do
            tg:create_task(function()
              local ok, e = pcall(loom.sleep, 5)
              if not ok then num = num + 1; error(e, 0) end
            end)
          end
        end)
      end)
      loop:call_later(0.1, r.cancel, r, "test")
      local e = raised(loop.run_until_complete, loop, r)
      assert.is_true(CancelledError:is(e))
      assert.equal("test", e.message)
      assert.equal(5, num)
      assert.is_true(r:cancelled())
      assert.equal(1, r:cancelling())
    end)

    it("while the body runs: body and children cancelled (test_taskgroup_07)", function()
      local loop = H.loop()
      local num = 0
      local r = loop:create_task(function()
        loom.task_group(function(tg)
          for _ = 1, 5 do
            tg:create_task(function()
              local ok, e = pcall(loom.sleep, 5)
              if not ok then num = num + 1; error(e, 0) end
            end)
          end
          local ok, e = pcall(loom.sleep, 10)
          if not ok then num = num + 10; error(e, 0) end
        end)
      end)
      loop:call_later(0.1, r.cancel, r)
      local e = raised(loop.run_until_complete, loop, r)
      assert.is_true(CancelledError:is(e))
      assert.equal(15, num)
    end)

    it("before the children fail: CancelledError, not wrapped (test_cancellation_in_body)", function()
      local loop = H.loop()
      local kids = {}
      local r = loop:create_task(function()
        loom.task_group(function(tg)
          for i = 1, 5 do kids[i] = tg:create_task(after(0.2, { raise = "ZDE" })) end
          loom.sleep(10)
        end)
      end)
      loop:call_later(0.1, r.cancel, r, "test")
      local e = raised(loop.run_until_complete, loop, r)
      assert.is_true(CancelledError:is(e))
      assert.equal("test", e.message)
      for i = 1, 5 do assert.is_true(kids[i]:cancelled()) end
    end)

    it("an empty group re-raises it (test_taskgroup_17)", function()
      local loop = H.loop()
      local num = 0
      local r = loop:create_task(function()
        local tg <close> = loom.TaskGroup()
        local ok, e = pcall(loom.sleep, 10)
        if not ok then num = num + 10; error(e, 0) end
      end)
      loop:call_later(0.1, r.cancel, r)
      local e = raised(loop.run_until_complete, loop, r)
      assert.is_true(CancelledError:is(e))
      assert.equal(10, num)
    end)

    it("nested groups re-raise it (test_taskgroup_11, _12)", function()
      for _, outer_child in ipairs { false, true } do
        local loop = H.loop()
        local r = loop:create_task(function()
          loom.task_group(function(g1)
            if outer_child then g1:create_task(loom.sleep, 10) end
            loom.task_group(function(g2)
              for _ = 1, 5 do g2:create_task(after(0.2, { raise = "ZDE" })) end
              loom.sleep(10)
            end)
          end)
        end)
        loop:call_later(0.1, r.cancel, r)
        local e = raised(loop.run_until_complete, loop, r)
        assert.is_true(CancelledError:is(e))
        assert.is_true(r:cancelled())
      end
    end)

    it("a second cancel while the children finish is not lost", function()
      local loop = H.loop()
      local trace, add = H.tracer()
      local r = loop:create_task(function()
        loom.task_group(function(tg)
          tg:create_task(function()
            pcall(loom.sleep, 10)     -- swallows the group's cancel
            loom.sleep(1)
            add("child done")
          end)
        end)
      end)
      loop:call_later(0.1, r.cancel, r)
      loop:call_later(0.5, r.cancel, r)
      local e = raised(loop.run_until_complete, loop, r)
      assert.is_true(CancelledError:is(e))
      assert.same({ "child done" }, trace)
      assert.near(1.1, loop:time(), 1e-9)
      assert.equal(2, r:cancelling())
    end)

    it("together with a child error: ExceptionGroup, and the parent stays cancelled (test_taskgroup_15)", function()
      -- Cancelled at 0.1, the body catches it and sleeps on; the child
      -- fails at 0.3, the group cancels the parent again (count 2). At
      -- __close the group takes its own request back (count 1): errors
      -- win over the cancellation, but the outside request is kept by
      -- uncancel() + cancel(), so the next await raises CancelledError.
      local loop = H.loop()
      local trace, add = H.tracer()
      local r = loop:create_task(function()
        local e = raised(loom.task_group, function(tg)
          tg:create_task(after(0.3, { raise = "ZDE" }))
          local ok, err = pcall(loom.sleep, 10)
          add(("body cancelled at %g"):format(now()))
          loom.sleep(0.5)
          add("not reached")
        end)
        add(("group raised %s %s at %g"):format(tostring(e),
          table.concat(e.errors, ","), now()))
        add("cancelling " .. loom.current_task():cancelling())
        local ok, e2 = pcall(loom.sleep, 0)
        add("then " .. tostring(e2))
        return "survived"
      end)
      loop:call_later(0.1, r.cancel, r)
      assert.equal("survived", loop:run_until_complete(r))
      assert.same({
        "body cancelled at 0.1",
        "group raised ExceptionGroup: unhandled errors in a TaskGroup ZDE at 0.3",
        "cancelling 1",
        "then CancelledError",
      }, trace)
    end)

    it("by an enclosing timeout: TimeoutError", function()
      local loop = H.loop()
      local child
      local e = loop:run_until_complete(function()
        local ok, err = pcall(loom.timeout, 1, loom.task_group, function(tg)
          child = tg:create_task(loom.sleep, 10)
        end)
        assert(not ok)
        return err
      end)
      assert.is_true(TimeoutError:is(e))
      assert.is_true(child:cancelled())
      assert.near(1, loop:time(), 1e-9)
    end)
  end)

  describe("nested groups", function()
    it("an outer child's error cancels the inner group (test_taskgroup_13)", function()
      local e = raised(H.run, function()
        loom.task_group(function(g1)
          g1:create_task(after(0.1, { raise = "ValueError 0.1" }))
          loom.task_group(function(g2)
            g2:create_task(after(10, { raise = "ValueError 10" }))
          end)
        end)
      end)
      assert.is_true(ExceptionGroup:is(e))
      assert.same({ "ValueError 0.1" }, e.errors)
    end)

    it("an inner group's ExceptionGroup is the outer body's error (test_taskgroup_14)", function()
      local e = raised(H.run, function()
        loom.task_group(function(g1)
          g1:create_task(after(10, { raise = "ValueError 10" }))
          loom.task_group(function(g2)
            g2:create_task(after(0.1, { raise = "ValueError 0.1" }))
          end)
        end)
      end)
      assert.is_true(ExceptionGroup:is(e))
      assert.equal(1, #e.errors)
      assert.is_true(ExceptionGroup:is(e.errors[1]))
      assert.same({ "ValueError 0.1" }, e.errors[1].errors)
    end)
  end)

  it("cancels the children in creation order", function()
    local trace, add = H.tracer()
    raised(H.run, function()
      loom.task_group(function(tg)
        for i = 1, 40 do
          tg:create_task(function()
            if not pcall(loom.sleep, 10) then add(i) end
            error(CancelledError(), 0)
          end)
          if i % 3 == 0 then
            tg:create_task(function() end)   -- done early: holes in the list
          end
        end
        loom.sleep(1)
        error("stop", 0)
      end)
    end)
    local want = {}
    for i = 1, 40 do want[i] = i end
    assert.same(want, trace)
  end)

  it("scales to 10,000 children", function()
    local n = 0
    H.run(function()
      loom.task_group(function(tg)
        for i = 1, 10000 do
          tg:create_task(function()
            loom.sleep(i % 7 == 0 and 0 or 0.001)
            n = n + 1
          end)
        end
      end)
    end)
    assert.equal(10000, n)
  end)

  it("create_task on a finished group is an error", function()
    H.run(function()
      local saved
      loom.task_group(function(tg) saved = tg end)
      assert.has_error(function() saved:create_task(function() end) end,
        "create_task: TaskGroup is finished")
      assert.has_error(function() saved.create_task({}, function() end) end,
        "calling 'create_task' on bad self (loom.TaskGroup expected, got table)")
    end)
  end)

  it("reports a child error when the parent is already done", function()
    local loop = H.loop()
    local got = H.capture(loop)
    local tg
    local parent = loop:create_task(function() tg = loom.TaskGroup() end)
    loop:run_until_complete(parent)
    -- the group was never closed; a child made now fails after its parent
    local child = tg:create_task(function() error("orphan", 0) end)
    loop:run_until_complete(function() loom.sleep(0); loom.sleep(0) end)
    assert.equal(1, #got)
    assert.matches("has errored out but its parent task .* is already completed",
      got[1].message)
    assert.equal("orphan", got[1].exception)
    assert.equal(child, got[1].task)
  end)

  it("has a readable tostring", function()
    H.run(function()
      local tg <close> = loom.TaskGroup()
      tg:create_task(loom.sleep, 0)
      assert.equal("<TaskGroup tasks=1 entered>", tostring(tg))
    end)
  end)

  describe("bad input", function()
    it("needs a task and a function", function()
      assert.has_error(function() loom.TaskGroup() end, "TaskGroup: not inside a task")
      assert.has_error(function() loom.task_group(function() end) end,
        "task_group: not inside a task")
      H.run(function()
        assert.has_error(function() loom.task_group(42) end,
          "bad argument #1 to 'task_group' (function expected, got number)")
        local tg <close> = loom.TaskGroup()
        assert.has_error(function() tg:create_task("f") end,
          "bad argument #1 to 'create_task' (function expected, got string)")
      end)
    end)
  end)
end)

-- Scripts run in a separate process, so a crash of the core fails one test
-- rather than the whole suite. Returns the exit status and the output.
local function run_script(src)
  local script, out = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "wb"))
  f:write(src)
  f:close()
  local exe = os.getenv("LOOM_EXE") or "build/bin/loom"
  local ok, how, code = os.execute(("unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS; "
    .. "timeout -s KILL 20 '%s' --plain '%s' >'%s' 2>&1"):format(exe, script, out))
  f = assert(io.open(out, "rb"))
  local text = f:read("a")
  f:close()
  os.remove(script)
  os.remove(out)
  if how == "signal" then code = 128 + code end
  return code, text
end

describe("core: a task with a cancel request pending awaits a pending future", function()
  -- asyncio's __step: when the coroutine yields a future and _must_cancel
  -- is set, the future is cancelled at once and the task raises
  -- CancelledError at the await. loom's core (task.c, loom__task_step)
  -- passes the cancel message instead of the future to cancel_waiter,
  -- which dereferences NULL: the process dies (SIGSEGV).
  it("#core-bug a task that cancels itself, then awaits", function()
    local status, out = run_script([[
      local loop = loom.new_event_loop { virtual_time = true }
      print(loop:run_until_complete(function()
        loom.current_task():cancel()
        local ok, e = pcall(function() return loop:create_future():await() end)
        return ok, tostring(e)
      end))
    ]])
    assert.equal(0, status, out)
    assert.equal("false\tCancelledError\n", out)
  end)

  it("#core-bug after a group raised while cancelled from outside (test_taskgroup_15)", function()
    -- the group keeps the outside request with uncancel() + cancel() on
    -- the running parent, so the parent's next await is such an await
    local status, out = run_script([[
      local loop = loom.new_event_loop { virtual_time = true }
      local r = loop:create_task(function()
        local ok, e = pcall(loom.task_group, function(tg)
          tg:create_task(function() loom.sleep(0.3); error("ZDE", 0) end)
          pcall(loom.sleep, 10)
          loom.sleep(0.5)
        end)
        local ok2, e2 = pcall(function() return loop:create_future():await() end)
        return tostring(e), tostring(e2)
      end)
      loop:call_later(0.1, r.cancel, r)
      print(loop:run_until_complete(r))
    ]])
    assert.equal(0, status, out)
    assert.equal("ExceptionGroup: unhandled errors in a TaskGroup\tCancelledError\n", out)
  end)
end)
