-- queue on loom: one producer task puts N integers into a loom.Queue(100),
-- one consumer task gets them all and calls task_done for each; then join.
-- Same work as scripts/bench/py/queue.py.  N = items.
-- usage: build/bin/loom --plain scripts/bench/queue.lua [N]
local n = math.tointeger(tonumber(arg[1])) or 1000000

local total = 0

local function producer(q)
  for i = 1, n do q:put(i) end
end

local function consumer(q)
  for _ = 1, n do
    total = total + q:get()
    q:task_done()
  end
end

local loop = loom.new_event_loop()
local secs = loop:run_until_complete(function()
  local q = loom.Queue(100)
  local t0 = loop:time()
  local p = loop:create_task(producer, q)
  local c = loop:create_task(consumer, q)
  p:await()
  c:await()
  q:join()
  return loop:time() - t0
end)
loop:close()
assert(total == n * (n + 1) // 2, total)
print(string.format("queue loom %d %.6f %.1f", n, secs, n / secs))
