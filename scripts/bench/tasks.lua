-- tasks on loom: a main task spawns N tasks that each loom.sleep(D) once and
-- return, then joins them by awaiting each in order (loom has no gather).
-- usage: build/bin/loom --plain scripts/bench/tasks.lua [N] [D seconds, default 0]
-- D = 0 prints "tasks", otherwise "tasks_sleep<D>" (as the peers do).
local n = math.tointeger(tonumber(arg[1])) or 1000000
local d = tonumber(arg[2]) or 0
local sleep = loom.sleep

local done = 0
local function task()
  sleep(d)
  done = done + 1
end

local loop = loom.new_event_loop()
local secs = loop:run_until_complete(function()
  local t0 = loop:time()
  local tasks = {}
  for i = 1, n do tasks[i] = loop:create_task(task) end
  for i = 1, n do tasks[i]:await() end
  return loop:time() - t0
end)
loop:close()
assert(done == n)
local w = d == 0 and "tasks" or "tasks_sleep" .. arg[2]
print(string.format("%s loom %d %.6f %.1f", w, n, secs, n / secs))
