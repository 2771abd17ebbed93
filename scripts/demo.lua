-- demo.lua: concurrency at a glance. Run it with `make demo`, or
-- `build/bin/loom scripts/demo.lua`: the chunk is the main task, so it
-- awaits at top level.

local loop = loom.get_running_loop()
local start = loop:time()

local function say(fmt, ...)
  print(("[%5.3f s] " .. fmt):format(loop:time() - start, ...))
end

-- 1. Several tasks sleep for different times; they finish in order of
--    their deadlines, not of their creation.
say("starting three workers")
local workers = {}
for i, secs in ipairs { 0.3, 0.1, 0.2 } do
  workers[i] = loom.create_task(function()
    say("worker %d sleeps %.1f s", i, secs)
    loom.sleep(secs)
    say("worker %d done", i)
    return i * 10
  end)
end
for i, t in ipairs(workers) do
  say("worker %d returned %d", i, t:await())
end

-- 2. A timeout: a timer cancels a task that takes too long.
local function with_timeout(delay, fn)
  local task = loom.create_task(fn)
  local timer = loop:call_later(delay, function() task:cancel("timed out") end)
  local ok, err = pcall(task.await, task)
  timer:cancel()
  if ok then return true end
  if loom.CancelledError:is(err) then return false, err.message end
  error(err, 0)
end

say("a slow job with a 0.15 s timeout")
local ok, why = with_timeout(0.15, function() loom.sleep(1) end)
say("slow job finished: %s (%s)", tostring(ok), why)

-- 3. Cancellation: the task sees CancelledError where it awaits, can clean
--    up, and its awaiter sees it cancelled.
local stubborn = loom.create_task(function()
  local ok2, err = pcall(loom.sleep, 10)
  say("the task caught %s and cleans up", tostring(err))
  error(err, 0) -- cancellation goes on
end)
loom.sleep(0.05)
say("cancelling a task that sleeps 10 s")
stubborn:cancel("no longer needed")
local _, err = pcall(stubborn.await, stubborn)
say("cancelled: %s, error %s", tostring(stubborn:cancelled()), tostring(err))

-- 4. Callbacks: call_soon runs in the next iteration, call_later on time.
local done = loop:create_future()
loop:call_later(0.05, function() say("call_later fired"); done:set_result("ok") end)
loop:call_soon(function() say("call_soon ran first") end)
say("future resolved with %s", done:await())
say("all done")
