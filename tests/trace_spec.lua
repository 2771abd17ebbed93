-- trace_spec.lua: loom.trace.start/stop and the executable's --trace FILE
-- (host/trace.c, lua/loom/tracing.lua): the file is read back as JSON
-- and the events a known program makes are checked.
local H = require "helper"
local loom = require "loom"
H.setup()

-- A small JSON reader, enough for trace files: objects, arrays, strings
-- with escapes, numbers, true/false/null.
local function decode(s)
  local pos = 1
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local value
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == '"' then pos = pos + 1; return table.concat(out) end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16))
          pos = pos + 6
        else
          out[#out + 1] = ({ n = "\n", t = "\t", r = "\r", b = "\b", f = "\f" })[e] or e
          pos = pos + 2
        end
      elseif c == "" then error("unterminated string")
      else out[#out + 1] = c; pos = pos + 1 end
    end
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        ws(); local k = str(); ws()
        assert(s:sub(pos, pos) == ":", "':' expected at " .. pos); pos = pos + 1
        t[k] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "}" then return t end
        assert(d == ",", "',' expected at " .. pos)
      end
    elseif c == "[" then
      local t = {}
      pos = pos + 1; ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      while true do
        t[#t + 1] = value(); ws()
        local d = s:sub(pos, pos); pos = pos + 1
        if d == "]" then return t end
        assert(d == ",", "',' expected at " .. pos)
      end
    elseif c == '"' then return str()
    elseif s:find("^true", pos) then pos = pos + 4; return true
    elseif s:find("^false", pos) then pos = pos + 5; return false
    elseif s:find("^null", pos) then pos = pos + 4; return nil
    else
      local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      assert(num and #num > 0, "bad JSON at " .. pos)
      pos = pos + #num
      return tonumber(num)
    end
  end
  local v = value()
  ws()
  assert(pos > #s, "trailing text at " .. pos)
  return v
end

local function readfile(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- Counts of events by "ph/cat" and the events themselves by category.
local function summary(events)
  local count, bycat = {}, {}
  for _, e in ipairs(events) do
    local k = e.ph .. "/" .. e.cat
    count[k] = (count[k] or 0) + 1
    bycat[e.cat] = bycat[e.cat] or {}
    table.insert(bycat[e.cat], e)
  end
  return count, bycat
end

describe("loom.trace", function()
  it("writes iterations, polls, task steps, callbacks, task lives and pool work", function()
    local path = os.tmpname()
    assert.is_false(loom.trace.active())
    assert.is_true(loom.trace.start(path))
    assert.is_true(loom.trace.active())
    H.contains("a trace is being written already", H.raised(loom.trace.start, path))
    local loop = H.loop{virtual_time = false}
    loop:run_until_complete(function()
      local function worker(n) for _ = 1, 2 do loom.sleep(0.001 * n) end return n end
      local ts = {}
      for i = 1, 3 do ts[i] = loom.create_task(worker, i) end
      loop:call_soon(function() end)
      loom.gather(ts)
      loop:getaddrinfo("127.0.0.1", 80)
    end)
    local n = loom.trace.stop()
    assert.is_false(loom.trace.active())
    assert.is_nil(loom.trace.stop())
    local doc = decode(readfile(path))
    os.remove(path)
    local events = doc.traceEvents
    assert.are.equal(n, #events)
    local count, bycat = summary(events)
    assert.is_true((count["X/loop"] or 0) >= 4)
    assert.is_true((count["X/task"] or 0) >= 1 + 3 * 3)   -- main + 3 steps each
    assert.is_true((count["X/callback"] or 0) >= 1)
    assert.are.equal(4, count["b/task"])                   -- main and 3 workers
    assert.are.equal(4, count["e/task"])
    assert.are.equal(1, count["b/pool"])
    assert.are.equal(1, count["e/pool"])
    local names = {}
    for _, e in ipairs(bycat.loop) do names[e.name] = true end
    assert.is_true(names.poll and names.iteration)
    for _, e in ipairs(events) do
      assert.is_number(e.ts)
      assert.is_true(e.ts >= 0)
      if e.ph == "X" then assert.is_true(e.dur >= 0) end
    end
    -- a task's life begins before its steps and ends after them
    local b, e_ = {}, {}
    for _, e in ipairs(bycat.task) do
      if e.ph == "b" then b[e.id] = e.ts elseif e.ph == "e" then e_[e.id] = e.ts end
    end
    for id, t in pairs(b) do assert.is_true(e_[id] >= t) end
    H.contains("bad argument #1 to 'start' (string expected, got nil)",
               H.raised(loom.trace.start))
    H.contains("trace.start: ", H.raised(loom.trace.start, "/nonexistent/dir/t.json"))
    H.contains("bad argument #1 to 'start' (path contains a zero byte)",
               H.raised(loom.trace.start, "a\0b"))
  end)

  it("a task woken by the future it awaits steps with no future event first", function()
    local path = os.tmpname()
    local loop = H.loop{virtual_time = false}
    local steps = 0
    assert.is_true(loom.trace.start(path))
    loop:run_until_complete(function()
      local f = loop:create_future()
      local t = loom.create_task(function() steps = steps + 1; f:await(); steps = steps + 1 end)
      loom.sleep(0)
      loop:call_soon(function() f:set_result(1) end)
      t:await()
      local g = loop:create_future()
      g:add_done_callback(function() end)   -- a Lua callback: the future runs it
      g:set_result(2)
      loom.sleep(0)
    end)
    loom.trace.stop()
    local events = decode(readfile(path)).traceEvents
    os.remove(path)
    assert.are.equal(2, steps)
    local _, bycat = summary(events)
    local futures = {}
    for _, e in ipairs(bycat.future or {}) do futures[#futures + 1] = e.name end
    -- one future event, g's: f woke its task straight
    assert.are.equal(1, #futures, table.concat(futures, ", "))
    local task_steps = 0
    for _, e in ipairs(bycat.task) do
      if e.ph == "X" and e.name:find("^<Task") and not e.name:find("main") then
        task_steps = task_steps + 1
      end
    end
    assert.is_true(task_steps >= 2)
  end)

  if H.mode ~= "exe" then return end

  it("--trace FILE traces a script run by the executable", function()
    local exe = os.getenv("LOOM_EXE")
    local path, script = os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
local t = loom.create_task(function() loom.sleep(0.01) return 1 end)
loom.sleep(0.005)
print(t:await())
]])
    f:close()
    local p = io.popen(("unset LD_PRELOAD; %s --trace %s %s 2>&1"):format(exe, path, script))
    local out = p:read("a")
    local ok = p:close()
    os.remove(script)
    assert.is_true(ok, out)
    assert.are.equal("1\n", out)
    local doc = decode(readfile(path))
    os.remove(path)
    local count = summary(doc.traceEvents)
    assert.are.equal(2, count["b/task"])
    assert.are.equal(2, count["e/task"])
    assert.is_true(count["X/task"] >= 3)
  end)

  it("the demo's trace draws as an SVG timeline with a row per task", function()
    local exe = os.getenv("LOOM_EXE")
    local root = debug.getinfo(1, "S").source:match("^@(.*)/tests/[^/]*$") or "."
    local path, svg = os.tmpname(), os.tmpname()
    local p = io.popen(("unset LD_PRELOAD; %s --trace %s %s/scripts/examples/trace_demo.lua 2>&1")
      :format(exe, path, root))
    local out = p:read("a")
    assert.is_true(p:close(), out)
    local total = 0
    for name, n in out:gmatch("(c%d)\t(%d+)\n") do total = total + tonumber(n) end
    assert.are.equal(12, total, out)   -- every item consumed, whoever took it
    p = io.popen(("unset LD_PRELOAD; lua5.4 %s/scripts/trace-svg.lua %s %s 2>&1"):format(root, path, svg))
    out = p:read("a")
    assert.is_true(p:close(), out)
    local text = readfile(svg)
    os.remove(path)
    os.remove(svg)
    local labels = {}
    for l in text:gmatch('<text x="4" y="%d+">([^<]*)</text>') do labels[#labels + 1] = l end
    assert.are.same({ "loop", "main", "producer", "consumer 1", "consumer 2", "consumer 3",
                      "callbacks" }, labels)
    local bars = select(2, text:gsub("<rect", ""))
    assert.is_true(bars > 50, tostring(bars))
  end)
end)
