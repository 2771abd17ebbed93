-- queue_spec.lua
-- Queues (lua/loom/queues.lua): Queue, LifoQueue and PriorityQueue with
-- asyncio 3.13's methods and rules: blocking put and get, FIFO order of
-- waiters, task_done and join, shutdown, and the cancellation races of
-- CPython's test_queues.py. Expected traces are the ones asyncio prints
-- for the same programs (Python 3.11, whose queues.py differs from 3.13's
-- only by shutdown); the reasoning is next to each.

local H = require "helper"
local loom = require "loom"
H.setup()

local raised, contains = H.raised, H.contains

local classes = {
  { name = "Queue", new = loom.Queue },
  { name = "LifoQueue", new = loom.LifoQueue },
  { name = "PriorityQueue", new = loom.PriorityQueue },
}

-- Runs fn(name, new) once for each class.
local function each(fn)
  for _, c in ipairs(classes) do fn(c.name, c.new) end
end

-- The error a task ends with; fails when it does not fail.
local function failure(task)
  local ok, e = pcall(loom.await, task)
  assert(not ok, "expected the task to fail")
  return e
end

local function cancelled(task)
  local e = failure(task)
  assert.is_true(loom.CancelledError:is(e), tostring(e))
end

local function shutdown_error(e)
  assert.is_true(loom.QueueShutDown:is(e), tostring(e))
end

describe("Queue", function()

  describe("basics", function()
    it("constructors are called like classes", function()
      each(function(name, new)
        assert.equal("loom." .. name, tostring(new))
        local q = new()
        assert.equal(0, q:maxsize())
        assert.equal(0, q:qsize())
        assert.is_true(q:empty())
        assert.is_false(q:full())
        assert.equal("<" .. name .. " maxsize=0 qsize=0>", tostring(q))
        assert.equal(5, new(5):maxsize())
        assert.equal(math.type(2), math.type(new(2.0):maxsize()))
      end)
    end)

    it("maxsize <= 0 is unbounded", function()
      each(function(_, new)
        for _, m in ipairs { 0, -1 } do
          local q = new(m)
          for i = 1, 1000 do q:put_nowait(i) end
          assert.is_false(q:full())
          assert.equal(1000, q:qsize())
          assert.equal(m, q:maxsize())
        end
      end)
    end)

    it("full() and QueueFull at maxsize", function()
      each(function(_, new)
        local q = new(2)
        q:put_nowait(1)
        assert.is_false(q:full())
        q:put_nowait(2)
        assert.is_true(q:full())
        local e = raised(q.put_nowait, q, 3)
        assert.is_true(loom.QueueFull:is(e))
        assert.equal("QueueFull: put_nowait: the queue is full", tostring(e))
        assert.equal(2, q:qsize())
      end)
    end)

    it("get_nowait on an empty queue raises QueueEmpty", function()
      each(function(_, new)
        local q = new()
        local e = raised(q.get_nowait, q)
        assert.is_true(loom.QueueEmpty:is(e))
        assert.equal("QueueEmpty: get_nowait: the queue is empty", tostring(e))
        q:put_nowait(1)
        assert.equal(1, q:get_nowait())
        assert.is_true(q:empty())
      end)
    end)

    it("orders: FIFO, LIFO, smallest first", function()
      local function drain(q)
        local out = {}
        while not q:empty() do out[#out + 1] = q:get_nowait() end
        return out
      end
      local q, l, p = loom.Queue(), loom.LifoQueue(), loom.PriorityQueue()
      for _, i in ipairs { 1, 3, 2 } do
        q:put_nowait(i); l:put_nowait(i); p:put_nowait(i)
      end
      assert.same({ 1, 3, 2 }, drain(q))
      assert.same({ 2, 3, 1 }, drain(l))
      assert.same({ 1, 2, 3 }, drain(p))
    end)

    it("put and get work without waiting outside a task", function()
      each(function(_, new)
        local q = new(1)
        q:put("x")
        assert.equal("x", q:get())
      end)
    end)

    it("false is an item; the item comes back as it went in", function()
      each(function(name, new)
        if name == "PriorityQueue" then return end
        local q, t = new(), {}
        q:put_nowait(false)
        q:put_nowait(t)
        local a, b = q:get_nowait(), q:get_nowait()
        if name == "LifoQueue" then a, b = b, a end
        assert.is_false(a)
        assert.is_true(rawequal(t, b))
      end)
    end)

    it("tostring shows the size, waiters, unfinished tasks and shutdown", function()
      H.run(function()
        local q = loom.Queue(1)
        local g = loom.create_task(q.get, q)
        loom.sleep(0)
        assert.equal("<Queue maxsize=1 qsize=0 getters[1]>", tostring(q))
        q:put_nowait(1)
        g:await()
        q:put_nowait(2)
        local p = loom.create_task(q.put, q, 3)
        loom.sleep(0)
        assert.equal("<Queue maxsize=1 qsize=1 putters[1] tasks=2>", tostring(q))
        local j = loom.create_task(q.join, q)
        loom.sleep(0)
        contains("joiners[1]", tostring(q))
        q:shutdown()
        shutdown_error(failure(p))
        contains(" shutdown>", tostring(q))
        q:task_done()                  -- for 1; 2 is still in the queue
        q:shutdown(true)
        j:await()
        assert.equal("<Queue maxsize=1 qsize=0 shutdown-immediate>", tostring(q))
      end)
    end)
  end)

  describe("the ring buffer", function()
    it("keeps FIFO order when it grows while wrapped", function()
      local q = loom.Queue()
      for i = 1, 8 do q:put_nowait(i) end      -- capacity 8, full
      for i = 1, 3 do assert.equal(i, q:get_nowait()) end
      for i = 9, 11 do q:put_nowait(i) end     -- wraps to slots 1..3
      for i = 12, 20 do q:put_nowait(i) end    -- grows, wrapped
      for i = 4, 20 do assert.equal(i, q:get_nowait()) end
      assert.is_true(q:empty())
    end)

    it("matches a plain list under random puts and gets", function()
      math.randomseed(7)
      local q, model, head, nextv = loom.Queue(), {}, 1, 1
      for _ = 1, 20000 do
        if math.random() < 0.55 then
          q:put_nowait(nextv)
          model[#model + 1] = nextv
          nextv = nextv + 1
        elseif head <= #model then
          assert.equal(model[head], q:get_nowait())
          model[head] = false
          head = head + 1
        end
        assert.equal(#model - head + 1, q:qsize())
      end
      while head <= #model do
        assert.equal(model[head], q:get_nowait())
        head = head + 1
      end
    end)

    it("keeps no reference to the items taken out", function()
      each(function(_, new)
        local q = new()
        local seen = setmetatable({}, { __mode = "k" })
        local lt = { __lt = function(a, b) return a.i < b.i end }
        local function item(i)
          local t = setmetatable({ i = i }, lt)
          seen[t] = true
          return t
        end
        for i = 1, 8 do q:put_nowait(item(i)) end
        for _ = 1, 3 do q:get_nowait() end
        for i = 9, 12 do q:put_nowait(item(i)) end   -- wraps, then grows
        while not q:empty() do q:get_nowait() end
        collectgarbage()
        collectgarbage()
        assert.is_nil(next(seen))
      end)
    end)

    it("put_nowait and get_nowait allocate nothing once grown", function()
      local function check(q, task)
        for i = 1, 100 do q:put_nowait(i) end
        for _ = 1, 100 do q:get_nowait(); q:task_done() end
        collectgarbage()
        collectgarbage("stop")
        local before = collectgarbage("count")
        for _ = 1, 200 do
          for i = 1, 60 do q:put_nowait(i) end
          for _ = 1, 60 do q:get_nowait(); q:task_done() end
          if task then
            for i = 1, 60 do q:put(i) end
            for _ = 1, 60 do q:get(); q:task_done() end
          end
        end
        local after = collectgarbage("count")
        collectgarbage("restart")
        assert.equal(before, after)
      end
      each(function(_, new) check(new()) end)
      each(function(_, new) check(new(100)) end)
      H.run(function() check(loom.Queue(100), true) end)
    end)
  end)

  describe("get", function()
    it("returns at once when there is an item", function()
      assert.equal(1, H.run(function()
        local q = loom.Queue()
        q:put_nowait(1)
        return q:get()
      end))
    end)

    it("waits for an item", function()
      local loop = H.loop()
      local q = loom.Queue()
      local finished = false
      local res = loop:run_until_complete(function()
        local t = loom.create_task(function()
          local x = q:get()
          finished = true
          return x
        end)
        loom.sleep(0)
        assert.is_false(finished)
        loop:call_later(0.01, q.put_nowait, q, 1)
        local r = t:await()
        assert.is_true(finished)
        return r
      end)
      assert.equal(1, res)
      assert.near(0.01, loop:time(), 1e-9)
    end)

    it("wakes waiting putters in order (test_get_with_waiting_putters)", function()
      H.run(function()
        local q = loom.Queue(1)
        loom.create_task(q.put, q, "a")
        loom.create_task(q.put, q, "b")
        assert.equal("a", q:get())
        assert.equal("b", q:get())
      end)
    end)

    it("getters are served in the order they came", function()
      H.run(function()
        local q = loom.Queue()
        local ts = {}
        for i = 1, 3 do ts[i] = loom.create_task(q.get, q) end
        loom.sleep(0)
        for _, v in ipairs { "a", "b", "c" } do q:put_nowait(v) end
        assert.equal("a", ts[1]:await())
        assert.equal("b", ts[2]:await())
        assert.equal("c", ts[3]:await())
      end)
    end)

    it("a woken getter that finds the queue empty waits again", function()
      H.run(function()
        local q = loom.Queue()
        local g = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put_nowait(1)                    -- wakes g ...
        assert.equal(1, q:get_nowait())    -- ... but the item is gone
        loom.sleep(0)
        assert.is_false(g:done())
        assert.equal("<Queue maxsize=0 qsize=0 getters[1] tasks=1>", tostring(q))
        q:put_nowait(2)
        assert.equal(2, g:await())
      end)
    end)
  end)

  describe("put", function()
    it("waits while the queue is full (test_maxsize)", function()
      H.run(function()
        local q = loom.Queue(2)
        local have = {}
        local t = loom.create_task(function()
          for i = 0, 2 do
            q:put(i)
            have[#have + 1] = i
          end
          return true
        end)
        loom.sleep(0)
        loom.sleep(0)
        assert.same({ 0, 1 }, have)      -- blocked after two items
        assert.equal(0, q:get())
        loom.sleep(0)
        assert.same({ 0, 1, 2 }, have)
        assert.equal(1, q:get())
        assert.equal(2, q:get())
        assert.is_true(t:done())
        assert.is_true(t:result())
      end)
    end)

    it("waits until a callback makes room", function()
      local loop = H.loop()
      local q = loom.Queue(1)
      loop:run_until_complete(function()
        local t = loom.create_task(function()
          q:put(1)
          q:put(2)
        end)
        loom.sleep(0)
        assert.is_false(t:done())
        loop:call_later(0.01, q.get_nowait, q)
        t:await()
      end)
      assert.near(0.01, loop:time(), 1e-9)
      assert.equal(2, q:get_nowait())
    end)

    it("wakes a waiting getter (test_put_with_waiting_getters)", function()
      H.run(function()
        local q = loom.Queue()
        local t = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put("a")
        assert.equal("a", t:await())
      end)
    end)

    it("putters are served in the order they came", function()
      H.run(function()
        local q = loom.Queue(1)
        q:put_nowait(0)
        local ts = {}
        for i = 1, 3 do ts[i] = loom.create_task(q.put, q, i) end
        loom.sleep(0)
        local got = {}
        for _ = 1, 4 do got[#got + 1] = q:get() end
        assert.same({ 0, 1, 2, 3 }, got)
        for i = 1, 3 do assert.is_true(ts[i]:done()) end
      end)
    end)
  end)

  describe("producers and consumers", function()
    it("one of each through Queue(2)", function()
      local trace, add = H.tracer()
      H.run(function()
        local q = loom.Queue(2)
        local p = loom.create_task(function()
          for i = 1, 5 do
            q:put(i)
            add("put " .. i)
          end
          add("producer done")
        end)
        local c = loom.create_task(function()
          for _ = 1, 5 do add("got " .. q:get()) end
        end)
        p:await()
        c:await()
      end)
      -- asyncio: the producer fills the queue and blocks; the consumer
      -- empties it (its first get wakes the producer) and blocks; ...
      assert.same({ "put 1", "put 2", "got 1", "got 2", "put 3", "put 4",
                    "got 3", "got 4", "put 5", "producer done", "got 5" }, trace)
    end)

    it("two of each through Queue(1)", function()
      local trace, add = H.tracer()
      H.run(function()
        local q = loom.Queue(1)
        local function producer(name, items)
          for _, v in ipairs(items) do
            q:put(v)
            add(name .. " put " .. v)
          end
        end
        local function consumer(name, k)
          for _ = 1, k do
            add(name .. " got " .. q:get())
            loom.sleep(0)
          end
        end
        local ts = {
          loom.create_task(producer, "p1", { "a", "b", "c" }),
          loom.create_task(producer, "p2", { "x", "y", "z" }),
          loom.create_task(consumer, "c1", 3),
          loom.create_task(consumer, "c2", 3),
        }
        for _, t in ipairs(ts) do t:await() end
      end)
      -- the trace asyncio prints for the same program
      assert.same({ "p1 put a", "c1 got a", "p1 put b", "c1 got b", "p2 put x",
                    "c1 got x", "p1 put c", "c2 got c", "p2 put y", "c2 got y",
                    "p2 put z", "c2 got z" }, trace)
    end)
  end)

  describe("task_done and join", function()
    it("task_done more times than items put is an error", function()
      each(function(_, new)
        local q = new()
        assert.equal("task_done: called more times than there were items put",
          raised(q.task_done, q))
        q:put_nowait(1)
        q:get_nowait()
        q:task_done()
        assert.has_error(function() q:task_done() end)
      end)
    end)

    it("join returns at once when nothing is unfinished", function()
      each(function(_, new)
        H.run(function()
          local q = new()
          q:join()
          q:join()
          q:put_nowait(1)
          q:get_nowait()
          q:task_done()
          q:join()
        end)
      end)
    end)

    it("join waits for a task_done for every item (test_task_done)", function()
      each(function(_, new)
        local sum = H.run(function()
          local q = new()
          for i = 0, 99 do q:put_nowait(i) end
          local acc, running = 0, true
          local function worker()
            while running do
              acc = acc + q:get()
              q:task_done()
            end
          end
          local ws = { loom.create_task(worker), loom.create_task(worker) }
          q:join()
          local got = acc
          running = false
          for _ = 1, #ws do q:put_nowait(0) end
          for _, w in ipairs(ws) do w:await() end
          return got
        end)
        assert.equal(4950, sum)
      end)
    end)

    it("workers and join: the order asyncio gives", function()
      local trace, add = H.tracer()
      H.run(function()
        local q = loom.Queue()
        local function worker(name)
          while true do
            local x = q:get()
            add(name .. " got " .. x)
            loom.sleep(0)
            q:task_done()
            add(name .. " done " .. x)
          end
        end
        local ws = {}
        for i = 1, 3 do ws[i] = loom.create_task(worker, "w" .. i) end
        loom.sleep(0)
        for i = 1, 4 do q:put_nowait(i) end
        add("joining")
        q:join()
        add("joined")
        for _, w in ipairs(ws) do w:cancel() end
        for _, w in ipairs(ws) do cancelled(w) end
      end)
      assert.same({ "joining", "w1 got 1", "w2 got 2", "w3 got 3", "w1 done 1",
                    "w1 got 4", "w2 done 2", "w3 done 3", "w1 done 4", "joined" },
        trace)
    end)

    it("every joiner wakes when the count reaches zero", function()
      H.run(function()
        local q = loom.Queue()
        q:put_nowait(1)
        local js = {}
        for i = 1, 3 do js[i] = loom.create_task(q.join, q) end
        loom.sleep(0)
        q:get_nowait()
        q:task_done()
        for i = 1, 3 do js[i]:await() end
      end)
    end)

    it("a cancelled join leaves no joiner behind", function()
      H.run(function()
        local q = loom.Queue()
        q:put_nowait(1)
        local j = loom.create_task(q.join, q)
        loom.sleep(0)
        contains("joiners[1]", tostring(q))
        j:cancel()
        cancelled(j)
        assert.equal("<Queue maxsize=0 qsize=1 tasks=1>", tostring(q))
        q:get_nowait()
        q:task_done()
        q:join()
      end)
    end)
  end)

  describe("cancellation", function()
    it("a getter cancelled while it waits leaves the queue (test_cancelled_getters_not_being_held)", function()
      local loop = H.loop()
      loop:run_until_complete(function()
        local q = loom.Queue(5)
        local t = loom.create_task(q.get, q)
        loop:call_later(0.1, t.cancel, t)
        cancelled(t)
        assert.equal("<Queue maxsize=5 qsize=0>", tostring(q))
      end)
      assert.near(0.1, loop:time(), 1e-9)
    end)

    it("a putter cancelled while it waits leaves the queue", function()
      H.run(function()
        local q = loom.Queue(1)
        q:put_nowait(1)
        local t = loom.create_task(q.put, q, 1)
        loom.sleep(0)
        contains("putters[1]", tostring(q))
        t:cancel()
        cancelled(t)
        assert.equal("<Queue maxsize=1 qsize=1 tasks=1>", tostring(q))
      end)
    end)

    it("the next getter gets the item after one is cancelled (test_get_cancelled_race)", function()
      H.run(function()
        local q = loom.Queue()
        local t1 = loom.create_task(q.get, q)
        local t2 = loom.create_task(q.get, q)
        loom.sleep(0)
        t1:cancel()
        loom.sleep(0)
        assert.is_true(t1:done())
        q:put("a")
        loom.sleep(0)
        assert.equal("a", t2:await())
        assert.is_true(t1:cancelled())
      end)
    end)

    it("a getter cancelled after it was woken drops no item (test_get_cancel_drop_one_pending_reader)", function()
      H.run(function()
        local q = loom.Queue()
        local reader = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put_nowait(1)
        q:put_nowait(2)
        reader:cancel()
        cancelled(reader)
        reader = loom.create_task(q.get, q)
        assert.equal(1, reader:await())   -- 2 would mean 1 got dropped
      end)
    end)

    it("a woken getter that is cancelled wakes the next one (test_get_cancel_drop_many_pending_readers)", function()
      H.run(function()
        local q = loom.Queue()
        local r1 = loom.create_task(q.get, q)
        local r2 = loom.create_task(q.get, q)
        local r3 = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put_nowait(1)       -- wakes r1
        q:put_nowait(2)       -- wakes r2
        r1:cancel()
        cancelled(r1)         -- r1 passed its wake-up on to r3
        assert.equal(1, r2:await())
        assert.equal(2, r3:await())
        assert.equal(0, q:qsize())
      end)
    end)

    it("a woken getter cancelled before it runs hands the item to the next", function()
      H.run(function()
        local q = loom.Queue()
        local g1 = loom.create_task(q.get, q)
        local g2 = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put_nowait("x")
        g1:cancel()
        cancelled(g1)
        assert.equal("x", g2:await())
      end)
    end)

    it("a putter cancelled after it was woken puts nothing (test_put_cancel_drop)", function()
      H.run(function()
        local q = loom.Queue(1)
        q:put_nowait(1)
        local writer = loom.create_task(q.put, q, 2)
        loom.sleep(0)
        assert.equal(1, q:get_nowait())   -- wakes the writer
        writer:cancel()
        cancelled(writer)
        assert.equal(0, q:qsize())
        writer = loom.create_task(q.put, q, 2)
        writer:await()
        assert.equal(2, q:get_nowait())
        assert.equal(0, q:qsize())
      end)
    end)

    it("a woken putter that is cancelled wakes the next one", function()
      H.run(function()
        local q = loom.Queue(1)
        q:put_nowait(0)
        local p1 = loom.create_task(q.put, q, "p1")
        local p2 = loom.create_task(q.put, q, "p2")
        loom.sleep(0)
        assert.equal(0, q:get_nowait())   -- wakes p1
        p1:cancel()
        cancelled(p1)
        p2:await()
        assert.equal("p2", q:get_nowait())
        assert.is_true(q:empty())
      end)
    end)

    it("test_put_cancelled_race", function()
      H.run(function()
        local q = loom.Queue(1)
        local put_a = loom.create_task(q.put, q, "a")
        local put_b = loom.create_task(q.put, q, "b")
        local put_c = loom.create_task(q.put, q, "X")
        loom.sleep(0)
        assert.is_true(put_a:done())
        assert.is_false(put_b:done())
        put_c:cancel()
        loom.sleep(0)
        assert.is_true(put_c:done())
        assert.equal("a", q:get_nowait())
        loom.sleep(0)
        assert.equal("b", q:get_nowait())
        put_b:await()
        assert.is_true(q:empty())
      end)
    end)

    it("a putter taken out by get_nowait, then cancelled, raises CancelledError", function()
      H.run(function()
        local q = loom.Queue(1)
        q:put_nowait(1)
        local t = loom.create_task(q.put, q, 1)
        loom.sleep(0)
        q:get_nowait()
        t:cancel()
        cancelled(t)
        assert.equal("<Queue maxsize=1 qsize=0 tasks=1>", tostring(q))
      end)
    end)

    it("a waiter cancelled but not yet resumed is skipped by a wake-up", function()
      H.run(function()
        local q = loom.Queue(1)
        local g1 = loom.create_task(q.get, q)
        local g2 = loom.create_task(q.get, q)
        loom.sleep(0)
        g1:cancel()             -- its future is cancelled, still queued
        q:put_nowait("x")       -- skips it, wakes g2
        cancelled(g1)
        assert.equal("x", g2:await())
        q:put_nowait("y")
        local p1 = loom.create_task(q.put, q, 1)
        local p2 = loom.create_task(q.put, q, 2)
        loom.sleep(0)
        p1:cancel()
        assert.equal("y", q:get_nowait())
        cancelled(p1)
        p2:await()
        assert.equal(2, q:get_nowait())
      end)
    end)

    it("a getter may catch the cancellation and get again", function()
      H.run(function()
        local q = loom.Queue()
        local t = loom.create_task(function()
          local ok, e = pcall(q.get, q)
          assert.is_false(ok)
          assert.is_true(loom.CancelledError:is(e))
          loom.current_task():uncancel()
          return q:get()
        end)
        loom.sleep(0)
        t:cancel()
        loom.sleep(0)
        q:put_nowait("later")
        assert.equal("later", t:await())
      end)
    end)
  end)

  describe("shutdown", function()
    it("of an empty queue: put and get raise QueueShutDown", function()
      each(function(_, new)
        H.run(function()
          local q = new()
          q:shutdown()
          shutdown_error(raised(q.put, q, "data"))
          shutdown_error(raised(q.get, q))
          shutdown_error(raised(q.put_nowait, q, "data"))
          shutdown_error(raised(q.get_nowait, q))
          assert.equal("QueueShutDown: put: the queue is shut down",
            tostring(raised(q.put, q, 1)))
          assert.equal("QueueShutDown: get_nowait: the queue is shut down",
            tostring(raised(q.get_nowait, q)))
        end)
      end)
    end)

    it("every method in one task, shutdown(false) (3.13's test)", function()
      each(function(_, new)
        H.run(function()
          local q = new()
          q:put("L")
          q:put_nowait("O")
          q:shutdown(false)
          shutdown_error(raised(q.put, q, "E"))
          shutdown_error(raised(q.put_nowait, q, "W"))
          local got = { q:get() }
          q:task_done()
          got[2] = q:get_nowait()
          q:task_done()
          table.sort(got)
          assert.same({ "L", "O" }, got)
          q:join()
          shutdown_error(raised(q.get, q))
          shutdown_error(raised(q.get_nowait, q))
        end)
      end)
    end)

    it("every method in one task, shutdown(true)", function()
      each(function(_, new)
        H.run(function()
          local q = new()
          q:put("L")
          q:put_nowait("O")
          q:shutdown(true)
          assert.equal(0, q:qsize())
          shutdown_error(raised(q.put, q, "E"))
          shutdown_error(raised(q.put_nowait, q, "W"))
          shutdown_error(raised(q.get, q))
          shutdown_error(raised(q.get_nowait, q))
          -- the drained items count as done
          assert.has_error(function() q:task_done() end,
            "task_done: called more times than there were items put")
          q:join()
        end)
      end)
    end)

    it("gets drain what is left, then raise", function()
      H.run(function()
        local q = loom.Queue()
        q:put_nowait(1)
        q:put_nowait(2)
        q:shutdown()
        assert.equal(1, q:get())
        assert.equal(2, q:get_nowait())
        shutdown_error(raised(q.get, q))
      end)
    end)

    for _, immediate in ipairs { false, true } do
      it("wakes blocked putters with QueueShutDown (immediate=" .. tostring(immediate) .. ")", function()
        each(function(_, new)
          H.run(function()
            local q = new(2)
            q:put("E")
            q:put("W")
            local t1 = loom.create_task(q.put, q, "Y")
            local t2 = loom.create_task(q.put, q, "Z")
            loom.sleep(0)
            contains("putters[2]", tostring(q))
            q:shutdown(immediate)
            assert.is_nil(tostring(q):find("putters"))
            shutdown_error(failure(t1))
            shutdown_error(failure(t2))
            assert.equal(immediate and 0 or 2, q:qsize())
          end)
        end)
      end)

      it("wakes blocked getters with QueueShutDown (immediate=" .. tostring(immediate) .. ")", function()
        each(function(_, new)
          H.run(function()
            local q = new(1)
            q:put("Y")
            local first = loom.create_task(q.get, q)
            loom.sleep(0)
            local t = loom.create_task(q.get, q)
            local u = loom.create_task(q.get, q)
            loom.sleep(0)
            contains("getters[2]", tostring(q))
            q:shutdown(immediate)
            assert.is_nil(tostring(q):find("getters"))
            shutdown_error(failure(t))
            shutdown_error(failure(u))
            assert.equal("Y", first:await())
            contains("tasks=1", tostring(q))   -- Y is got, not done
          end)
        end)
      end)
    end

    it("blocked gets with task_done, and joins, all finish (test_shutdown_get_task_done_join)", function()
      each(function(_, new)
        H.run(function()
          local q = new(2)
          q:put("Y")
          q:put("D")
          local go = loom.Future()
          local results = {}
          local function get_task_done()
            loom.await(go)
            local ok, v = pcall(q.get, q)
            if ok then q:task_done() end
            results[#results + 1] = ok
            return v
          end
          local function join()
            local ok = pcall(q.join, q)
            results[#results + 1] = ok
          end
          local ts = { loom.create_task(get_task_done), loom.create_task(get_task_done),
                       loom.create_task(join), loom.create_task(join) }
          q:shutdown(false)
          loom.sleep(0.001)
          go:set_result()
          for _, t in ipairs(ts) do t:await() end
          assert.same({ true, true, true, true }, results)
          local a, b = ts[1]:result(), ts[2]:result()
          assert.is_true((a == "Y" and b == "D") or (a == "D" and b == "Y"))
          assert.is_nil(tostring(q):find("tasks="))
        end)
      end)
    end)

    it("immediate: a blocked join returns once the drained items are all done", function()
      H.run(function()
        local q = loom.Queue()
        for i = 1, 3 do q:put_nowait(i) end
        local j = loom.create_task(q.join, q)
        loom.sleep(0)
        q:shutdown(true)
        j:await()
        assert.equal(0, q:qsize())
      end)
    end)

    it("immediate: items got but not done still hold join", function()
      H.run(function()
        local q = loom.Queue()
        for i = 1, 3 do q:put_nowait(i) end
        assert.equal(1, q:get_nowait())
        local j = loom.create_task(q.join, q)
        loom.sleep(0)
        q:shutdown(true)
        loom.sleep(0)
        assert.is_false(j:done())
        contains("tasks=1", tostring(q))
        q:task_done()
        j:await()
      end)
    end)

    it("a non-immediate shutdown leaves join waiting for task_done", function()
      H.run(function()
        local q = loom.Queue()
        q:put_nowait(1)
        local j = loom.create_task(q.join, q)
        loom.sleep(0)
        q:shutdown()
        loom.sleep(0)
        assert.is_false(j:done())
        q:get()
        q:task_done()
        j:await()
      end)
    end)

    it("a getter woken by shutdown, then cancelled, ends cancelled", function()
      H.run(function()
        local q = loom.Queue()
        local g = loom.create_task(q.get, q)
        loom.sleep(0)
        q:shutdown()
        g:cancel()
        cancelled(g)
      end)
    end)

    it("skips waiters cancelled but not yet resumed", function()
      H.run(function()
        local q = loom.Queue(1)
        local g = loom.create_task(q.get, q)
        loom.sleep(0)
        g:cancel()
        q:shutdown()
        cancelled(g)
        local r = loom.Queue()
        r:put_nowait(1)
        local j = loom.create_task(r.join, r)
        loom.sleep(0)
        j:cancel()
        r:get_nowait()
        r:task_done()
        cancelled(j)
      end)
    end)

    it("immediate sticks; shutdown takes a table of options", function()
      local q = loom.Queue()
      q:shutdown(true)
      q:shutdown(false)
      contains("shutdown-immediate", tostring(q))
      local r = loom.Queue()
      r:put_nowait(1)
      r:shutdown { immediate = true }
      assert.equal(0, r:qsize())
      local s = loom.Queue()
      s:put_nowait(1)
      s:shutdown {}
      assert.equal(1, s:qsize())
      contains(" shutdown>", tostring(s))
    end)
  end)

  describe("loops", function()
    it("a queue binds to the loop it first waits in", function()
      local q = loom.Queue()
      H.run(function()
        local t = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put_nowait(1)
        assert.equal(1, t:await())
        q:task_done()
      end)
      local ok, e = H.run(function() return pcall(q.get, q) end)
      assert.is_false(ok)
      assert.equal("get: the queue is bound to a different event loop", e)
      ok, e = H.run(function() return pcall(q.join, q) end)
      assert.is_true(ok)        -- nothing unfinished: join does not wait
      q:put_nowait(1)
      ok, e = H.run(function() return pcall(q.join, q) end)
      assert.is_false(ok)
      assert.equal("join: the queue is bound to a different event loop", e)
      -- without waiting, any loop (or none) may use it, as in asyncio
      assert.equal(1, H.run(function() return q:get() end))
      assert.equal(0, q:qsize())
    end)

    it("waiting needs a running loop and a task", function()
      local q = loom.Queue(1)
      assert.equal("get: no running event loop", raised(q.get, q))
      q:put_nowait(1)
      assert.equal("put: no running event loop", raised(q.put, q, 2))
      assert.equal("join: no running event loop", raised(q.join, q))
      local loop = H.loop()
      local e
      loop:call_soon(function() e = raised(q.put, q, 2) end)
      H.spin(loop)
      assert.equal("put: not inside a task", e)
      assert.equal("<Queue maxsize=1 qsize=1 tasks=1>", tostring(q))
    end)

    it("errors point at the caller", function()
      local q = loom.Queue()
      local e = raised(function() q:get() end)
      assert.matches("^[^:]*queue_spec%.lua:%d+: get: no running event loop$", e)
      e = raised(function() q:put(nil) end)
      assert.matches("^[^:]*queue_spec%.lua:%d+: bad argument #1 to 'put'", e)
      e = raised(function() q.put(1, 2) end)
      assert.matches("^[^:]*queue_spec%.lua:%d+: calling 'put' on bad self", e)
    end)
  end)

  describe("PriorityQueue", function()
    it("numbers and strings, smallest first", function()
      math.randomseed(3)
      local q, ref = loom.PriorityQueue(), {}
      for i = 1, 500 do
        local v = math.random(1, 50)
        q:put_nowait(v)
        ref[i] = v
      end
      table.sort(ref)
      for i = 1, 500 do assert.equal(ref[i], q:get_nowait()) end
      local s = loom.PriorityQueue()
      for _, w in ipairs { "pear", "apple", "fig", "banana" } do s:put_nowait(w) end
      local out = {}
      for i = 1, 4 do out[i] = s:get_nowait() end
      assert.same({ "apple", "banana", "fig", "pear" }, out)
    end)

    it("equal priorities come out in insertion order", function()
      local q = loom.PriorityQueue()
      local lt = { __lt = function(a, b) return a.p < b.p end }
      for i = 1, 300 do
        q:put_nowait(setmetatable({ p = i % 3, id = i }, lt))
      end
      local last = { [0] = 0, 0, 0 }
      local lastp = -1
      for _ = 1, 300 do
        local x = q:get_nowait()
        assert.is_true(x.p >= lastp)
        assert.is_true(x.id > last[x.p])
        last[x.p], lastp = x.id, x.p
      end
    end)

    it("stays stable with gets between the puts", function()
      local q = loom.PriorityQueue { key = function(it) return it.p end }
      local put = 0
      math.randomseed(5)
      local order = {}
      for i = 1, 2000 do
        if math.random() < 0.6 or q:empty() then
          put = put + 1
          local it = { p = math.random(1, 4), n = put }
          q:put_nowait(it)
        else
          order[#order + 1] = q:get_nowait()
        end
        if i % 500 == 0 then
          -- what remains comes out sorted by (p, n)
          local rest = {}
          while not q:empty() do rest[#rest + 1] = q:get_nowait() end
          for k = 2, #rest do
            local a, b = rest[k - 1], rest[k]
            assert.is_true(a.p < b.p or (a.p == b.p and a.n < b.n))
          end
        end
      end
      assert.is_true(#order > 0)
    end)

    it("opts.key gives the priority of plain tables", function()
      local q = loom.PriorityQueue { key = function(it) return it.when end }
      q:put_nowait { when = 3, what = "c" }
      q:put_nowait { when = 1, what = "a" }
      q:put_nowait { when = 2, what = "b" }
      q:put_nowait { when = 1, what = "a2" }
      local out = {}
      for i = 1, 4 do out[i] = q:get_nowait().what end
      assert.same({ "a", "a2", "b", "c" }, out)
      local keyobj = setmetatable({}, { __call = function(_, it) return -it end })
      local r = loom.PriorityQueue(2, { key = keyobj })
      r:put_nowait(1)
      r:put_nowait(5)
      assert.is_true(r:full())
      assert.equal(5, r:get_nowait())
    end)

    it("a key function that returns nil is an error", function()
      local q = loom.PriorityQueue { key = function() end }
      assert.equal("put_nowait: the key function returned nil",
        raised(q.put_nowait, q, {}))
      assert.equal("put: the key function returned nil", raised(q.put, q, {}))
      assert.equal(0, q:qsize())
    end)

    it("an item that does not compare is refused, the queue unchanged", function()
      local q = loom.PriorityQueue()
      q:put_nowait(1)
      local e = raised(q.put_nowait, q, "a")
      contains("attempt to compare", e)
      assert.equal(1, q:qsize())
      assert.equal("<PriorityQueue maxsize=0 qsize=1 tasks=1>", tostring(q))
      assert.equal(1, q:get_nowait())
      -- a get that cannot compare leaves the heap as it was too
      local r = loom.PriorityQueue()
      local any = setmetatable({}, { __lt = function() return false end })
      r:put_nowait(any)
      r:put_nowait(1)
      r:put_nowait("x")                  -- 1 and "x" are both below any
      e = raised(r.get_nowait, r)        -- removing the top compares them
      contains("attempt to compare", e)
      assert.equal(3, r:qsize())
    end)

    it("blocks at maxsize and wakes in order", function()
      H.run(function()
        local q = loom.PriorityQueue(1)
        q:put_nowait(5)
        local p = loom.create_task(q.put, q, 1)
        loom.sleep(0)
        assert.is_false(p:done())
        assert.equal(5, q:get())
        p:await()
        assert.equal(1, q:get())
      end)
    end)
  end)

  describe("LifoQueue", function()
    it("a waiting getter gets the item put", function()
      H.run(function()
        local q = loom.LifoQueue(2)
        local g = loom.create_task(q.get, q)
        loom.sleep(0)
        q:put("a")
        assert.equal("a", g:await())
        q:put(1)
        q:put(2)
        assert.is_true(q:full())
        assert.equal(2, q:get())
        assert.equal(1, q:get())
      end)
    end)
  end)

  describe("bad input", function()
    it("maxsize must be an integer", function()
      each(function(name, new)
        assert.equal("bad argument #1 to '" .. name .. "' (integer expected, got string)",
          raised(new, "10"))
        assert.equal("bad argument #1 to '" .. name .. "' (number has no integer representation)",
          raised(new, 1.5))
        assert.equal("bad argument #1 to '" .. name .. "' (integer expected, got boolean)",
          raised(new, true))
        assert.equal("bad argument #1 to '" .. name .. "' (number has no integer representation)",
          raised(new, math.huge))
      end)
    end)

    it("PriorityQueue's options", function()
      assert.equal("bad argument #2 to 'PriorityQueue' (table expected, got number)",
        raised(loom.PriorityQueue, 1, 5))
      assert.equal("bad argument #1 to 'PriorityQueue' (key must be callable, got number)",
        raised(loom.PriorityQueue, { key = 5 }))
      assert.equal("bad argument #2 to 'PriorityQueue' (key must be callable, got table)",
        raised(loom.PriorityQueue, 3, { key = {} }))
      assert.equal("bad argument #2 to 'PriorityQueue' (unknown option 'kee')",
        raised(loom.PriorityQueue, 0, { kee = print }))
      assert.equal(3, loom.PriorityQueue(3, {}):maxsize())
      assert.equal(0, loom.PriorityQueue(nil, { key = print }):maxsize())
    end)

    it("a nil item", function()
      each(function(_, new)
        local q = new()
        assert.equal("bad argument #1 to 'put' (value expected)", raised(q.put, q, nil))
        assert.equal("bad argument #1 to 'put' (value expected)", raised(q.put, q))
        assert.equal("bad argument #1 to 'put_nowait' (value expected)",
          raised(q.put_nowait, q, nil))
        assert.equal(0, q:qsize())
      end)
    end)

    it("a wrong self names the method and the class", function()
      each(function(name, new)
        local q = new()
        local expected = "loom." .. name
        for _, m in ipairs { "put", "put_nowait", "get", "get_nowait", "qsize",
                             "empty", "full", "maxsize", "task_done", "join",
                             "shutdown" } do
          assert.equal(("calling '%s' on bad self (%s expected, got number)")
            :format(m, expected), raised(q[m], 5))
          assert.equal(("calling '%s' on bad self (%s expected, got nil)")
            :format(m, expected), raised(q[m]))
          assert.equal(("calling '%s' on bad self (%s expected, got loom.Queue)")
            :format(m, expected), raised(q[m], loom.Queue()))
        end
      end)
    end)

    it("shutdown's argument", function()
      local q = loom.Queue()
      assert.equal("bad argument #1 to 'shutdown' (boolean expected, got number)",
        raised(q.shutdown, q, 1))
      assert.equal("bad argument #1 to 'shutdown' (boolean expected, got string)",
        raised(q.shutdown, q, { immediate = "yes" }))
      assert.equal("<Queue maxsize=0 qsize=0>", tostring(q))
    end)
  end)
end)
