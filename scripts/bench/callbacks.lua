-- callbacks on loom: call_soon chain (each callback schedules the next, the
-- last one stops the loop) and N call_soon at once followed by one that
-- stops, each driven by run_forever on a fresh loop (like the asyncio peer).
-- Plain Lua, no main task: a loop cannot run inside a running loop.
-- usage: build/bin/loom --plain scripts/bench/callbacks.lua [N]
local n = math.tointeger(tonumber(arg[1])) or 1000000
local function report(w, s)
  print(string.format("%s loom %d %.6f %.1f", w, n, s, n / s))
  io.stdout:flush()
end

local loop = loom.new_event_loop()

local count = 0
local function step()
  count = count + 1
  if count < n then loop:call_soon(step) else loop:stop() end
end
local t0 = loop:time()
loop:call_soon(step)
loop:run_forever()
report("cb_chain", loop:time() - t0)
assert(count == n)

count = 0
local function cb() count = count + 1 end
t0 = loop:time()
for _ = 1, n do loop:call_soon(cb) end
loop:call_soon(loop.stop, loop)
loop:run_forever()
report("cb_batch", loop:time() - t0)
assert(count == n)
loop:close()
