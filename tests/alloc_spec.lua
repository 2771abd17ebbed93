-- alloc_spec.lua - the executable's allocator (host/alloc.c) keeps every
-- block's contents through growth, shrinking and reuse. Inside the
-- executable every allocation of the suite goes through it; these cases
-- push blocks across all its size classes, small and large, and over
-- their upper limits.

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

  it("#alloc large strings, freed and made again, keep their bytes", function()
    -- Sizes around the large classes' bounds (4 KiB steps up to 512 KiB)
    -- and past them; each round frees half and makes new ones, which get
    -- blocks freed last (and beyond 1 MiB kept, blocks of the C library).
    local sizes = {}
    for _, b in ipairs({4096, 8192, 65536, 102400, 262144, 524288, 1048576}) do
      for _, d in ipairs({-17, -1, 0, 1, 4095}) do sizes[#sizes + 1] = b + d end
    end
    local function make(n, k) return string.rep(string.char((n + k) % 251 + 1), n) end
    local kept = {}
    for round = 1, 6 do
      for i, n in ipairs(sizes) do
        if kept[i] == nil or (i + round) % 2 == 0 then
          kept[i] = {n = n, k = round, s = make(n, round)}
        end
      end
      collectgarbage()
      for i, n in ipairs(sizes) do
        local e = kept[i]
        assert.equal(n, #e.s)
        assert.equal(make(n, e.k), e.s)
      end
    end
  end)

  it("#alloc tables grow through the large classes and past them", function()
    local t = {}
    for i = 1, 100000 do t[i] = i end           -- array part up to 2 MiB
    for i = 1, 100000, 3 do t[i] = nil end
    local h = {}
    for i = 1, 20000 do h["k" .. i] = i end     -- hash part past 512 KiB
    collectgarbage()
    for i = 1, 100000 do
      if i % 3 == 1 then assert.is_nil(t[i]) else assert.equal(i, t[i]) end
    end
    for i = 1, 20000 do assert.equal(i, h["k" .. i]) end
    for i = 1, 20000 do h["k" .. i] = nil end
    collectgarbage()
    assert.is_nil(next(h))
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
