-- threads on loom: to_thread round trips. One task awaits N calls of
-- loom.to_thread(fn, i) in turn (fn returns i + 1), then N more with C
-- calls in flight at once (C = 10, arg 2): a round trip is a job copied to
-- a worker thread of the default executor, run there, and its result
-- copied back to the waiting task. Same work as scripts/bench/py/to_thread.py.
-- usage: build/bin/loom --plain scripts/bench/threads.lua [N] [C]
local n = math.tointeger(tonumber(arg[1])) or 100000
local c = math.tointeger(tonumber(arg[2])) or 10

local function job(i) return i + 1 end

local loop = loom.new_event_loop()
local seq, par = loop:run_until_complete(function()
  loom.to_thread(job, 0)                    -- start a worker first
  local t0 = loop:time()
  local sum = 0
  for i = 1, n do sum = sum + loom.to_thread(job, i) end
  assert(sum == n * (n + 1) // 2 + n, sum)
  local t1 = loop:time()
  local per = n // c
  local tasks = {}
  for k = 1, c do
    tasks[k] = loop:create_task(function()
      local s = 0
      for i = 1, per do s = s + loom.to_thread(job, i) end
      return s
    end)
  end
  for k = 1, c do assert(tasks[k]:await() == per * (per + 1) // 2 + per) end
  return t1 - t0, loop:time() - t1
end)
loop:shutdown_default_executor()
loop:close()
print(string.format("to_thread loom %d %.6f %.1f", n, seq, n / seq))
print(string.format("to_thread-c%d loom %d %.6f %.1f", c, (n // c) * c, par,
                    (n // c) * c / par))
