-- channel_spec.lua: loom.channel (host/channel.c): copied values between
-- threads, backpressure at capacity, close, waiting inside tasks and
-- blocking outside loops, cancellation and collection. Every wait is
-- bounded, so no test can hang.

local H = require "helper"
local loom = require "loom"
H.setup()

local raised, contains = H.raised, H.contains

local function run(fn, ...)
  local loop = H.loop { virtual_time = false }
  return loop:run_until_complete(fn, loop, ...)
end

describe("channel", function()
  it("passes copies of values, in order, within one thread", function()
    local ch = loom.channel()
    local t = { a = { 1, 2 } }
    ch:send(t)
    ch:send("two")
    ch:send(3.0)
    t.a[1] = 99
    assert.are.equal(3, ch:qsize())
    local got = ch:recv()
    assert.are_not.equal(t, got)
    assert.are.same({ a = { 1, 2 } }, got)
    assert.are.equal("two", ch:recv())
    assert.are.equal("float", math.type(ch:recv()))
    assert.are.equal(0, ch:qsize())
    contains("loom.Channel (0)", tostring(ch))
  end)

  it("is the same channel on the other side of a thread and of another channel", function()
    local a, b = loom.channel(), loom.channel()
    a:send(b)
    local b2 = a:recv()
    assert.are.equal(b, b2)
    b2:send("through the copy")
    assert.are.equal("through the copy", b:recv())
    local t = loom.thread.start(function(inbox, outbox)
      local n = 0
      while true do
        local v = inbox:recv()
        if v == nil then break end
        n = n + v
        outbox:send(n)
      end
      return n
    end, a, b)
    local sums = run(function()
      local r = {}
      for i = 1, 5 do a:send(i); r[i] = b:recv() end
      a:close()
      return r
    end)
    assert.are.same({ 1, 3, 6, 10, 15 }, sums)
    assert.are.equal(15, t:join())
  end)

  it("applies backpressure at capacity: send awaits until a value is received", function()
    local order = run(function()
      local ch = loom.channel(2)
      local order = {}
      local sender = loom.create_task(function()
        for i = 1, 4 do ch:send(i); order[#order + 1] = "sent " .. i end
      end)
      loom.sleep(0.01)
      assert.are.same({ "sent 1", "sent 2" }, order)
      assert.are.equal(2, ch:qsize())
      order[#order + 1] = "got " .. ch:recv()
      loom.sleep(0.01)
      order[#order + 1] = "got " .. ch:recv()
      sender:await()
      return order
    end)
    assert.are.same({ "sent 1", "sent 2", "got 1", "sent 3", "got 2", "sent 4" }, order)
  end)

  it("wakes a receiver waiting in a task when a value comes from another thread", function()
    local v = run(function()
      local ch = loom.channel()
      local t = loom.thread.start(function(c) loom.sleep(0.02) c:send({ from = "thread" }) end, ch)
      local got = ch:recv()
      t:join()
      return got
    end)
    assert.are.same({ from = "thread" }, v)
  end)

  it("blocks outside any loop, in a worker and in a plain script", function()
    local ch, back = loom.channel(1), loom.channel(1)
    local ex = loom.ThreadPoolExecutor(1)
    local f = ex:submit(function(c, r)
      for i = 1, 3 do r:send(c:recv() * 2) end
      return "worker done"
    end, ch, back)
    local got = {}
    for i = 1, 3 do ch:send(i); got[i] = back:recv() end
    assert.are.same({ 2, 4, 6 }, got)
    assert.are.equal("worker done", f:result(5))
    ex:shutdown()
  end)

  it("closes: values left are received, then nil; send raises", function()
    local ch = loom.channel()
    ch:send(1)
    ch:close()
    ch:close()  -- idempotent
    assert.is_true(ch:is_closed())
    contains("send: the channel is closed", raised(ch.send, ch, 2))
    assert.are.equal(1, ch:recv())
    assert.is_nil(ch:recv())
    assert.is_nil(ch:recv())
    contains("closed", tostring(ch))
  end)

  it("wakes a receiver waiting when the channel closes, with nil; and a blocked sender with an error", function()
    run(function()
      local ch = loom.channel(1)
      local r = loom.create_task(function() return ch:recv(), "woke" end)
      loom.sleep(0.01)
      assert.is_false(r:done())
      ch:close()
      local v, w = r:await()
      assert.is_nil(v)
      assert.are.equal("woke", w)
      local full = loom.channel(1)
      full:send(1)
      local s = loom.create_task(function() full:send(2) end)
      loom.sleep(0.01)
      full:close()
      contains("send: the channel is closed", raised(s.await, s))
    end)
  end)

  it("wakes a receiver in another thread when the channel closes", function()
    local ch = loom.channel()
    local t = loom.thread.start(function(c) return c:recv() == nil and "nil" end, ch)
    run(function() loom.sleep(0.02) ch:close() end)
    assert.are.equal("nil", t:join())
  end)

  it("forgets a receiver whose task was cancelled", function()
    run(function()
      local ch = loom.channel()
      local r = loom.create_task(function() return ch:recv() end)
      loom.sleep(0.01)
      r:cancel()
      loom.sleep(0)
      assert.is_true(r:cancelled())
      ch:send("kept")
      assert.are.equal(1, ch:qsize())
      assert.are.equal("kept", ch:recv())
      local e = raised(loom.wait_for, function() return ch:recv() end, 0.01)
      assert.is_true(loom.TimeoutError:is(e))
    end)
  end)

  it("refuses to block a running loop outside a task", function()
    local ch = loom.channel(1)
    ch:send(1)
    local loop = H.loop()
    local errs = {}
    loop:call_soon(function()
      errs[1] = select(2, pcall(ch.send, ch, 2))
      ch:recv()
      errs[2] = select(2, pcall(ch.recv, ch))
    end)
    H.spin(loop)
    contains("send: the channel is full, and blocking would stop the running event loop", errs[1])
    contains("recv: the channel is empty, and blocking would stop the running event loop", errs[2])
  end)

  it("checks its arguments", function()
    contains("capacity must be a positive integer (or nil for no bound)", raised(loom.channel, 0))
    contains("number expected, got string", raised(loom.channel, "x"))
    local ch = loom.channel()
    contains("bad argument #1 to 'send' (value other than nil expected",
      raised(function() ch:send(nil) end))
    contains("bad argument #1 to 'send' (a FILE* at f cannot be copied to another thread)",
      raised(function() ch:send({ f = io.stdout }) end))
    assert.are.equal(0, ch:qsize())
    contains("loom.Channel expected", raised(ch.recv, {}))
  end)

  it("frees what it holds when collected, channels inside channels too", function()
    do
      local a, b = loom.channel(), loom.channel()
      a:send(b)
      b:send({ big = string.rep("x", 100000) })
      local c <close> = loom.channel()
      c:send(a)
    end
    collectgarbage()
    collectgarbage()
  end)
end)
