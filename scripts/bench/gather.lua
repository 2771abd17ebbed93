-- gather on loom: R times, create N tasks that each sleep(0) once and return
-- a value, and gather them (one loom.gather over the list of N tasks).
-- N_OPS printed = N*R gathered tasks.  Same work as scripts/bench/py/gather.py.
-- usage: build/bin/loom --plain scripts/bench/gather.lua [N, default 10000] [R, default 20]
local n = math.tointeger(tonumber(arg[1])) or 10000
local reps = math.tointeger(tonumber(arg[2])) or 20
local sleep, gather = loom.sleep, loom.gather

local function task(i)
  sleep(0)
  return i
end

local loop = loom.new_event_loop()
local secs = loop:run_until_complete(function()
  local t0 = loop:time()
  for _ = 1, reps do
    local tasks = {}
    for i = 1, n do tasks[i] = loop:create_task(task, i) end
    local res = gather(tasks)
    assert(#res == n and res[n] == n, "gather returned a wrong list")
  end
  return loop:time() - t0
end)
loop:close()
print(string.format("gather loom %d %.6f %.1f", n * reps, secs, n * reps / secs))
