-- lock on loom: one loom.Lock shared by 100 tasks; each task does N/100
-- rounds of acquire, increment a shared counter, release, sleep(0).
-- N = acquisitions (rounded down to a multiple of 100).
-- Same work as scripts/bench/py/lock.py.
-- usage: build/bin/loom --plain scripts/bench/lock.lua [N]
local n = math.tointeger(tonumber(arg[1])) or 1000000
local TASKS = 100
local rounds = n // TASKS
local sleep = loom.sleep

local counter = 0

local function worker(lock)
  for _ = 1, rounds do
    lock:acquire()
    counter = counter + 1
    lock:release()
    sleep(0)
  end
end

local loop = loom.new_event_loop()
local secs = loop:run_until_complete(function()
  local lock = loom.Lock()
  local t0 = loop:time()
  local tasks = {}
  for i = 1, TASKS do tasks[i] = loop:create_task(worker, lock) end
  for i = 1, TASKS do tasks[i]:await() end
  return loop:time() - t0
end)
loop:close()
local total = rounds * TASKS
assert(counter == total, counter)
print(string.format("lock loom %d %.6f %.1f", total, secs, total / secs))
