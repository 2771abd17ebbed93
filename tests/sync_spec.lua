-- sync_spec.lua - Lock, Event, Condition, Semaphore, BoundedSemaphore and
-- Barrier (lua/loom/sync.lua). Most cases follow CPython's
-- Lib/test/test_asyncio/test_locks.py, including its cancellation races.

local H = require "helper"
local loom = require "loom"
H.setup()

local errors = require "loom.errors"
local CancelledError = errors.CancelledError
local BrokenBarrierError = errors.BrokenBarrierError

local sleep, create_task = loom.sleep, loom.create_task

-- Lets the loop run n iterations (asyncio's `await asyncio.sleep(0)`).
local function spin(n)
  for _ = 1, n or 1 do sleep(0) end
end

-- Awaits each task; returns a list of {ok, value} (gather with
-- return_exceptions).
local function settle(tasks)
  local out = {}
  for i, t in ipairs(tasks) do
    local ok, v = pcall(loom.await, t)
    out[i] = { ok = ok, v = v }
  end
  return out
end

-- Awaits each task, raising the first error; returns the first result of
-- each (gather).
local function gather(tasks)
  local out = {}
  for i, t in ipairs(tasks) do out[i] = t:await() end
  return out
end

local function ntasks(n, fn, ...)
  local ts = {}
  for i = 1, n do ts[i] = create_task(fn, ...) end
  return ts
end

local function cancelled_error(e) return CancelledError:is(e) end

-- The error fn raises (it must raise).
local function err_of(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

local THIS = "sync_spec%.lua:%d+: "


describe("Lock", function()
  it("acquire, release, locked, tostring", function()
    H.run(function()
      local lock = loom.Lock()
      assert.is_false(lock:locked())
      assert.matches("^<loom%.Lock 0x%x+ %[unlocked%]>$", tostring(lock))
      assert.is_true(lock:acquire())
      assert.is_true(lock:locked())
      assert.matches("%[locked%]>$", tostring(lock))
      local t = create_task(lock.acquire, lock)
      spin()
      assert.matches("%[locked, waiters:1%]>$", tostring(lock))
      lock:release()
      assert.is_true(t:await())
      assert.is_true(lock:locked())
      lock:release()
      assert.is_false(lock:locked())
      assert.equal("loom.Lock", tostring(loom.Lock))
    end)
  end)

  it("a free lock is taken without a loop or a task", function()
    local lock = loom.Lock()
    assert.is_true(lock:acquire())
    lock:release()
  end)

  it("wakes waiters in FIFO order (test_acquire)", function()
    H.run(function()
      local lock = loom.Lock()
      local result, add = H.tracer()
      assert.is_true(lock:acquire())
      local function c(i)
        if lock:acquire() then add(i) end
        return true
      end
      local t1 = create_task(c, 1)
      local t2 = create_task(c, 2)
      spin()
      assert.same({}, result)
      lock:release()
      spin()
      assert.same({ 1 }, result)
      spin()
      assert.same({ 1 }, result)
      local t3 = create_task(c, 3)
      lock:release()
      spin()
      assert.same({ 1, 2 }, result)
      lock:release()
      spin()
      assert.same({ 1, 2, 3 }, result)
      for _, t in ipairs { t1, t2, t3 } do
        assert.is_true(t:done())
        assert.is_true(t:result())
      end
      lock:release()
    end)
  end)

  it("a newcomer cannot barge past a woken waiter", function()
    H.run(function()
      local lock = loom.Lock()
      local trace, add = H.tracer()
      lock:acquire()
      local waiter = create_task(function()
        lock:acquire(); add("waiter"); lock:release()
      end)
      spin()
      lock:release()           -- wakes the waiter, which has not run yet
      assert.is_false(lock:locked())
      lock:acquire()           -- this task is the newcomer: it queues
      add("newcomer")
      lock:release()
      waiter:await()
      assert.same({ "waiter", "newcomer" }, trace)
    end)
  end)

  it("a newcomer takes a free lock when every waiter is cancelled", function()
    H.run(function()
      local lock = loom.Lock()
      lock:acquire()
      local w = create_task(lock.acquire, lock)
      spin()
      w:cancel()
      lock:release()
      assert.is_true(lock:acquire())   -- w's future is cancelled: no wait
      spin()
      assert.is_true(w:cancelled())
      assert.is_true(lock:locked())    -- w did not take it or wake anyone
      lock:release()
      assert.equal(0, lock._n)
    end)
  end)

  it("a waiter cancelled while acquiring leaves no trace (test_acquire_cancel)", function()
    H.run(function()
      local lock = loom.Lock()
      lock:acquire()
      local task = create_task(lock.acquire, lock)
      loom.get_running_loop():call_soon(function() task:cancel() end)
      assert.is_true(cancelled_error(err_of(loom.await, task)))
      assert.equal(0, lock._n)
      assert.is_true(lock:locked())
      lock:release()
    end)
  end)

  it("cancel of a waiter and release at once wake the next (test_cancel_race)", function()
    H.run(function()
      local loop = loom.get_running_loop()
      local lock = loom.Lock()
      local function lockit(_, blocker)
        lock:acquire()
        local ok, e = pcall(function() if blocker then blocker:await() end end)
        lock:release()
        if not ok then error(e, 0) end
      end
      local fa = loop:create_future()
      local ta = create_task(lockit, "A", fa)
      spin()
      assert.is_true(lock:locked())
      local tb = create_task(lockit, "B")
      spin()
      assert.equal(1, lock._n)
      local tc = create_task(lockit, "C")
      spin()
      assert.equal(2, lock._n)
      fa:set_result(nil)
      tb:cancel()
      assert.is_true(lock._head[1]:cancelled())
      spin()
      assert.is_false(lock:locked())
      assert.is_true(ta:done())
      assert.is_true(tb:cancelled())
      tc:await()
      assert.is_false(lock:locked())
    end)
  end)

  it("cancel then release in one callback takes the lock once (test_cancel_release_race)", function()
    H.run(function()
      local loop = loom.get_running_loop()
      local lock = loom.Lock()
      local lock_count, call_count = 0, 0
      local function lockit()
        call_count = call_count + 1
        lock:acquire()
        lock_count = lock_count + 1
      end
      lock:acquire()
      local t1 = create_task(lockit)
      local t2 = create_task(lockit)
      local t3 = create_task(lockit)
      spin()
      loop:call_soon(function()
        t1:cancel()
        lock:release()
      end)
      assert.is_true(cancelled_error(err_of(loom.await, t1)))
      assert.equal(1, lock_count)
      assert.equal(3, call_count)
      assert.is_true(t1:cancelled() and t2:done())
      t3:cancel()
      spin()
      assert.is_true(t3:cancelled())
    end)
  end)

  it("a waiter cancelled after release woke it wakes the next (test_finished_waiter_cancelled)", function()
    H.run(function()
      local lock = loom.Lock()
      lock:acquire()
      local tb = create_task(lock.acquire, lock)
      spin()
      assert.equal(1, lock._n)
      local tc = create_task(lock.acquire, lock)
      tb:cancel()
      lock:release()
      spin()
      assert.is_true(lock:locked())
      assert.is_true(tb:cancelled())
      assert.is_true(tc:await())
      lock:release()
    end)
  end)

  it("release wakes a waiter that is then cancelled: the lock is not left held", function()
    H.run(function()
      local lock = loom.Lock()
      local trace, add = H.tracer()
      lock:acquire()
      local tb = create_task(function() lock:acquire(); add("b") end)
      local tc = create_task(function() lock:acquire(); add("c"); lock:release() end)
      spin()
      lock:release()          -- b's future is done now
      tb:cancel()             -- b raises CancelledError at its wake-up
      assert.is_true(cancelled_error(err_of(loom.await, tb)))
      tc:await()
      assert.same({ "c" }, trace)
      assert.is_false(lock:locked())
    end)
  end)

  it("release of an unlocked lock is an error", function()
    local lock = loom.Lock()
    local e = err_of(function() lock:release() end)
    assert.matches(THIS .. "release: Lock is not acquired$", e)
  end)

  it("acquiring a free lock allocates nothing", function()
    H.run(function()
      local lock = loom.Lock()
      local sem = loom.Semaphore(2)
      do local _ <close> = lock:hold() end   -- makes the guards
      do local _ <close> = sem:hold() end
      collectgarbage("stop")
      local before = collectgarbage("count")
      for _ = 1, 1000 do
        lock:acquire()
        lock:release()
        sem:acquire()
        sem:release()
        do local _ <close> = lock:hold() end
        do local _ <close> = sem:hold() end
      end
      local after = collectgarbage("count")
      collectgarbage("restart")
      assert.equal(before, after)
    end)
  end)

  it("is bound to the first loop it waits on", function()
    local lock = loom.Lock()
    H.run(function()
      lock:acquire()
      local t = create_task(lock.acquire, lock)
      spin()
      lock:release()
      t:await()
      lock:release()
    end)
    H.run(function()
      lock:acquire()   -- no wait, no loop needed
      local t = create_task(function() return lock:acquire() end)
      local e = err_of(loom.await, t)
      assert.matches("acquire: <loom%.Lock 0x%x+ %[locked%]> is bound to a "
        .. "different event loop", e)
      assert.equal(0, lock._n)
      lock:release()
    end)
  end)

  it("waiting outside a task, or without a loop, is an error", function()
    local lock = loom.Lock()
    lock:acquire()
    assert.matches(THIS .. "acquire: no running event loop",
      err_of(function() lock:acquire() end))
    H.run(function()
      local got
      loom.get_running_loop():call_soon(function()
        got = err_of(function() lock:acquire() end)
      end)
      spin(2)
      assert.matches(THIS .. "acquire: not inside a task", got)
      assert.equal(0, lock._n)
    end)
    lock:release()
  end)

  it("waiting from a plain coroutine inside a task is an error and leaves no waiter", function()
    H.run(function()
      local lock, ev = loom.Lock(), loom.Event()
      lock:acquire()
      local ok, e = coroutine.wrap(function() return pcall(lock.acquire, lock) end)()
      assert.is_false(ok)
      assert.matches("not a task", e)
      assert.equal(0, lock._n)
      ok, e = coroutine.wrap(function() return pcall(ev.wait, ev) end)()
      assert.is_false(ok)
      assert.equal(0, ev._n)
      -- the lock still works
      local t = create_task(lock.acquire, lock)
      spin()
      lock:release()
      assert.is_true(t:await())
      lock:release()
    end)
  end)
end)


describe("Lock scopes", function()
  it("hold releases at scope exit, on error and on cancellation", function()
    H.run(function()
      local lock = loom.Lock()
      do
        local _ <close> = lock:hold()
        assert.is_true(lock:locked())
      end
      assert.is_false(lock:locked())

      local ok, e = pcall(function()
        local _ <close> = lock:hold()
        error("boom", 0)
      end)
      assert.is_false(ok)
      assert.equal("boom", e)
      assert.is_false(lock:locked())

      local trace, add = H.tracer()
      local t = create_task(function()
        local _ <close> = lock:hold()
        add("holding")
        sleep(10)
        add("never")
      end)
      local w = create_task(function()
        local _ <close> = lock:hold()
        add("second")
      end)
      spin()
      assert.is_true(lock:locked())
      t:cancel()
      w:await()
      assert.is_true(t:cancelled())
      assert.same({ "holding", "second" }, trace)
      assert.is_false(lock:locked())
    end)
  end)

  it("hold cancelled while acquiring does not release", function()
    H.run(function()
      local lock = loom.Lock()
      lock:acquire()
      local t = create_task(function()
        local _ <close> = lock:hold()
        error("not reached")
      end)
      spin()
      t:cancel()
      spin()
      assert.is_true(t:cancelled())
      assert.is_true(lock:locked())
      lock:release()
    end)
  end)

  it("with runs fn under the lock and returns its results", function()
    H.run(function()
      local lock = loom.Lock()
      local a, b, c = lock:with(function(x, y)
        assert.is_true(lock:locked())
        return x + y, nil, "z"
      end, 1, 2)
      assert.equal(3, a)
      assert.is_nil(b)
      assert.equal("z", c)
      assert.is_false(lock:locked())
      assert.equal(0, select("#", lock:with(function() end)))
    end)
  end)

  it("with releases and re-raises fn's error value unchanged", function()
    H.run(function()
      local lock = loom.Lock()
      local e = setmetatable({}, { __name = "custom" })
      assert.equal(e, err_of(lock.with, lock, function() error(e) end))
      assert.is_false(lock:locked())
      assert.equal("plain", err_of(lock.with, lock, function() error("plain", 0) end))
      assert.is_false(lock:locked())
      local t = create_task(lock.with, lock, function() sleep(5) end)
      spin()
      assert.is_true(lock:locked())
      t:cancel()
      assert.is_true(cancelled_error(err_of(loom.await, t)))
      assert.is_false(lock:locked())
    end)
  end)

  it("with serialises tasks in FIFO order", function()
    H.run(function()
      local lock = loom.Lock()
      local trace, add = H.tracer()
      local ts = {}
      for i = 1, 3 do
        ts[i] = create_task(lock.with, lock, function()
          add(i .. "+"); sleep(0.1); add(i .. "-")
        end)
      end
      gather(ts)
      assert.same({ "1+", "1-", "2+", "2-", "3+", "3-" }, trace)
    end)
  end)
end)


describe("Event", function()
  it("set, clear, is_set, tostring", function()
    local ev = loom.Event()
    assert.is_false(ev:is_set())
    assert.matches("^<loom%.Event 0x%x+ %[unset%]>$", tostring(ev))
    ev:set()
    assert.is_true(ev:is_set())
    assert.matches("%[set%]>$", tostring(ev))
    ev:clear()
    assert.is_false(ev:is_set())
  end)

  it("wakes every waiter (test_wait)", function()
    H.run(function()
      local ev = loom.Event()
      local result, add = H.tracer()
      local function c(i) if ev:wait() then add(i) end end
      local t1 = create_task(c, 1)
      local t2 = create_task(c, 2)
      spin()
      assert.same({}, result)
      assert.matches("%[unset, waiters:2%]>$", tostring(ev))
      local t3 = create_task(c, 3)
      ev:set()
      spin()
      assert.same({ 3, 1, 2 }, result)
      for _, t in ipairs { t1, t2, t3 } do
        assert.is_true(t:done())
        assert.is_nil(t:result())
      end
    end)
  end)

  it("wait returns at once when set", function()
    H.run(function()
      local ev = loom.Event()
      ev:set()
      assert.is_true(ev:wait())
    end)
  end)

  it("a cancelled wait leaves no waiter (test_wait_cancel)", function()
    H.run(function()
      local ev = loom.Event()
      local w = create_task(ev.wait, ev)
      loom.get_running_loop():call_soon(function() w:cancel() end)
      assert.is_true(cancelled_error(err_of(loom.await, w)))
      assert.equal(0, ev._n)
    end)
  end)

  it("set, clear, set wakes a waiter once (test_clear_with_waiters)", function()
    H.run(function()
      local ev = loom.Event()
      local result, add = H.tracer()
      local t = create_task(function()
        if ev:wait() then add(1) end
        return true
      end)
      spin()
      assert.same({}, result)
      ev:set()
      ev:clear()
      assert.is_false(ev:is_set())
      ev:set()
      ev:set()
      assert.equal(1, ev._n)
      spin()
      assert.same({ 1 }, result)
      assert.equal(0, ev._n)
      assert.is_true(t:done())
      assert.is_true(t:result())
    end)
  end)

  it("a wait after clear suspends again", function()
    H.run(function()
      local ev = loom.Event()
      ev:set()
      ev:clear()
      local t = create_task(ev.wait, ev)
      spin(3)
      assert.is_false(t:done())
      ev:set()
      assert.is_true(t:await())
    end)
  end)
end)


describe("Condition", function()
  it("wait, notify and the lock (test_wait)", function()
    H.run(function()
      local cond = loom.Condition()
      local result, add = H.tracer()
      local function c(i)
        cond:acquire()
        if cond:wait() then add(i) end
        return true
      end
      local t1, t2, t3 = create_task(c, 1), create_task(c, 2), create_task(c, 3)
      spin()
      assert.same({}, result)
      assert.is_false(cond:locked())
      assert.is_true(cond:acquire())
      cond:notify()
      spin()
      assert.same({}, result)
      assert.is_true(cond:locked())
      cond:release()
      spin()
      assert.same({ 1 }, result)
      assert.is_true(cond:locked())
      cond:notify(2)
      spin()
      assert.same({ 1 }, result)
      assert.is_true(cond:locked())
      cond:release()
      spin()
      assert.same({ 1, 2 }, result)
      assert.is_true(cond:locked())
      cond:release()
      spin()
      assert.same({ 1, 2, 3 }, result)
      assert.is_true(cond:locked())
      for _, t in ipairs { t1, t2, t3 } do assert.is_true(t:result()) end
      cond:release()
    end)
  end)

  it("a cancelled wait re-acquires the lock (test_wait_cancel)", function()
    H.run(function()
      local cond = loom.Condition()
      cond:acquire()
      local w = create_task(cond.wait, cond)
      loom.get_running_loop():call_soon(function() w:cancel() end)
      assert.is_true(cancelled_error(err_of(loom.await, w)))
      assert.equal(0, cond._n)
      assert.is_true(cond:locked())
      cond:release()
    end)
  end)

  it("cancel while the lock is contested (test_wait_cancel_contested)", function()
    H.run(function()
      local loop = loom.get_running_loop()
      local cond = loom.Condition()
      cond:acquire()
      assert.is_true(cond:locked())
      local wait_task = create_task(cond.wait, cond)
      spin()
      assert.is_false(cond:locked())
      cond:acquire()
      assert.is_true(cond:locked())
      cond:notify()
      loop:call_soon(function() wait_task:cancel() end)
      loop:call_soon(function() cond:release() end)
      pcall(loom.await, wait_task)
      assert.is_true(cond:locked())
      cond:release()
    end)
  end)

  it("cancel after notify ends cancelled with the lock (test_wait_cancel_after_notify)", function()
    H.run(function()
      local cond = loom.Condition()
      local waited = false
      local waiter = create_task(function()
        local _ <close> = cond:hold()
        waited = true
        cond:wait()
      end)
      spin()
      cond:acquire()
      cond:notify()
      spin()             -- the waiter is in acquire() now
      waiter:cancel()
      spin()
      cond:release()
      spin()
      assert.is_true(waiter:cancelled())
      assert.is_true(waited)
      assert.is_false(cond:locked())
    end)
  end)

  it("a CancelledError raised while waiting is re-raised unchanged", function()
    H.run(function()
      local cond = loom.Condition()
      local raised
      local task = create_task(function()
        local _ <close> = cond:hold()
        local ok, e = pcall(cond.wait_for, cond, function() return false end)
        assert(not ok)
        raised = e
        error(e, 0)
      end)
      spin()
      task:cancel("foo")
      local e = err_of(loom.await, task)
      assert.is_true(cancelled_error(e))
      assert.equal("foo", e.message)
      assert.equal(raised, e)
      assert.is_false(cond:locked())
    end)
  end)

  it("a CancelledError raised while re-acquiring is re-raised unchanged", function()
    H.run(function()
      local cond = loom.Condition()
      local wake, raised = false, nil
      local task = create_task(function()
        local _ <close> = cond:hold()
        local ok, e = pcall(cond.wait_for, cond, function() return wake end)
        assert(not ok)
        raised = e
        assert.is_true(cond:locked())
        error(e, 0)
      end)
      spin()
      cond:acquire()
      wake = true
      cond:notify()
      spin()              -- the task is re-acquiring the lock
      task:cancel("foo")
      cond:release()
      local e = err_of(loom.await, task)
      assert.is_true(cancelled_error(e))
      assert.equal("foo", e.message)
      assert.equal(raised, e)
    end)
  end)

  it("a waiter cancelled as it is notified loses no wake-up (test_cancelled_wakeup)", function()
    H.run(function()
      local cond = loom.Condition()
      local state = 0
      local function consumer()
        local _ <close> = cond:hold()
        while true do
          cond:wait_for(function() return state ~= 0 end)
          if state < 0 then return end
          state = state - 1
        end
      end
      local c = { create_task(consumer), create_task(consumer) }
      spin()
      cond:acquire()
      state = state + 1
      cond:notify(1)
      c[1]:cancel()       -- cancelled while its wake-up is pending
      cond:release()
      sleep(0.01)
      cond:acquire()
      assert.equal(0, state)   -- the notification passed on to c[2]
      state = -1
      cond:notify_all()
      cond:release()
      c[2]:await()
      assert.is_true(c[1]:cancelled())
    end)
  end)

  it("a waiter cancelled while re-locking loses no wake-up (test_cancelled_wakeup_relock)", function()
    H.run(function()
      local cond = loom.Condition()
      local state = 0
      local function consumer()
        local _ <close> = cond:hold()
        while true do
          cond:wait_for(function() return state ~= 0 end)
          if state < 0 then return end
          state = state - 1
        end
      end
      local c = { create_task(consumer), create_task(consumer) }
      spin()
      cond:acquire()
      state = state + 1
      cond:notify(1)
      spin()              -- c[1] woke and waits for the lock
      c[1]:cancel()
      cond:release()
      sleep(0.01)
      cond:acquire()
      assert.equal(0, state)
      state = -1
      cond:notify_all()
      cond:release()
      c[2]:await()
      assert.is_true(c[1]:cancelled())
    end)
  end)

  it("wait without the lock is an error", function()
    H.run(function()
      local cond = loom.Condition()
      assert.matches(THIS .. "wait: cannot wait on un%-acquired lock$",
        err_of(function() cond:wait() end))
      assert.is_false(cond:locked())
      assert.equal(0, cond._n)
    end)
  end)

  it("wait_for waits until the predicate holds (test_wait_for)", function()
    H.run(function()
      local cond = loom.Condition()
      local presult = false
      local result, add = H.tracer()
      local t = create_task(function()
        cond:acquire()
        if cond:wait_for(function() return presult end) then
          add(1)
          cond:release()
        end
        return true
      end)
      spin()
      assert.same({}, result)
      cond:acquire()
      cond:notify()
      cond:release()
      spin()
      assert.same({}, result)
      presult = true
      cond:acquire()
      cond:notify()
      cond:release()
      spin()
      assert.same({ 1 }, result)
      assert.is_true(t:result())
    end)
  end)

  it("wait_for returns a true predicate value without the lock (test_wait_for_unacquired)", function()
    H.run(function()
      local cond = loom.Condition()
      local v = { 1, 2, 3 }
      assert.equal(v, cond:wait_for(function() return v end))
      assert.matches(THIS .. "wait_for: cannot wait on un%-acquired lock$",
        err_of(function() cond:wait_for(function() return false end) end))
    end)
  end)

  it("notify wakes n waiters in order (test_notify)", function()
    H.run(function()
      local cond = loom.Condition()
      local result, add = H.tracer()
      local function c(i)
        cond:acquire()
        if cond:wait() then add(i); cond:release() end
        return true
      end
      local ts = { create_task(c, 1), create_task(c, 2), create_task(c, 3) }
      spin()
      assert.same({}, result)
      cond:acquire()
      cond:notify(1)
      cond:release()
      spin()
      assert.same({ 1 }, result)
      cond:acquire()
      cond:notify(1)
      cond:notify(2048)
      cond:release()
      spin()
      assert.same({ 1, 2, 3 }, result)
      for _, t in ipairs(ts) do assert.is_true(t:result()) end
    end)
  end)

  it("notify_all wakes every waiter (test_notify_all)", function()
    H.run(function()
      local cond = loom.Condition()
      local result, add = H.tracer()
      local function c(i)
        cond:acquire()
        if cond:wait() then add(i); cond:release() end
        return true
      end
      local ts = { create_task(c, 1), create_task(c, 2) }
      spin()
      cond:acquire()
      cond:notify_all()
      cond:release()
      spin()
      assert.same({ 1, 2 }, result)
      gather(ts)
    end)
  end)

  it("notify and notify_all without the lock are errors", function()
    local cond = loom.Condition()
    assert.matches(THIS .. "notify: cannot notify on un%-acquired lock$",
      err_of(function() cond:notify() end))
    assert.matches(THIS .. "notify_all: cannot notify on un%-acquired lock$",
      err_of(function() cond:notify_all() end))
  end)

  it("tostring", function()
    H.run(function()
      local cond = loom.Condition()
      assert.matches("^<loom%.Condition 0x%x+ %[unlocked%]>$", tostring(cond))
      cond:acquire()
      local t = create_task(cond.wait, cond)
      spin()
      cond:acquire()
      assert.matches("%[locked, waiters:1%]>$", tostring(cond))
      cond:notify()
      cond:release()
      t:await()
      cond:release()
    end)
  end)

  it("shares an explicit lock (test_explicit_lock)", function()
    H.run(function()
      local function f(lock, cond)
        lock = lock or loom.Lock()
        cond = cond or loom.Condition(lock)
        assert.equal(lock, cond._lock)
        assert.is_false(lock:locked())
        assert.is_false(cond:locked())
        do
          local _ <close> = cond:hold()
          assert.is_true(lock:locked())
          assert.is_true(cond:locked())
        end
        assert.is_false(lock:locked())
        assert.is_false(cond:locked())
        lock:with(function()
          assert.is_true(lock:locked())
          assert.is_true(cond:locked())
        end)
        assert.is_false(lock:locked())
        assert.is_false(cond:locked())
      end
      f()
      f(loom.Lock())
      local lock = loom.Lock()
      f(lock, loom.Condition(lock))
    end)
  end)

  it("with and hold hold the condition's lock", function()
    H.run(function()
      local cond = loom.Condition()
      local e = {}
      assert.equal(e, err_of(cond.with, cond, function()
        assert.is_true(cond:locked())
        error(e)
      end))
      assert.is_false(cond:locked())
      assert.equal(7, cond:with(function(x) return x end, 7))
      -- a producer and a consumer, the usual way
      local items = {}
      local consumer = create_task(cond.with, cond, function()
        cond:wait_for(function() return #items > 0 end)
        return table.remove(items, 1)
      end)
      spin()
      cond:with(function()
        items[#items + 1] = "item"
        cond:notify()
      end)
      assert.equal("item", consumer:await())
    end)
  end)

  it("is bound to the first loop it waits on", function()
    local cond = loom.Condition()
    H.run(function()
      local t = create_task(function()
        cond:acquire()
        cond:wait()
        cond:release()
      end)
      spin()
      cond:acquire()
      cond:notify()
      cond:release()
      t:await()
    end)
    H.run(function()
      cond:acquire()
      assert.matches("wait: <loom%.Condition 0x%x+ %[locked%]> is bound to a "
        .. "different event loop", err_of(function() cond:wait() end))
      assert.is_true(cond:locked())   -- checked before the lock is released
      cond:release()
    end)
  end)
end)


describe("Semaphore", function()
  it("an initial value of 0 is locked", function()
    assert.is_true(loom.Semaphore(0):locked())
    assert.is_false(loom.Semaphore():locked())
  end)

  it("tostring", function()
    H.run(function()
      local sem = loom.Semaphore()
      assert.matches("^<loom%.Semaphore 0x%x+ %[unlocked, value:1%]>$", tostring(sem))
      sem:acquire()
      assert.matches("%[locked%]>$", tostring(sem))
      local t = create_task(sem.acquire, sem)
      spin()
      assert.matches("%[locked, waiters:1%]>$", tostring(sem))
      sem:release()
      t:await()
      assert.matches("^<loom%.BoundedSemaphore 0x%x+ %[unlocked, value:2%]>$",
        tostring(loom.BoundedSemaphore(2)))
    end)
  end)

  it("counts and queues (test_acquire)", function()
    H.run(function()
      local sem = loom.Semaphore(3)
      local result, add = H.tracer()
      assert.is_true(sem:acquire())
      assert.is_true(sem:acquire())
      assert.is_false(sem:locked())
      local function c(i) sem:acquire(); add(i); return true end
      local t1, t2, t3 = create_task(c, 1), create_task(c, 2), create_task(c, 3)
      spin()
      assert.same({ 1 }, result)
      assert.is_true(sem:locked())
      assert.equal(2, sem._n)
      assert.equal(0, sem._value)
      local t4 = create_task(c, 4)
      sem:release()
      sem:release()
      assert.equal(0, sem._value)
      spin()
      assert.equal(0, sem._value)
      assert.equal(3, #result)
      assert.is_true(sem:locked())
      assert.equal(1, sem._n)
      assert.equal(0, sem._value)
      assert.is_true(t1:result())
      local race = { t2, t3, t4 }
      local done = 0
      for _, t in ipairs(race) do if t:done() and t:result() then done = done + 1 end end
      assert.equal(2, done)
      sem:release()
      gather(race)
    end)
  end)

  it("a cancelled acquire leaves no live waiter (test_acquire_cancel)", function()
    H.run(function()
      local sem = loom.Semaphore()
      sem:acquire()
      local a = create_task(sem.acquire, sem)
      loom.get_running_loop():call_soon(function() a:cancel() end)
      assert.is_true(cancelled_error(err_of(loom.await, a)))
      assert.equal(0, sem._n)
    end)
  end)

  it("waiters cancelled before a release do not take it (test_acquire_cancel_before_awoken)", function()
    H.run(function()
      local sem = loom.Semaphore(0)
      local t = ntasks(4, sem.acquire, sem)
      spin()
      t[1]:cancel()
      t[2]:cancel()
      sem:release()
      spin(2)
      assert.is_true(t[3]:done())
      assert.is_false(t[4]:done())
      t[3]:cancel()
      t[4]:cancel()
      spin()
      settle(t)
    end)
  end)

  it("a cancelled waiter does not hang the next (test_acquire_hang)", function()
    H.run(function()
      local sem = loom.Semaphore(0)
      local t1 = create_task(sem.acquire, sem)
      local t2 = create_task(sem.acquire, sem)
      spin()
      t1:cancel()
      sem:release()
      spin(2)
      assert.is_true(sem:locked())
      assert.is_true(t2:done())
      settle { t1, t2 }
    end)
  end)

  it("a woken waiter cancelled gives its unit back (test_acquire_no_hang)", function()
    H.run(function()
      local sem = loom.Semaphore(1)
      local t2
      local t1 = create_task(function()
        do
          local _ <close> = sem:hold()
          sleep(0)
        end
        t2:cancel()
      end)
      t2 = create_task(function()
        local _ <close> = sem:hold()
        error("not reached")
      end)
      local r = settle { t1, t2 }
      assert.is_true(r[1].ok)
      assert.is_nil(r[1].v)
      assert.is_false(r[2].ok)
      assert.is_true(cancelled_error(r[2].v))
      assert.is_false(sem:locked())
      assert.equal(1, sem._value)
      assert.is_true(sem:acquire())
    end)
  end)

  it("release with no waiters (test_release_no_waiters)", function()
    H.run(function()
      local sem = loom.Semaphore()
      sem:acquire()
      assert.is_true(sem:locked())
      sem:release()
      assert.is_false(sem:locked())
    end)
  end)

  it("serves acquires in FIFO order (test_acquire_fifo_order)", function()
    H.run(function()
      local sem = loom.Semaphore(1)
      local result, add = H.tracer()
      local function coro(tag)
        sem:acquire()
        add(tag .. "_1")
        sleep(0.01)
        sem:release()
        sem:acquire()
        add(tag .. "_2")
        sleep(0.01)
        sem:release()
      end
      gather { create_task(coro, "c1"), create_task(coro, "c2"), create_task(coro, "c3") }
      assert.same({ "c1_1", "c2_1", "c3_1", "c1_2", "c2_2", "c3_2" }, result)
    end)
  end)

  it("a release-then-acquire queues behind the others (test_acquire_fifo_order_2)", function()
    H.run(function()
      local sem = loom.Semaphore(1)
      local result, add = H.tracer()
      local t1 = create_task(function() sem:acquire(); add(1); return true end)
      local t2 = create_task(function()
        sem:acquire(); add(2); sem:release()
        sem:acquire(); add(4); return true
      end)
      local t3 = create_task(function() sem:acquire(); add(3); return true end)
      spin()
      sem:release()
      sem:release()
      gather { t1, t2, t3 }
      assert.same({ 1, 2, 3, 4 }, result)
    end)
  end)

  it("a cancelled first waiter passes its turn on (test_acquire_fifo_order_3)", function()
    H.run(function()
      local sem = loom.Semaphore(0)
      local result, add = H.tracer()
      local function c(i) sem:acquire(); add(i); return true end
      local t = { create_task(c, 1), create_task(c, 2), create_task(c, 3) }
      spin()
      t[1]:cancel()
      spin()
      sem:release()
      sem:release()
      settle(t)
      assert.same({ 2, 3 }, result)
    end)
  end)

  it("a newcomer waits behind a live waiter even when a unit is free", function()
    H.run(function()
      local sem = loom.Semaphore(0)
      local trace, add = H.tracer()
      local w = create_task(function() sem:acquire(); add("waiter") end)
      spin()
      sem:release()              -- hands the unit to the waiter
      assert.is_true(sem:locked())
      local n = create_task(function() sem:acquire(); add("newcomer") end)
      spin(3)
      assert.same({ "waiter" }, trace)
      sem:release()
      gather { w, n }
      assert.same({ "waiter", "newcomer" }, trace)
    end)
  end)

  it("hold and with", function()
    H.run(function()
      local sem = loom.Semaphore(2)
      do
        local _ <close> = sem:hold()
        local _ <close> = sem:hold()
        assert.is_true(sem:locked())
        assert.equal(0, sem._value)
      end
      assert.equal(2, sem._value)
      local e = {}
      assert.equal(e, err_of(sem.with, sem, function() error(e) end))
      assert.equal(2, sem._value)
      assert.equal("r", sem:with(function() return "r" end))
      -- at most two at once
      local inside, most = 0, 0
      local ts = {}
      for i = 1, 5 do
        ts[i] = create_task(sem.with, sem, function()
          inside = inside + 1
          most = math.max(most, inside)
          sleep(0.1)
          inside = inside - 1
        end)
      end
      gather(ts)
      assert.equal(2, most)
      assert.equal(2, sem._value)
    end)
  end)

  it("accepts integral floats", function()
    assert.equal(3, loom.Semaphore(3.0)._value)
  end)
end)


describe("BoundedSemaphore", function()
  it("release above the initial value is an error (test_release_not_acquired)", function()
    local sem = loom.BoundedSemaphore()
    assert.matches(THIS .. "release: BoundedSemaphore released too many times$",
      err_of(function() sem:release() end))
    H.run(function()
      local b = loom.BoundedSemaphore(2)
      b:acquire()
      b:release()
      assert.has_error(function() b:release() end)
      assert.equal(2, b._value)
    end)
  end)

  it("acquires, queues and releases like a Semaphore", function()
    H.run(function()
      local b = loom.BoundedSemaphore(1)
      local trace, add = H.tracer()
      b:acquire()
      local t = create_task(function() b:acquire(); add("w"); b:release() end)
      spin()
      assert.is_true(b:locked())
      b:release()
      t:await()
      assert.same({ "w" }, trace)
      assert.equal(1, b._value)
      do local _ <close> = b:hold() end
      assert.equal(5, b:with(function() return 5 end))
      assert.equal(1, b._value)
    end)
  end)

  it("its scope reports a release too many", function()
    H.run(function()
      local b = loom.BoundedSemaphore(1)
      local e = err_of(b.with, b, function() b:release() end)
      assert.matches("release: BoundedSemaphore released too many times", e)
    end)
  end)
end)


describe("Barrier", function()
  local N = 5

  it("parties, n_waiting, broken, tostring states (test_repr)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      assert.equal(N, barrier:parties())
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
      assert.matches("^<loom%.Barrier 0x%x+ %[filling, waiters:0/5%]>$", tostring(barrier))
      local waiters = {}
      local function wait() barrier:wait() end
      for _ = 1, 2 do waiters[#waiters + 1] = create_task(wait) end
      spin()
      assert.matches("%[filling, waiters:2/5%]>$", tostring(barrier))
      assert.equal(2, barrier:n_waiting())
      for _ = 1, barrier:parties() - barrier:n_waiting() do
        waiters[#waiters + 1] = create_task(wait)
      end
      spin()
      assert.matches("%[draining, waiters:0/5%]>$", tostring(barrier))
      for _ = 1, 2 do waiters[#waiters + 1] = create_task(wait) end
      spin()
      barrier:reset()
      assert.matches("%[resetting, waiters:0/5%]>$", tostring(barrier))
      for _ = 1, 2 do waiters[#waiters + 1] = create_task(wait) end
      spin()
      barrier:abort()
      assert.matches("%[broken%]>$", tostring(barrier))
      assert.is_true(barrier:broken())
      settle(waiters)
    end)
  end)

  it("returns the arrival index, 0 .. parties-1", function()
    H.run(function()
      local barrier = loom.Barrier(3)
      local order, add = H.tracer()
      local ts = {}
      for i = 1, 3 do
        ts[i] = create_task(function()
          add(i)
          return barrier:wait()
        end)
      end
      assert.same({ 0, 1, 2 }, gather(ts))
      assert.same({ 1, 2, 3 }, order)
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
    end)
  end)

  it("one party passes at once (test_filling_one_task, _twice)", function()
    H.run(function()
      local barrier = loom.Barrier(1)
      assert.equal(0, barrier:wait())
      local t1 = create_task(barrier.wait, barrier)
      spin()
      assert.equal(0, barrier:n_waiting())
      local t2 = create_task(barrier.wait, barrier)
      spin()
      assert.equal(t1:result(), t2:result())
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
    end)
  end)

  it("fills task by task (test_filling_task_by_task)", function()
    H.run(function()
      local barrier = loom.Barrier(3)
      local t1 = create_task(barrier.wait, barrier)
      spin()
      assert.equal(1, barrier:n_waiting())
      local t2 = create_task(barrier.wait, barrier)
      spin()
      assert.equal(2, barrier:n_waiting())
      local t3 = create_task(barrier.wait, barrier)
      spin()
      gather { t1, t2, t3 }
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
    end)
  end)

  it("can be passed twice (test_filling_tasks_wait_twice, _check_return_value)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results = {}
      local res = gather(ntasks(N, function()
        barrier:wait()
        results[#results + 1] = true
        local i = barrier:wait()
        results[#results + 1] = false
        return i
      end))
      assert.equal(2 * N, #results)
      table.sort(res)
      assert.same({ 0, 1, 2, 3, 4 }, res)
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
    end)
  end)

  it("drains until the last task leaves (test_draining_state)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results = {}
      gather(ntasks(N, function()
        barrier:wait()
        results[#results + 1] = tostring(barrier):find("draining") ~= nil
      end))
      assert.equal(N, #results)
      assert.is_false(results[N])
      for i = 1, N - 1 do assert.is_true(results[i]) end
    end)
  end)

  it("blocks tasks that arrive while it drains (test_blocking_tasks_while_draining)", function()
    H.run(function()
      local rewait = 2
      local barrier = loom.Barrier(N)
      local barrier_nowaiting = loom.Barrier(N - rewait)
      local rewait_n = rewait
      gather(ntasks(N, function()
        barrier:wait()
        if rewait_n > 0 then
          rewait_n = rewait_n - 1
          barrier:wait()
        else
          barrier_nowaiting:wait()
          barrier:wait()
        end
      end))
      assert.equal(0, barrier:n_waiting())
    end)
  end)

  it("a cancelled waiter leaves without breaking it (test_filling_tasks_cancel_one)", function()
    H.run(function()
      local barrier = loom.Barrier(3)
      local results = {}
      local function coro()
        barrier:wait()
        results[#results + 1] = true
      end
      local t1 = create_task(coro)
      spin()
      assert.equal(1, barrier:n_waiting())
      local t2 = create_task(coro)
      spin()
      assert.equal(2, barrier:n_waiting())
      t1:cancel()
      spin()
      assert.equal(1, barrier:n_waiting())
      assert.is_true(cancelled_error(err_of(loom.await, t1)))
      assert.is_true(t1:cancelled())
      local t3 = create_task(coro)
      spin()
      assert.equal(2, barrier:n_waiting())
      local t4 = create_task(coro)
      gather { t2, t3, t4 }
      assert.equal(3, #results)
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
    end)
  end)

  it("reset of an empty barrier (test_reset_barrier)", function()
    H.run(function()
      local barrier = loom.Barrier(1)
      create_task(barrier.reset, barrier)
      spin()
      assert.equal(0, barrier:n_waiting())
      assert.is_false(barrier:broken())
    end)
  end)

  it("reset breaks the waiting tasks (test_reset_barrier_while_tasks_waiting)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results = {}
      local tasks = ntasks(N - 1, function()
        local ok, e = pcall(barrier.wait, barrier)
        if not ok and BrokenBarrierError:is(e) then results[#results + 1] = true end
      end)
      spin()
      create_task(barrier.reset, barrier)
      gather(tasks)
      assert.equal(N - 1, #results)
      assert.equal(0, barrier:n_waiting())
      assert.is_nil(tostring(barrier):find("resetting"))
      assert.is_false(barrier:broken())
    end)
  end)

  it("reset while half drained (test_reset_barrier_when_tasks_half_draining)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results1 = {}
      local rest_of_tasks = N // 2
      gather(ntasks(N, function()
        local ok, e = pcall(barrier.wait, barrier)
        if not ok then
          assert(BrokenBarrierError:is(e))
          results1[#results1 + 1] = true
        elseif rest_of_tasks == barrier._count then
          barrier:reset()
        end
      end))
      assert.equal(rest_of_tasks, #results1)
      assert.equal(0, barrier:n_waiting())
      assert.is_nil(tostring(barrier):find("resetting"))
      assert.is_false(barrier:broken())
    end)
  end)

  it("reset while half drained, half blocking (test_reset_barrier_when_tasks_half_draining_half_blocking)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results1, results2 = {}, {}
      local blocking_tasks = N // 2
      local count = 0
      gather(ntasks(N, function()
        local ok = pcall(barrier.wait, barrier)
        if not ok then
          results1[#results1 + 1] = true
          barrier:wait()
        else
          count = count + 1
          if count > blocking_tasks then
            barrier:reset()
            barrier:wait()
          else
            if not pcall(barrier.wait, barrier) then
              results2[#results2 + 1] = true
            end
          end
        end
      end))
      assert.equal(blocking_tasks, #results1)
      assert.equal(0, #results2)
      assert.equal(0, barrier:n_waiting())
      assert.is_nil(tostring(barrier):find("resetting"))
      assert.is_false(barrier:broken())
    end)
  end)

  it("reset, then the broken tasks wait again (test_reset_barrier_while_tasks_waiting_and_waiting_again)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results1, results2 = {}, {}
      local tasks = ntasks(N - 1, function()
        local ok, e = pcall(barrier.wait, barrier)
        if not ok and BrokenBarrierError:is(e) then results1[#results1 + 1] = true end
        barrier:wait()
        results2[#results2 + 1] = true
      end)
      create_task(barrier.reset, barrier)
      spin()
      create_task(function()
        barrier:wait()
        results2[#results2 + 1] = true
      end)
      gather(tasks)
      spin()
      assert.is_false(barrier:broken())
      assert.equal(N - 1, #results1)
      assert.equal(N, #results2)
      assert.equal(0, barrier:n_waiting())
    end)
  end)

  it("reset by the last task to drain (test_reset_barrier_while_tasks_draining)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results1, results2, results3 = {}, {}, {}
      local count = 0
      gather(ntasks(N, function()
        barrier:wait()
        count = count + 1
        if count == N then
          barrier:reset()
          barrier:wait()
        else
          if pcall(barrier.wait, barrier) then
            results1[#results1 + 1] = true
          else
            results2[#results2 + 1] = true
          end
        end
        barrier:wait()
        results3[#results3 + 1] = true
      end))
      assert.is_false(barrier:broken())
      assert.equal(N - 1, #results1)
      assert.equal(0, #results2)
      assert.equal(N, #results3)
      assert.equal(0, barrier:n_waiting())
    end)
  end)

  it("abort of an empty barrier (test_abort_barrier)", function()
    H.run(function()
      local barrier = loom.Barrier(1)
      create_task(barrier.abort, barrier)
      spin()
      assert.equal(0, barrier:n_waiting())
      assert.is_true(barrier:broken())
      local e = err_of(barrier.wait, barrier)
      assert.is_true(BrokenBarrierError:is(e))
      assert.equal("BrokenBarrierError: Barrier aborted", tostring(e))
      barrier:reset()
      assert.is_false(barrier:broken())
      assert.equal(0, barrier:wait())
    end)
  end)

  it("abort while half drained, half blocking (test_abort_barrier_when_tasks_half_draining_half_blocking)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results1, results2 = {}, {}
      local blocking_tasks = N // 2
      local count = 0
      gather(ntasks(N, function()
        local ok, e = pcall(barrier.wait, barrier)
        if not ok then
          assert(BrokenBarrierError:is(e))
          results1[#results1 + 1] = true
        else
          count = count + 1
          if count > blocking_tasks then
            barrier:abort()
          else
            local ok2, e2 = pcall(barrier.wait, barrier)
            if not ok2 then
              assert(BrokenBarrierError:is(e2))
              results2[#results2 + 1] = true
            end
          end
        end
      end))
      assert.is_true(barrier:broken())
      assert.equal(blocking_tasks, #results1)
      assert.equal(N - blocking_tasks - 1, #results2)
      assert.equal(0, barrier:n_waiting())
      assert.is_nil(tostring(barrier):find("resetting"))
    end)
  end)

  it("abort after an error breaks the others (test_abort_barrier_when_exception)", function()
    H.run(function()
      local barrier = loom.Barrier(N)
      local results1, results2 = {}, {}
      local boom = {}
      gather(ntasks(N, function()
        local ok, e = pcall(function()
          local i = barrier:wait()
          if i == N // 2 then error(boom) end
          barrier:wait()
          results1[#results1 + 1] = true
        end)
        if ok then return end
        if BrokenBarrierError:is(e) then
          results2[#results2 + 1] = true
        elseif e == boom then
          barrier:abort()
        else
          error(e, 0)
        end
      end))
      assert.is_true(barrier:broken())
      assert.equal(0, #results1)
      assert.equal(N - 1, #results2)
      assert.equal(0, barrier:n_waiting())
    end)
  end)

  it("abort, then reset (test_abort_barrier_when_exception_then_resetting)", function()
    H.run(function()
      local barrier1 = loom.Barrier(N)
      local barrier2 = loom.Barrier(N)
      local results1, results2, results3 = {}, {}, {}
      local boom = {}
      gather(ntasks(N, function()
        local ok, e = pcall(function()
          local i = barrier1:wait()
          if i == N // 2 then error(boom) end
          barrier1:wait()
          results1[#results1 + 1] = true
        end)
        if not ok then
          if BrokenBarrierError:is(e) then
            results2[#results2 + 1] = true
          elseif e == boom then
            barrier1:abort()
          else
            error(e, 0)
          end
        end
        local i = barrier2:wait()
        if i == N // 2 then barrier1:reset() end
        barrier2:wait()
        barrier1:wait()
        results3[#results3 + 1] = true
      end))
      assert.is_false(barrier1:broken())
      assert.equal(0, #results1)
      assert.equal(N - 1, #results2)
      assert.equal(N, #results3)
      assert.equal(0, barrier1:n_waiting())
    end)
  end)

  it("BrokenBarrierError is loom's error class", function()
    assert.equal(loom.BrokenBarrierError, BrokenBarrierError)
    assert.is_true(loom.Error:is(BrokenBarrierError("x")))
  end)
end)


describe("bad input", function()
  local classes = {
    { "Lock", loom.Lock, { "acquire", "release", "locked", "hold", "with" } },
    { "Event", loom.Event, { "set", "clear", "is_set", "wait" } },
    { "Condition", loom.Condition, { "acquire", "release", "locked", "wait",
      "wait_for", "notify", "notify_all", "hold", "with" } },
    { "Semaphore", loom.Semaphore, { "acquire", "release", "locked", "hold", "with" } },
    { "Semaphore", loom.BoundedSemaphore, { "acquire", "release", "locked", "hold", "with" } },
    { "Barrier", loom.Barrier, { "wait", "reset", "abort", "parties", "n_waiting", "broken" } },
  }
  for _, c in ipairs(classes) do
    local name, cls, methods = c[1], c[2], c[3]
    it(tostring(cls) .. " methods check self", function()
      for _, m in ipairs(methods) do
        assert.is_function(cls[m], m)
        local msg = ("bad argument #1 to '%s' (loom.%s expected, got "):format(m, name)
        local bads = table.pack(nil, 1, {}, "s")
        for i = 1, bads.n do
          local e = err_of(cls[m], bads[i])
          assert.equal(msg, e:sub(1, #msg), m)
        end
        local e = err_of(cls[m], loom.Event == cls and loom.Lock() or loom.Event())
        assert.matches("^bad argument #1 to '" .. m .. "' %(loom%.%a+ expected, got loom%.%a+%)$", e)
      end
    end)
  end

  it("errors point at the caller", function()
    assert.matches("^.-" .. THIS .. "bad argument #1 to 'acquire' %(loom%.Lock expected, got nil%)$",
      err_of(function() loom.Lock.acquire(nil) end))
    assert.matches("^.-" .. THIS .. "bad argument #1 to 'Semaphore' %(value must be >= 0%)$",
      err_of(function() local s = loom.Semaphore(-1); return s end))
    assert.matches("^.-" .. THIS .. "bad argument #1 to 'Barrier' %(parties must be >= 1%)$",
      err_of(function() local b = loom.Barrier(0); return b end))
  end)

  it("Semaphore and BoundedSemaphore values", function()
    for _, name in ipairs { "Semaphore", "BoundedSemaphore" } do
      local cls = loom[name]
      local pre = "bad argument #1 to '" .. name .. "' "
      assert.matches(pre .. "%(value must be >= 0%)", err_of(cls, -1))
      assert.matches(pre .. "%(number expected, got string%)", err_of(cls, "2"))
      assert.matches(pre .. "%(number expected, got table%)", err_of(cls, {}))
      assert.matches(pre .. "%(number has no integer representation%)", err_of(cls, 1.5))
      assert.matches(pre .. "%(number has no integer representation%)", err_of(cls, 0 / 0))
      assert.equal(1, cls()._value)
      assert.equal(0, cls(0)._value)
    end
  end)

  it("Barrier parties", function()
    local pre = "bad argument #1 to 'Barrier' "
    assert.matches(pre .. "%(parties must be >= 1%)", err_of(loom.Barrier, 0))
    assert.matches(pre .. "%(parties must be >= 1%)", err_of(loom.Barrier, -4))
    assert.matches(pre .. "%(number has no integer representation%)", err_of(loom.Barrier, 2.5))
    assert.matches(pre .. "%(number expected, got nil%)", err_of(loom.Barrier))
    assert.matches(pre .. "%(number expected, got string%)", err_of(loom.Barrier, "3"))
    assert.equal(2, loom.Barrier(2.0):parties())
  end)

  it("Condition takes a Lock", function()
    assert.matches("bad argument #1 to 'Condition' %(loom%.Lock expected, got loom%.Semaphore%)",
      err_of(loom.Condition, loom.Semaphore()))
    assert.matches("bad argument #1 to 'Condition' %(loom%.Lock expected, got number%)",
      err_of(loom.Condition, 1))
  end)

  it("functions expected", function()
    H.run(function()
      local lock, cond, sem = loom.Lock(), loom.Condition(), loom.Semaphore()
      assert.matches(THIS .. "bad argument #1 to 'with' %(function expected, got nil%)",
        err_of(function() lock:with() end))
      assert.matches("bad argument #1 to 'with' %(function expected, got number%)",
        err_of(function() sem:with(3) end))
      assert.matches("bad argument #1 to 'with' %(function expected, got string%)",
        err_of(function() cond:with("f") end))
      assert.matches("bad argument #1 to 'wait_for' %(function expected, got nil%)",
        err_of(function() cond:wait_for() end))
      assert.is_false(lock:locked())
      assert.is_false(sem:locked())
      assert.is_false(cond:locked())
      -- callable tables are functions enough
      local callable = setmetatable({}, { __call = function(_, x) return x end })
      assert.equal(4, lock:with(callable, 4))
      assert.equal(5, cond:wait_for(function() return 5 end))
    end)
  end)

  it("notify takes a number", function()
    H.run(function()
      local cond = loom.Condition()
      cond:acquire()
      assert.matches(THIS .. "bad argument #1 to 'notify' %(number expected, got string%)",
        err_of(function() cond:notify("1") end))
      assert.matches("bad argument #1 to 'notify' %(number expected, got NaN%)",
        err_of(function() cond:notify(0 / 0) end))
      cond:notify(0)
      cond:notify(-1)
      cond:release()
    end)
  end)
end)
