-- timer_spec.lua - timers (the heap in host/loop.c, TimerHandle in
-- host/handle.c, loom.sleep in host/task.c): order, when(), cancel and
-- heap compaction, bad delays, the past and the infinite future, timers
-- against call_soon callbacks, the real clock, and many timers.
--
-- Loops are virtual-time (H.loop()) unless the real clock is the subject.
-- Ordering specs compare traces with what asyncio does; each expected
-- trace is asyncio's (checked against CPython 3.11's _run_once).
--
-- Regression tests carry a tag naming the bug they guard against.

local H = require "helper"
local loom = require "loom"
H.setup()

local errof, contains = H.raised, H.contains

-- Runs the loop until virtual time 'at' (default far away), then stops.
local function run_until(loop, at)
  loop:call_at(at or 1e9, function() loop:stop() end)
  loop:run_forever()
end

describe("timer order", function()
  it("fires by deadline, not by scheduling order", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_later(3, add, "3")
    loop:call_later(1, add, "1")
    loop:call_at(2, add, "2")
    loop:call_later(0.5, add, "0.5")
    run_until(loop)
    assert.are.same({ "0.5", "1", "2", "3" }, trace)
  end)

  it("fires equal deadlines in scheduling order (call_later and call_at mixed)", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    local t0 = loop:time()
    loop:call_at(t0 + 5, add, "a")
    loop:call_later(5, add, "b")
    loop:call_at(t0 + 5, add, "c")
    loop:call_later(5, add, "d")
    loop:call_at(t0 + 4, add, "first")
    run_until(loop)
    assert.are.same({ "first", "a", "b", "c", "d" }, trace)
  end)

  it("runs at the deadline: loop:time() equals when() inside the callback", function()
    local loop = H.loop()
    local seen = {}
    local hs = {}
    for i, d in ipairs { 0.25, 7, 1e-3, 12345.5 } do
      hs[i] = loop:call_later(d, function() seen[i] = loop:time() end)
    end
    run_until(loop)
    for i, h in ipairs(hs) do assert.are.equal(h:when(), seen[i]) end
  end)

  it("passes the timer's arguments", function()
    local loop = H.loop()
    local got
    loop:call_later(1, function(...) got = table.pack(...) end, nil, 2, nil)
    run_until(loop)
    assert.are.same({ n = 3, nil, 2, nil }, got)
  end)

  it("timers scheduled from timer callbacks fire at their own deadlines", function()
    local loop = H.loop()
    local times = {}
    local function tick(n)
      times[#times + 1] = loop:time()
      if n > 1 then loop:call_later(1.5, tick, n - 1) end
    end
    loop:call_later(1.5, tick, 5)
    run_until(loop)
    assert.are.same({ 1.5, 3, 4.5, 6, 7.5 }, times)
  end)

  it("a timer scheduled from a callback for an earlier deadline fires before later ones", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_later(10, add, "ten")
    loop:call_later(1, function()
      add "one"
      loop:call_later(2, add, "three")   -- due at 3
      loop:call_at(20, add, "twenty")
    end)
    run_until(loop)
    assert.are.same({ "one", "three", "ten", "twenty" }, trace)
  end)
end)

describe("timers and call_soon", function()
  it("due timers go after the callbacks already ready", function()
    -- asyncio: A T0 B T1
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_soon(function()
      add "A"
      loop:call_soon(add, "B")
      loop:call_later(0, add, "T1")
    end)
    loop:call_later(0, add, "T0")
    run_until(loop)
    assert.are.same({ "A", "T0", "B", "T1" }, trace)
  end)

  it("call_later(0) scheduled first still runs after call_soon", function()
    -- asyncio: soon later
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_later(0, add, "later")
    loop:call_soon(add, "soon")
    run_until(loop)
    assert.are.same({ "soon", "later" }, trace)
  end)

  it("timers due together run in one iteration, before the callbacks they schedule", function()
    -- asyncio: T1 T2 S U
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_later(1, function()
      add "T1"
      loop:call_soon(add, "S")
      loop:call_later(0, add, "U")
    end)
    loop:call_later(1, add, "T2")
    run_until(loop)
    assert.are.same({ "T1", "T2", "S", "U" }, trace)
  end)

  it("call_at in the past runs soon, after the ready callbacks, by deadline", function()
    -- asyncio: soon past20 past10
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:call_later(100, function()
      local now = loop:time()
      loop:call_at(now - 10, add, "past10")
      loop:call_at(now - 20, add, "past20")
      loop:call_soon(add, "soon")
      loop:call_soon(function() add(loop:time()) end)
    end)
    run_until(loop)
    assert.are.same({ "soon", 100, "past20", "past10" }, trace)
  end)

  it("call_at(-math.huge) runs soon", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    local h = loop:call_at(-math.huge, add, "x")
    assert.are.equal(-math.huge, h:when())
    run_until(loop, 1)
    assert.are.same({ "x" }, trace)
  end)

  it("#sleep-order a task sleeping until t resumes in asyncio's order against a timer due at t", function()
    -- asyncio: sleep() is a call_later that completes a future, and the
    -- task resumes from that future's done callback one iteration later:
    -- T A S
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:run_until_complete(function()
      local a = loom.create_task(function() loom.sleep(1); add "A" end)
      loom.sleep(0)   -- a is asleep now, its deadline scheduled first
      loop:call_later(1, function()
        add "T"
        loop:call_soon(add, "S")
      end)
      a:await()
      loom.sleep(0)
    end)
    assert.are.same({ "T", "A", "S" }, trace)
  end)
end)

describe("virtual clock", function()
  it("does not advance while callbacks are ready", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    local n = 0
    local function step()
      n = n + 1
      if n < 100 then loop:call_soon(step) else add("chain " .. loop:time()) end
    end
    loop:call_soon(step)
    loop:call_later(1, function() add("timer " .. loop:time()) end)
    run_until(loop)
    assert.are.same({ "chain 0.0", "timer 1.0" }, trace)
  end)

  it("jumps straight to the next deadline when nothing is ready", function()
    local loop = H.loop()
    local seen = {}
    for _, d in ipairs { 86400 * 365, 0.001, 42 } do
      loop:call_later(d, function() seen[#seen + 1] = loop:time() end)
    end
    local w = H.loop { virtual_time = false }
    local w0 = w:time()
    run_until(loop)
    assert.are.same({ 0.001, 42, 86400 * 365 }, seen)
    assert.is_true(w:time() - w0 < 0.5)
  end)
end)

describe("TimerHandle", function()
  it("when() is the absolute deadline", function()
    local loop = H.loop()
    run_until(loop, 10)
    local a = loop:call_later(2.5, function() end)
    local b = loop:call_at(7, function() end)
    local c = loop:call_later(0, function() end)
    assert.are.equal(12.5, a:when())
    assert.are.equal(7, b:when())
    assert.are.equal(10, c:when())
    a:cancel()
    assert.are.equal(12.5, a:when())
    run_until(loop, 20)
  end)

  it("tostring", function()
    local loop = H.loop()
    local h = loop:call_later(1, function() end)
    assert.matches("^<TimerHandle .*timer_spec%.lua:%d+>$", tostring(h))
    h:cancel()
    assert.matches(" cancelled>$", tostring(h))
  end)
end)

describe("cancel", function()
  it("a cancelled timer never runs", function()
    local loop = H.loop()
    local h = loop:call_later(1, H.expect(nil, 0))
    assert.is_false(h:cancelled())
    h:cancel()
    assert.is_true(h:cancelled())
    h:cancel()
    run_until(loop, 5)
    assert.are.equal(0, loop:_counts().cancelled_timers)
  end)

  it("a timer cancelled by a timer due at the same time does not run", function()
    -- asyncio: both are in the ready queue; the second is skipped
    local loop = H.loop()
    local trace, add = H.tracer()
    local second
    loop:call_later(1, function() add "first"; second:cancel() end)
    second = loop:call_later(1, add, "second")
    loop:call_later(1, add, "third")
    run_until(loop)
    assert.are.same({ "first", "third" }, trace)
  end)

  it("cancelling after it fired is harmless", function()
    local loop = H.loop()
    local h = loop:call_later(1, H.expect(nil, 1))
    run_until(loop, 2)
    h:cancel()
    assert.is_true(h:cancelled())
    assert.are.equal(0, loop:_counts().cancelled_timers)
    run_until(loop, 3)
  end)

  it("cancelling many timers then running is fine", function()
    local loop = H.loop()
    local f = H.expect(nil, 0)
    local hs = {}
    for i = 1, 10000 do hs[i] = loop:call_later(i % 97, f, i) end
    for i = 10000, 1, -1 do hs[i]:cancel() end
    local last = H.expect(nil, 1)
    loop:call_later(50, last)
    run_until(loop, 100)
    local c = loop:_counts()
    assert.are.equal(0, c.cancelled_timers)
    assert.are.equal(0, c.timers)
    assert.are.equal(0, c.pins)
  end)

  it("heap compaction: 1000 timers, 900 cancelled, the other 100 fire in order", function()
    local loop = H.loop()
    local fired = {}
    local hs = {}
    -- deadlines in a scrambled order so the heap is not already sorted
    for i = 1, 1000 do
      local d = (i * 379) % 1000 + 1
      hs[i] = loop:call_later(d, function() fired[#fired + 1] = d end)
    end
    local kept = {}
    for i = 1, 1000 do
      if i % 10 == 0 then kept[#kept + 1] = (i * 379) % 1000 + 1 else hs[i]:cancel() end
    end
    table.sort(kept)
    assert.are.equal(900, loop:_counts().cancelled_timers)
    local after
    loop:call_soon(function() after = loop:_counts() end)
    run_until(loop, 2000)
    -- the first iteration dropped the dead entries
    assert.are.equal(0, after.cancelled_timers)
    assert.are.equal(101, after.timers)      -- 100 kept + the stop timer
    assert.are.equal(101, after.pins)
    assert.are.same(kept, fired)
  end)

  it("heap compaction releases the callbacks and arguments of cancelled timers", function()
    local loop = H.loop()
    local weak = setmetatable({}, { __mode = "k" })
    local f = H.expect(nil, 0)
    for i = 1, 300 do
      local arg = {}
      weak[arg] = true
      local h = loop:call_later(100 + i, f, arg)
      if i > 10 then h:cancel() end
    end
    loop:call_later(1, function() loop:stop() end)
    loop:run_forever()
    collectgarbage()
    collectgarbage()
    local left = 0
    for _ in pairs(weak) do left = left + 1 end
    assert.are.equal(10, left)   -- only the 10 live timers keep theirs
    loop:close()
  end)

  it("cancelling timers while they fire keeps the order of the rest", function()
    local loop = H.loop()
    local fired = {}
    local hs = {}
    for i = 1, 200 do
      hs[i] = loop:call_later(i, function()
        fired[#fired + 1] = i
        -- each timer cancels the next two
        if hs[i + 1] then hs[i + 1]:cancel() end
        if hs[i + 2] then hs[i + 2]:cancel() end
      end)
    end
    run_until(loop)
    local expected = {}
    for i = 1, 200, 3 do expected[#expected + 1] = i end
    assert.are.same(expected, fired)
  end)
end)

describe("bad delays", function()
  it("call_later: negative and NaN delays are clear errors", function()
    local loop = H.loop()
    local f = H.expect(nil, 0)
    contains("bad argument #1 to 'call_later' (delay is negative)",
      errof(function() loop:call_later(-1, f) end))
    contains("bad argument #1 to 'call_later' (delay is negative)",
      errof(function() loop:call_later(-math.huge, f) end))
    contains("bad argument #1 to 'call_later' (delay is NaN)",
      errof(function() loop:call_later(0 / 0, f) end))
    contains("bad argument #1 to 'call_later' (number expected, got string)",
      errof(function() loop:call_later("soon", f) end))
    contains("bad argument #1 to 'call_later' (number expected, got nil)",
      errof(function() loop:call_later(nil, f) end))
    contains("bad argument #2 to 'call_later' (function expected, got number)",
      errof(function() loop:call_later(1, 5) end))
    assert.are.equal(0, loop:_counts().timers)
  end)

  it("call_at: NaN and non-numbers are clear errors", function()
    local loop = H.loop()
    local f = H.expect(nil, 0)
    contains("bad argument #1 to 'call_at' (time is NaN)",
      errof(function() loop:call_at(0 / 0, f) end))
    contains("bad argument #1 to 'call_at' (number expected, got table)",
      errof(function() loop:call_at({}, f) end))
    contains("bad argument #2 to 'call_at' (function expected, got no value)",
      errof(function() loop:call_at(1) end))
    assert.are.equal(0, loop:_counts().timers)
  end)

  it("loom.sleep: negative and NaN delays are clear errors inside a task", function()
    local loop = H.loop()
    contains("bad argument #1 to 'sleep' (delay is negative)",
      errof(loop.run_until_complete, loop, function() loom.sleep(-0.5) end))
    contains("bad argument #1 to 'sleep' (delay is NaN)",
      errof(loop.run_until_complete, loop, function() loom.sleep(0 / 0) end))
    contains("bad argument #1 to 'sleep' (number expected, got string)",
      errof(loop.run_until_complete, loop, function() loom.sleep("x") end))
    assert.are.equal(0, loop:time())
  end)

  it("loom.sleep outside a task is a clear error", function()
    contains("sleep: not inside a task", errof(loom.sleep, 1))
  end)

  it("a zero delay is fine", function()
    local loop = H.loop()
    loop:call_later(0, H.expect(nil, 1))
    run_until(loop, 1)
  end)
end)

describe("infinite delays", function()
  it("a math.huge delay never fires and the loop still stops", function()
    local loop = H.loop()
    local h = loop:call_later(math.huge, H.expect(nil, 0))
    assert.are.equal(math.huge, h:when())
    loop:call_at(math.huge, H.expect(nil, 0))
    loop:call_later(1, H.expect(function() loop:stop() end, 1))
    loop:run_forever()
    assert.are.equal(1, loop:time())
  end)

  it("on a real-time loop too", function()
    local loop = H.loop { virtual_time = false }
    loop:call_later(math.huge, H.expect(nil, 0))
    loop:call_later(0.001, H.expect(function() loop:stop() end, 1))
    loop:run_forever()
  end)

  it("#huge-timer a math.huge timer alone is a deadlock, not a jump to infinity", function()
    -- asyncio (real clock) waits for ever and never runs it; a virtual
    -- clock has nothing to jump to
    local loop = H.loop()
    local fired = false
    loop:call_later(math.huge, function() fired = true end)
    local ok, err = pcall(loop.run_forever, loop)
    assert.is_false(fired)
    assert.is_false(ok)
    contains("deadlock", err)
    assert.are.equal(0, loop:time())
  end)

  it("#huge-timer sleep(math.huge) alone is a deadlock", function()
    local loop = H.loop()
    local woke = false
    local t = loop:create_task(function() loom.sleep(math.huge); woke = true end)
    local ok = pcall(loop.run_until_complete, loop, t)
    assert.is_false(woke)
    assert.is_false(ok)
    assert.is_false(t:done())
    assert.are.equal(0, loop:time())
  end)
end)

describe("loom.sleep", function()
  it("returns its extra arguments", function()
    local loop = H.loop()
    local r = table.pack(loop:run_until_complete(function()
      return loom.sleep(2, "a", nil, "b")
    end))
    assert.are.same({ n = 3, "a", nil, "b" }, r)
    assert.are.equal(2, loop:time())
  end)

  it("sleepers and timers with one deadline: timers and sleeps ordered by deadline", function()
    local loop = H.loop()
    local trace, add = H.tracer()
    loop:run_until_complete(function()
      local ts = {}
      for i, d in ipairs { 3, 1, 2 } do
        ts[i] = loom.create_task(function() loom.sleep(d); add("sleep" .. d) end)
      end
      loop:call_later(1.5, add, "timer1.5")
      for _, t in ipairs(ts) do t:await() end
    end)
    assert.are.same({ "sleep1", "timer1.5", "sleep2", "sleep3" }, trace)
  end)
end)

describe("real clock", function()
  it("call_later(0.02) fires after at least 0.02 s of loop:time()", function()
    local loop = H.loop { virtual_time = false }
    local t0 = loop:time()
    local elapsed
    local h = loop:call_later(0.02, H.expect(function()
      elapsed = loop:time() - t0
      loop:stop()
    end, 1))
    assert.is_true(h:when() >= t0 + 0.02)
    loop:run_forever()
    assert.is_true(elapsed >= 0.02, "fired after " .. elapsed)
    assert.is_true(elapsed < 1, "fired after " .. elapsed)
    assert.is_true(loop:time() >= h:when())
  end)

  it("orders real timers by deadline", function()
    local loop = H.loop { virtual_time = false }
    local trace, add = H.tracer()
    loop:call_later(0.01, add, "b")
    loop:call_later(0.005, add, "a")
    loop:call_later(0.015, function() add "c"; loop:stop() end)
    loop:run_forever()
    assert.are.same({ "a", "b", "c" }, trace)
  end)

  it("a timer fires while callbacks keep the ready queue busy", function()
    -- asyncio: due timers join the ready queue every iteration
    local loop = H.loop { virtual_time = false }
    local spins = 0
    local function spin()
      spins = spins + 1
      loop:call_soon(spin)
    end
    loop:call_soon(spin)
    loop:call_later(0.01, H.expect(function() loop:stop() end, 1))
    loop:run_forever()
    assert.is_true(spins > 1)
    assert.are.equal(1, loop:_counts().ready)   -- the next spin, dropped by close
  end)

  it("loom.sleep waits on the real clock", function()
    local loop = H.loop { virtual_time = false }
    local elapsed = loop:run_until_complete(function()
      local t0 = loop:time()
      loom.sleep(0.01)
      return loop:time() - t0
    end)
    assert.is_true(elapsed >= 0.01, "slept " .. elapsed)
  end)
end)

describe("many timers", function()
  it("100000 timers in virtual time all fire in (deadline, scheduling) order", function()
    local loop = H.loop()
    local N = 100000
    local rnd = 12345
    local function random()   -- a fixed LCG, so the run is reproducible
      rnd = (rnd * 1103515245 + 12345) % 2147483648
      return rnd
    end
    local fired, n = {}, 0
    local function cb(i) n = n + 1; fired[n] = i end
    local deadline = {}
    for i = 1, N do
      local d = (random() % 1000) / 10   -- many equal deadlines
      deadline[i] = d
      loop:call_later(d, cb, i)
    end
    local order = {}
    for i = 1, N do order[i] = i end
    table.sort(order, function(a, b)
      if deadline[a] ~= deadline[b] then return deadline[a] < deadline[b] end
      return a < b
    end)
    run_until(loop, 200)
    assert.are.equal(N, n)
    for i = 1, N do
      if fired[i] ~= order[i] then
        error(("timer %d fired at position %d, expected timer %d"):format(fired[i], i, order[i]))
      end
    end
    assert.are.equal(0, loop:_counts().timers)
  end)
end)
