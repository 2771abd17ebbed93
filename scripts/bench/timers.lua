-- timers on loom: N call_later with random delays in [0, 1 s), run until all
-- fired (the last one stops the loop). Prints the total time (arming
-- included, like the peers) and the arming rate.
-- usage: build/bin/loom --plain scripts/bench/timers.lua [N]
local n = math.tointeger(tonumber(arg[1])) or 1000000
local random, left = math.random, n
local function report(w, s)
  print(string.format("%s loom %d %.6f %.1f", w, n, s, n / s))
end

local loop = loom.new_event_loop()
local function fire()
  left = left - 1
  if left == 0 then loop:stop() end
end

local t0 = loop:time()
for _ = 1, n do loop:call_later(random(), fire) end
local t1 = loop:time()
loop:run_forever()
local t2 = loop:time()
assert(left == 0)
report("timers", t2 - t0)
report("timers_arm", t1 - t0)
loop:close()
