-- spawn on loom: processes spawned and reaped per second. For each
-- concurrency C, C tasks share N runs of `true` (create_subprocess_exec,
-- then wait), so at most C children live at once. One line per C,
-- workload spawn_c<C>.  Same work as scripts/bench/py/spawn.py.
-- usage: build/bin/loom --plain scripts/bench/spawn.lua [N, default 1000] [C ..., default 1 10 50]
local n = math.tointeger(tonumber(arg[1])) or 1000
local concs = {}
for i = 2, #arg do concs[#concs + 1] = math.tointeger(tonumber(arg[i])) end
if #concs == 0 then concs = { 1, 10, 50 } end
local spawn = loom.create_subprocess_exec

for _, c in ipairs(concs) do
  local loop = loom.new_event_loop()
  local secs = loop:run_until_complete(function()
    local left = n
    local function worker()
      while left > 0 do
        left = left - 1
        local p = spawn("true")
        assert(p:wait() == 0, "true failed")
      end
    end
    local t0 = loop:time()
    local tasks = {}
    for i = 1, c do tasks[i] = loop:create_task(worker) end
    for i = 1, c do tasks[i]:await() end
    return loop:time() - t0
  end)
  loop:close()
  print(string.format("spawn_c%d loom %d %.6f %.1f", c, n, secs, n / secs))
end
