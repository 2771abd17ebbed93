-- ping-pong on loom: two tasks pass a value back and forth through futures;
-- each side awaits a fresh future that the other side resolves with
-- set_result (each side makes its next inbox before it resolves the other's).
-- N = one-way passes.  usage: build/bin/loom --plain scripts/bench/pingpong.lua [N]
local n = math.tointeger(tonumber(arg[1])) or 1000000
local half = n // 2

local loop = loom.new_event_loop()
local inbox_a, inbox_b = nil, loop:create_future()

local function ping()
  for i = 1, half do
    local mine = loop:create_future()
    inbox_a = mine
    inbox_b:set_result(i)
    assert(mine:await() == i)
  end
end

local function pong()
  local mine = inbox_b
  for _ = 1, half do
    local v = mine:await()
    mine = loop:create_future()
    inbox_b = mine
    inbox_a:set_result(v)
  end
end

local secs = loop:run_until_complete(function()
  local t0 = loop:time()
  local b = loop:create_task(pong)
  local a = loop:create_task(ping)
  a:await()
  b:await()
  return loop:time() - t0
end)
loop:close()
print(string.format("pingpong loom %d %.6f %.1f", half * 2, secs, half * 2 / secs))
