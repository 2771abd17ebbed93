-- alloc_spec.lua - the executable's allocator (host/alloc.c) keeps every
-- block's contents through growth, shrinking and reuse. Inside the
-- executable every allocation of the suite goes through it; these cases
-- push blocks across all its size classes and over its upper limit.

local H = require "helper"
H.setup()

describe("allocator", function()
  it("#alloc strings of every size up to 6000 bytes keep their bytes", function()
    local kept = {}
    for n = 1, 6000 do
      kept[n] = string.rep(string.char(n % 251 + 1), n)
    end
    collectgarbage()
    for n = 1, 6000, 7 do kept[n] = nil end  -- free some, reuse them below
    collectgarbage()
    for n = 1, 6000, 7 do kept[n] = string.rep(string.char(n % 251 + 1), n) end
    for n = 1, 6000 do
      local s = kept[n]
      assert.equal(n, #s)
      assert.equal(string.rep(string.char(n % 251 + 1), n), s)
    end
  end)

  it("#alloc tables that grow and shrink through every class keep their values", function()
    local ts = {}
    for k = 1, 50 do
      local t = {}
      for i = 1, k * 40 do t[i] = i * k end       -- array part grows
      for i = k * 40, 1, -1 do t["k" .. i] = i end -- hash part grows
      ts[k] = t
    end
    collectgarbage()
    for k = 1, 50 do
      local t = ts[k]
      for i = 1, k * 40 do
        assert.equal(i * k, t[i])
        assert.equal(i, t["k" .. i])
      end
      for i = 1, k * 40 do t["k" .. i] = nil end
    end
    collectgarbage()
    for k = 1, 50 do assert.equal(k * 40, #ts[k]) end
  end)

  it("#alloc coroutines and userdata churn without corruption", function()
    local loop = H.loop()
    local sum = loop:run_until_complete(function()
      local tasks = {}
      for i = 1, 2000 do
        tasks[i] = loop:create_task(function(x)
          local pad = string.rep("x", x % 700)
          coroutine.yield()
          return x + #pad - (x % 700)
        end, i)
      end
      local s = 0
      for i = 1, 2000 do s = s + tasks[i]:await() end
      return s
    end)
    assert.equal(2000 * 2001 // 2, sum)
  end)
end)
