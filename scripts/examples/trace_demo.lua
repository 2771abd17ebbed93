-- trace_demo.lua: a small program whose trace reads well.
--   build/bin/loom --trace demo.json scripts/examples/trace_demo.lua
--   lua5.4 scripts/trace-svg.lua demo.json docs/trace-demo.svg
-- A producer feeds a queue; three consumers take items and do some
-- CPU work and a short sleep each; a timer ticks meanwhile. In the trace,
-- each task's steps interleave on the one loop, the polls fill the idle
-- time, and the tick shows as a callback.
local loom = require "loom"

local q = loom.Queue(4)
local loop = loom.get_running_loop()

local function busy(n)           -- some CPU work, to see a step's length
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

local function producer()
  for i = 1, 12 do
    q:put(i)
    loom.sleep(0.002)
  end
  for _ = 1, 3 do q:put(false) end
end

local function consumer(name)
  local done = 0
  while true do
    local item = q:get()
    if not item then break end
    busy(20000 * (item % 3 + 1))
    loom.sleep(0.003)
    done = done + 1
  end
  return name, done
end

local tick = 0
local function ticker()
  tick = tick + 1
  if tick < 8 then loop:call_later(0.004, ticker) end
end
loop:call_later(0.004, ticker)

local p = loom.create_task(producer)
p:set_name("producer")
local cs = {}
for i = 1, 3 do
  cs[i] = loom.create_task(consumer, "c" .. i)
  cs[i]:set_name("consumer " .. i)
end
p:await()
for _, c in ipairs(cs) do
  local name, n = c:await()
  print(name, n)
end
