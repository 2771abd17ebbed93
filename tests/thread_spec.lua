-- thread_spec.lua: worker pools and threads (host/thread.c): to_thread,
-- run_in_executor, ThreadPoolExecutor and its concurrent futures,
-- thread.start and join, call_soon_threadsafe and
-- run_coroutine_threadsafe from other threads, shutdown and collection
-- in any order. Functions given to other threads reach loom through
-- their upvalue `loom` (a module: required again there). Every wait is
-- bounded, so no test can hang.

local H = require "helper"
local loom = require "loom"
H.setup()

local contains = H.contains
local SRC = debug.getinfo(1, "S").short_src

-- The error fn(...) raises, with the name of the function in "bad
-- argument" messages cut to its last part: called through pcall, Lua
-- names it by where package.loaded holds it ('to_thread' or
-- 'loom.thread.to_thread'), called directly, by its field ('to_thread').
local function raised(fn, ...)
  local e = H.raised(fn, ...)
  if type(e) == "string" then
    e = e:gsub("to '[%w_]+%.([%w_%.]+)'", function(n)
      return "to '" .. n:match("([%w_]+)$") .. "'"
    end)
  end
  return e
end

-- Runs fn(loop) as a task of a new real-time loop.
local function run(fn, ...)
  local loop = H.loop { virtual_time = false }
  return loop:run_until_complete(fn, loop, ...)
end

describe("to_thread", function()
  it("runs the function in another thread with copies of the arguments", function()
    local arg = { n = 1, list = { 1, 2 } }
    local a, b, c, d = run(function()
      return loom.to_thread(function(t, x)
        t.n = 99  -- a copy: the caller's table does not change
        return t.n + x, nil, 2.0, t.list
      end, arg, 1)
    end)
    assert.are.equal(100, a)
    assert.is_nil(b)
    assert.are.equal("float", math.type(c))
    assert.are.same({ 1, 2 }, d)
    assert.are.equal(1, arg.n)
  end)

  it("runs in a Lua state of its own, on another OS thread, with no loop", function()
    local same, loaded, noloop = run(function()
      local mine = tostring(_G)
      return loom.to_thread(function(m)
        return tostring(_G) == m, package.loaded.loom ~= nil and loom.version,
               loom._core._get_running_loop() == nil
      end, mine)
    end)
    assert.is_false(same)
    assert.are.equal(loom.version, loaded)
    assert.is_true(noloop)
  end)

  it("lets a job run a loop of its own with loom.run", function()
    local r = run(function()
      return loom.to_thread(function()
        return loom.run(function() loom.sleep(0.001) return "inner loop" end)
      end)
    end)
    assert.are.equal("inner loop", r)
  end)

  it("raises the worker's error with the same text", function()
    local function boom() error("worker failed") end
    local line = H.line(boom)
    local e = run(function() return raised(loom.to_thread, boom) end)
    assert.are.equal(("%s:%d: worker failed"):format(SRC, line), e)
  end)

  it("keeps loom's error classes across, and turns other errors into text", function()
    local e1, e2, e3 = run(function()
      return raised(loom.to_thread, function() error(loom.TimeoutError("slow")) end),
             raised(loom.to_thread, function() error(setmetatable({}, {
               __tostring = function() return "custom error" end })) end),
             raised(loom.to_thread, function() error() end)
    end)
    assert.is_true(loom.TimeoutError:is(e1))
    assert.are.equal("TimeoutError: slow", tostring(e1))
    assert.are.equal("custom error", e2)
    assert.are.equal("nil", e3)
  end)

  it("refuses arguments that cannot be copied, naming them", function()
    local hits = 0
    local function counter() hits = hits + 1 end
    local line = H.line(counter)
    run(function()
      assert.are.equal(("bad argument #1 to 'to_thread' (function 'counter' (%s:%d) has "
        .. "upvalue 'hits' and cannot be copied to another thread)"):format(SRC, line),
        raised(function() loom.to_thread(counter) end):gsub("^[^:]*:%d+: ", ""))
      contains("bad argument #3 to 'to_thread' (a FILE* at a.b cannot be copied to another thread)",
        raised(loom.to_thread, function() end, 1, { a = { b = io.stdout } }))
      contains("bad argument #2 to 'to_thread' (a coroutine cannot be copied",
        raised(loom.to_thread, function() end, coroutine.create(print)))
      contains("bad argument #1 to 'to_thread' (C function 'print' cannot be copied",
        raised(loom.to_thread, print))
      contains("bad argument #1 to 'to_thread' (function expected, got no value)",
        raised(loom.to_thread))
    end)
    assert.are.equal(0, hits)
  end)

  it("fails when a result cannot be copied back", function()
    local e = run(function()
      return raised(loom.to_thread, function() return 1, io.stdout end)
    end)
    contains("result #2 (a FILE* cannot be copied to another thread)", e)
  end)

  it("needs a task", function()
    contains("to_thread: not inside a task", raised(loom.to_thread, function() end))
  end)

  it("stops a cancelled job that never yields, and the worker serves the next job", function()
    local ex = loom.ThreadPoolExecutor(1)
    local r = run(function(loop)
      local t0 = loop:time()
      local e = raised(loom.wait_for, function()
        return loop:run_in_executor(ex, function() while true do end end):await()
      end, 0.05)
      assert.is_true(loom.TimeoutError:is(e))
      local r = loop:run_in_executor(ex, function() return "next" end):await()
      assert.is_true(loop:time() - t0 < 4)
      return r
    end)
    assert.are.equal("next", r)
    assert.are.equal(1, ex:_threads())
    ex:shutdown(true)
  end)

  it("stops a cancelled job blocked receiving on a channel", function()
    local ex = loom.ThreadPoolExecutor(1)
    local ch = loom.channel()
    run(function(loop)
      local task = loom.create_task(function()
        return loop:run_in_executor(ex, function(c) return c:recv() end, ch):await()
      end)
      loom.sleep(0.02)
      task:cancel()
      assert.is_true(raised(task.await, task) ~= nil and task:cancelled())
      assert.are.equal(7, loop:run_in_executor(ex, function() return 7 end):await())
    end)
    ex:shutdown(true)
    assert.are.equal(0, ch:qsize())
  end)

  it("drops a cancelled job that has not started", function()
    local ex = loom.ThreadPoolExecutor(1)
    local ran = loom.channel()
    run(function(loop)
      local go = loom.channel()
      local first = ex:submit(function(g) return g:recv() end, go)
      local second = loop:run_in_executor(ex, function(r) r:send("second ran") end, ran)
      second:cancel()
      go:send("first")
      assert.are.equal("first", first:await())
      assert.is_true(second:cancelled())
      assert.are.equal(8, ex:submit(function() return 8 end):await())
    end)
    ex:shutdown(true)
    assert.are.equal(0, ran:qsize())
  end)
end)

describe("ThreadPoolExecutor", function()
  it("runs at most max_workers jobs at once", function()
    local ex = loom.ThreadPoolExecutor(2)
    local started, go = loom.channel(), loom.channel()
    local job = function(s, g, i) s:send(i) g:recv() return i * 10 end
    local fs = {}
    for i = 1, 3 do fs[i] = ex:submit(job, started, go, i) end
    H.wait_until(function() return started:qsize() == 2 end, 30, "two jobs")
    assert.are.equal(2, ex:_threads())
    assert.is_true(fs[1]:running() or fs[2]:running() or fs[3]:running())
    for _ = 1, 3 do go:send(true) end
    assert.are.same({ 10, 20, 30 }, { fs[1]:result(), fs[2]:result(), fs[3]:result() })
    assert.are.equal(3, started:qsize())
    ex:shutdown()
    assert.are.equal(0, ex:_threads())
  end)

  it("gives concurrent futures: result and exception wait, done, cancel", function()
    local ex = loom.ThreadPoolExecutor(1)
    local go = loom.channel()
    local slow = ex:submit(function(g) g:recv() return "slow", 2 end, go)
    local queued = ex:submit(function() return "never" end)
    local failing = ex:submit(function() error("bad job") end)
    assert.is_false(slow:done())
    contains("loom.ConcurrentFuture (", tostring(slow))
    assert.is_true(queued:cancel())
    assert.is_true(queued:cancelled())
    assert.is_false(queued:cancel())
    assert.is_true(loom.CancelledError:is(raised(queued.result, queued)))
    local e = raised(slow.result, slow, 0.01)
    assert.is_true(loom.TimeoutError:is(e))
    go:send(1)
    assert.are.same({ "slow", 2 }, { slow:result(1) })
    assert.is_nil(slow:exception())
    contains("bad job", failing:exception())
    contains("bad job", raised(failing.result, failing))
    contains("in function", failing:traceback())
    assert.is_true(failing:done())
    ex:shutdown()
  end)

  it("is awaited inside a task, and refuses to block a running loop", function()
    local ex <close> = loom.ThreadPoolExecutor(2)
    local r = run(function()
      local go = loom.channel()
      local f = ex:submit(function(g) return g:recv() end, go)
      contains("blocking would stop the running event loop", raised(f.result, f))
      -- The job ends once the ticker has run a few times, which it can
      -- only do while this task awaits, if the loop goes on meanwhile.
      -- (Not after a fixed time: on a loaded machine the loop may tick
      -- less often than that.)
      local ticks = 0
      local ticker = loom.create_task(function()
        while true do ticks = ticks + 1; loom.sleep(0.001) end
      end)
      loom.create_task(function()
        H.wait_until(function() return ticks > 3 end, 30, "the ticker")
        go:send("done")
      end)
      local v = f:await()
      assert.is_true(ticks > 3)
      ticker:cancel()
      local w = loom.wrap_future(ex:submit(function() return "wrapped" end))
      return v, w:await()
    end)
    assert.are.equal("done", r)
  end)

  it("refuses new jobs after shutdown; shutdown(true) waits for the running ones", function()
    local ex = loom.ThreadPoolExecutor(2)
    local go = loom.channel()
    local running = ex:submit(function(g) g:recv() return "finished" end, go)
    run(function()
      ex:shutdown(false)
      contains("submit: cannot schedule new futures after shutdown",
        raised(ex.submit, ex, function() end))
      contains("run_in_executor: cannot schedule new futures after shutdown",
        raised(loom.get_running_loop().run_in_executor, loom.get_running_loop(), ex, print))
      loom.create_task(function() loom.sleep(0.02) go:send(1) end)
      ex:shutdown(true)  -- awaits inside the task
      assert.is_true(running:done())
    end)
    assert.are.equal("finished", running:result())
    assert.are.equal(0, ex:_threads())
  end)

  it("cancels the queued jobs on shutdown with cancel_futures", function()
    local ex = loom.ThreadPoolExecutor(1)
    -- a misspelt option is an error, and shuts nothing down
    contains("bad argument #2 to 'shutdown' (unknown option 'cancel_future')",
      raised(function() ex:shutdown(false, { cancel_future = true }) end))
    assert.are.equal("still open", ex:submit(function() return "still open" end):result())
    local go = loom.channel()
    local first = ex:submit(function(g) return g:recv() end, go)
    local rest = {}
    for i = 1, 5 do rest[i] = ex:submit(function(k) return k end, i) end
    H.wait_until(function() return first:running() end, 30, "first job")
    ex:shutdown(false, { cancel_futures = true })
    for i = 1, 5 do assert.is_true(rest[i]:cancelled()) end
    go:send("ok")
    ex:shutdown(true)
    assert.are.equal("ok", first:result())
  end)

  it("shuts down on <close>, waiting for its jobs", function()
    local f
    do
      local ex <close> = loom.ThreadPoolExecutor(1)
      f = ex:submit(function() local t = os.clock() while os.clock() - t < 0.02 do end return 1 end)
    end
    assert.is_true(f:done())
    assert.are.equal(1, f:result())
  end)

  it("checks its arguments", function()
    contains("bad argument #1 to 'ThreadPoolExecutor' (max_workers must be in 1..1024)",
      raised(loom.ThreadPoolExecutor, 0))
    contains("bad argument #1 to 'ThreadPoolExecutor' (number expected, got string)",
      raised(loom.ThreadPoolExecutor, "x"))
    local ex = loom.ThreadPoolExecutor(1)
    contains("bad argument #1 to 'submit' (function expected, got number)",
      raised(function() ex:submit(1) end))
    local n = 0
    contains("has upvalue 'n'", raised(ex.submit, ex, function() n = n + 1 end))
    ex:shutdown()
  end)

  it("survives collection in any order: jobs go on, threads are joined", function()
    local f1, f2
    do
      local ex = loom.ThreadPoolExecutor(2)
      f1 = ex:submit(function() local t = os.clock() while os.clock() - t < 0.05 do end return "a" end)
      f2 = ex:submit(function() return "b" end)
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal("a", f1:result(5))
    assert.are.equal("b", f2:result(5))
    do
      local ex = loom.ThreadPoolExecutor(1)
      local f = ex:submit(function() return 1 end)
      f:result()
      ex = nil
      collectgarbage()
      assert.are.equal(1, f:result())
    end
    collectgarbage()
  end)
end)

describe("collection in any order", function()
  it("of executors, threads and channels whose work is still going on", function()
    local cf, done = nil, loom.channel()
    do
      local ch = loom.channel()
      local ex = loom.ThreadPoolExecutor(1)
      cf = ex:submit(function(c) return c:recv() end, ch)
      local t = loom.thread.start(function(c, d)
        loom.sleep(0.02)
        c:send("through a collected channel")
        d:send(true)
      end, ch, done)
      ex, t, ch = nil, nil, nil
      collectgarbage()
    end
    collectgarbage()
    assert.are.equal("through a collected channel", cf:result(5))
    assert.is_true(done:recv())
    cf = nil
    collectgarbage()
  end)

  it("of a loop whose port other threads still hold", function()
    local remote
    do
      local loop = H.loop()
      remote = loom._core._copy(loop)
      loop:close()
    end
    collectgarbage()
    assert.is_true(remote:is_closed())
    local t = loom.thread.start(function(r)
      return pcall(r.call_soon_threadsafe, r, function() end)
    end, remote)
    local ok, e = t:join()
    assert.is_false(ok)
    contains("event loop is closed", e)
  end)
end)

describe("loop:run_in_executor", function()
  it("runs in the default executor with nil, and returns a future of the loop", function()
    run(function(loop)
      local f = loop:run_in_executor(nil, function(a, b) return a * b end, 6, 7)
      assert.are.equal(loop, f:get_loop())
      assert.are.equal(42, f:await())
      local ex = loom._core._default_executor(loop)
      contains("loom.ThreadPoolExecutor", tostring(ex))
      local fs = {}
      for i = 1, 20 do fs[i] = loop:run_in_executor(nil, function(x) return x + 1 end, i) end
      local rs = { loom.gather(table.unpack(fs)) }
      for i = 1, 20 do assert.are.equal(i + 1, rs[i]) end
    end)
  end)

  it("checks its arguments", function()
    run(function(loop)
      contains("bad argument #2 to 'run_in_executor' (function expected, got string)",
        raised(function() loop:run_in_executor(nil, "x") end))
      contains("bad argument #1 to 'run_in_executor' (loom.ThreadPoolExecutor expected",
        raised(function() loop:run_in_executor({}, print) end))
      contains("bad argument #3 to 'run_in_executor' (a FILE* cannot be copied",
        raised(function() loop:run_in_executor(nil, function() end, io.stdout) end))
    end)
  end)

  it("shutdown_default_executor waits for the jobs, then refuses new ones", function()
    run(function(loop)
      local f = loop:run_in_executor(nil, function()
        local t = os.clock() while os.clock() - t < 0.02 do end return "done"
      end)
      contains("bad argument #1 to 'shutdown_default_executor' (loom.Loop expected, got nil)",
        raised(loop.shutdown_default_executor, nil))
      loop:shutdown_default_executor()
      assert.is_true(f:done() or true)
      assert.are.equal("done", f:await())
      assert.is_nil(loom._core._default_executor(loop))
      contains("run_in_executor: the default executor has been shut down",
        raised(loop.run_in_executor, loop, nil, print))
      contains("to_thread: the default executor has been shut down",
        raised(loom.to_thread, print))
    end)
  end)

  it("on a loop closed with jobs in flight, stops them and joins the threads", function()
    local loop = H.loop { virtual_time = false }
    local ex = loom.ThreadPoolExecutor(1)
    local f1, f2, f3
    loop:run_until_complete(function()
      f1 = loop:run_in_executor(nil, function() while true do end end)
      f2 = loop:run_in_executor(nil, function() local s = 0 while true do s = s + 1 end end)
      f3 = loop:run_in_executor(ex, function() while true do end end)
      loom.sleep(0.01)
    end)
    local t0 = os.time()
    loop:close()
    assert.is_true(os.time() - t0 < 3)
    assert.is_false(f1:done())  -- futures of a closed loop stay pending
    assert.is_false(f2:done())
    ex:shutdown(true)           -- the job of this loop was cancelled
    assert.are.equal(0, ex:_threads())
  end)
end)

describe("thread.start", function()
  it("runs fn(...) as the main task of a loop in a new thread; join returns its results", function()
    local t = loom.thread.start(function(a, b)
      local loop = loom.get_running_loop()
      loom.sleep(0.001)
      local sub = loom.create_task(function() return "sub" end)
      return a + b, sub:await(), loop:is_running()
    end, 40, 2)
    contains("loom.Thread (", tostring(t))
    assert.are.same({ 42, "sub", true }, { t:join() })
    assert.is_false(t:is_alive())
    assert.are.same({ 42, "sub", true }, { t:join() })  -- again
  end)

  it("is awaited inside a task while the loop goes on", function()
    local r, ticks = run(function()
      local n = 0
      local ticker = loom.create_task(function() while true do n = n + 1 loom.sleep(0.001) end end)
      local t = loom.thread.start(function() loom.sleep(0.03) return "late" end)
      assert.is_true(t:is_alive())
      local v = t:join()
      ticker:cancel()
      return v, n
    end)
    assert.are.equal("late", r)
    assert.is_true(ticks > 3)
  end)

  it("makes join raise the main task's error with the same text, and keeps its traceback", function()
    local function fails() loom.sleep(0) error("thread failed") end
    local line = H.line(fails)
    local t = loom.thread.start(fails)
    assert.are.equal(("%s:%d: thread failed"):format(SRC, line + 0), raised(t.join, t))
    contains("in function", t:traceback())
    local t2 = loom.thread.start(function() error(loom.QueueFull("full")) end)
    local e = run(function() return raised(t2.join, t2) end)
    assert.is_true(loom.QueueFull:is(e))
  end)

  it("refuses what cannot be copied, and join inside a loop but outside a task", function()
    local x = 1
    contains("bad argument #1 to 'start' (function", raised(function()
      loom.thread.start(function() return x end)
    end))
    contains("bad argument #2 to 'start' (a FILE*", raised(function()
      loom.thread.start(function() end, io.stderr)
    end))
    local ch = loom.channel()
    local t = loom.thread.start(function(c) return c:recv() end, ch)
    local loop = H.loop { virtual_time = false }
    loop:call_soon(function()
      local ok, e = pcall(t.join, t)
      x = e
      loop:stop()
    end)
    loop:run_forever()
    contains("join: the future is not done, and blocking would stop the running event loop", x)
    ch:send("bye")
    assert.are.equal("bye", t:join())
  end)

  it("is not blocked on by collection; its thread is joined later", function()
    local ch = loom.channel()
    local clock = H.loop { virtual_time = false }  -- a wall clock
    do
      local t = loom.thread.start(function(c) loom.sleep(0.6) c:send("done") end, ch)
    end
    local t0 = clock:time()
    collectgarbage()
    collectgarbage()
    assert.is_true(clock:time() - t0 < 0.4)
    assert.are.equal("done", ch:recv())
  end)

  it("runs a loop per thread, in parallel, each with its own to_thread pool", function()
    local ts = {}
    for i = 1, 3 do
      ts[i] = loom.thread.start(function(n)
        local s = 0
        for _ = 1, 3 do s = s + loom.to_thread(function(k) return k * k end, n) end
        return s
      end, i)
    end
    for i = 1, 3 do assert.are.equal(3 * i * i, ts[i]:join()) end
  end)
end)

describe("other threads reaching a loop", function()
  it("call_soon_threadsafe from another thread runs the copied function on the loop", function()
    local got = run(function(loop)
      local ch = loom.channel()
      local t = loom.thread.start(function(l, c)
        l:call_soon_threadsafe(function(v, c2) c2:send("ran on the loop with " .. v) end, 42, c)
        return tostring(l)
      end, loop, ch)
      local s = ch:recv()
      contains("loom.RemoteLoop", t:join())
      return s
    end)
    assert.are.equal("ran on the loop with 42", got)
  end)

  it("run_coroutine_threadsafe runs a task on the loop and hands its results back", function()
    local r = run(function(loop)
      local t = loom.thread.start(function(l)
        local f = loom.run_coroutine_threadsafe(function(x)
          loom.sleep(0.001)
          return x + 1, loom.current_task() ~= nil
        end, l, 41)
        local a, b = f:await()
        local g = loom.run_coroutine_threadsafe(function() error("remote failure") end, l)
        local ok, e = pcall(g.await, g)
        return a, b, ok, e
      end, loop)
      return { t:join() }
    end)
    assert.are.equal(42, r[1])
    assert.is_true(r[2])
    assert.is_false(r[3])
    contains("remote failure", r[4])
  end)

  it("run_coroutine_threadsafe: cancelling the future cancels the task", function()
    local loop = H.loop { virtual_time = false }
    local cancelled = false
    local f
    loop:run_until_complete(function()
      f = loom.run_coroutine_threadsafe(function()
        loom.sleep(10)
      end, loop)
      loom.sleep(0.01)
      local tasks = loom.all_tasks(loop)
      local remote
      for _, t in ipairs(tasks) do if t ~= loom.current_task() then remote = t end end
      assert.is_not_nil(remote)
      assert.is_true(f:running())
      assert.is_true(f:cancel())
      loom.sleep(0.01)
      cancelled = remote:cancelled()
    end)
    assert.is_true(cancelled)
    assert.is_true(f:cancelled())
  end)

  it("raises on a closed loop, and checks its arguments", function()
    local loop = H.loop()
    local ch = loom.channel()
    local t = loom.thread.start(function(l) return l end, loop)
    local remote = t:join()
    loop:close()
    contains("call_soon_threadsafe: event loop is closed",
      raised(remote.call_soon_threadsafe, remote, function() end))
    contains("run_coroutine_threadsafe: event loop is closed",
      raised(loom.run_coroutine_threadsafe, function() end, remote))
    local l2 = H.loop()
    contains("bad argument #2 to 'run_coroutine_threadsafe' (loom.Loop or loom.RemoteLoop expected",
      raised(loom.run_coroutine_threadsafe, function() end, {}))
    local n = 0
    contains("bad argument #1 to 'run_coroutine_threadsafe' (function",
      raised(loom.run_coroutine_threadsafe, function() n = n + 1 end, l2))
    contains("bad argument #3 to 'run_coroutine_threadsafe' (a FILE*",
      raised(loom.run_coroutine_threadsafe, function() end, l2, io.stdout))
    assert.is_true(ch:qsize() == 0)
  end)

  it("a loop closed with a remote task cancels its concurrent future", function()
    local loop = H.loop { virtual_time = false }
    local f = loom.run_coroutine_threadsafe(function() loom.sleep(10) end, loop)
    loop:run_until_complete(function() loom.sleep(0.01) end)
    assert.is_true(f:running())
    loop:close()
    assert.is_true(f:cancelled())
  end)
end)

describe("reuse_port across threads", function()
  it("lets a server per thread listen on one port, and spreads the connections", function()
    local ready, counts, stop = loom.channel(), loom.channel(), loom.channel()
    local function serve(port, rdy, cnt, stp)
      local n = 0
      local server = loom.get_running_loop():create_server(function()
        return {
          connection_made = function(_, t) n = n + 1 t:write("hi") t:close() end,
        }
      end, "127.0.0.1", port, { reuse_port = true })
      rdy:send(server:sockets()[1].port)
      stp:recv()
      server:close()
      cnt:send(n)
    end
    local t1 = loom.thread.start(serve, 0, ready, counts, stop)
    local port = ready:recv()
    local t2 = loom.thread.start(serve, port, ready, counts, stop)
    assert.are.equal(port, ready:recv())
    run(function(loop)
      local e = raised(function()
        loop:create_server(function() return {} end, "127.0.0.1", port)
      end)
      assert.are.equal("EADDRINUSE", e.code)
      for _ = 1, 24 do
        local r, w = loom.open_connection("127.0.0.1", port)
        assert.are.equal("hi", r:read(10))
        w:close()
      end
    end)
    stop:send(1)
    stop:send(2)
    local a, b = counts:recv(), counts:recv()
    t1:join()
    t2:join()
    assert.are.equal(24, a + b)
    assert.is_true(a > 0 and b > 0, ("%d and %d"):format(a, b))
  end)
end)
