-- trace-svg.lua: draws a trace written by loom.trace / --trace as an SVG
-- timeline: one row for the loop's iterations and polls, one row per
-- task (its life, and its steps on top), one for plain callbacks.
--   lua5.4 scripts/trace-svg.lua trace.json out.svg
local inpath, outpath = arg[1], arg[2]
if not inpath or not outpath then
  io.stderr:write("usage: lua5.4 scripts/trace-svg.lua trace.json out.svg\n")
  os.exit(2)
end

-- The trace is one JSON object a line after the header: pick fields with
-- patterns (the writer's own format, not JSON in general).
local events = {}
for line in io.lines(inpath) do
  local ph = line:match('"ph":"(%a)"')
  if ph then
    local e = {
      ph = ph, cat = line:match('"cat":"([^"]*)"'),
      name = line:match('"name":"(.-)","'), id = line:match('"id":"([^"]*)"'),
      ts = tonumber(line:match('"ts":([-%d.e]+)')),
      dur = tonumber(line:match('"dur":([-%d.e]+)') or "0"),
      task = tonumber(line:match('"task":([%d.e]+)') or ""),
    }
    events[#events + 1] = e
  end
end

local t_end = 0
for _, e in ipairs(events) do t_end = math.max(t_end, e.ts + e.dur) end

-- rows: loop, then tasks in order of birth, then callbacks
local rows, rowof, labels = {}, {}, {}
local function row(key, label)
  if not rowof[key] then
    rows[#rows + 1] = key
    rowof[key] = #rows
    labels[#rows] = label
  end
  return rowof[key]
end
row("loop", "loop")
local life, names = {}, {}
for _, e in ipairs(events) do
  if e.cat == "task" and e.ph == "b" then
    row(e.id, e.name)
    life[e.id] = { e.ts, t_end }
  elseif e.cat == "task" and e.ph == "e" and life[e.id] then
    life[e.id][2] = e.ts
  end
end
-- a step's args.task is the N of its task's "Task N" life; its name
-- shows the task's name, which labels the row
local byn = {}
for _, e in ipairs(events) do
  if e.cat == "task" and e.ph == "b" then byn[e.name:match("%d+")] = e.id end
end
local steprow = {}
for _, e in ipairs(events) do
  if e.ph == "X" and e.cat == "task" and e.task then
    local id = byn[tostring(math.tointeger(e.task) or e.task)]
    if id then
      steprow[e] = rowof[id]
      names[id] = e.name:match("^<Task (.-) %a+[^>]*>$") or names[id]
    end
  end
end
for id, n in pairs(names) do labels[rowof[id]] = n end
local cbrow = row("callbacks", "callbacks")

local W, LEFT, RH, TOP = 900, 110, 22, 30
local H = TOP + #rows * RH + 30
local function x(t) return LEFT + (W - LEFT - 10) * t / t_end end
local out = {}
local function add(s) out[#out + 1] = s end
add(('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
  .. 'font-family="sans-serif" font-size="11">'):format(W, H))
add(('<rect width="%d" height="%d" fill="white"/>'):format(W, H))
add(('<text x="%d" y="18" font-size="13">loom trace: %.1f ms</text>'):format(LEFT, t_end / 1000))
for i, label in ipairs(labels) do
  local y = TOP + (i - 1) * RH
  add(('<text x="4" y="%d">%s</text>'):format(y + 15, label:gsub("&", "&amp;"):gsub("<", "&lt;")))
  add(('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#eee"/>'):format(LEFT, y + RH, W - 10, y + RH))
end
local function bar(r, t0, t1, color, inset)
  local y = TOP + (r - 1) * RH + inset
  add(('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"/>')
    :format(x(t0), y, math.max(0.6, x(t1) - x(t0)), RH - 2 * inset, color))
end
for id, l in pairs(life) do bar(rowof[id], l[1], l[2], "#dde7f5", 6) end
for _, e in ipairs(events) do
  if e.ph == "X" then
    if e.cat == "loop" and e.name == "poll" then bar(1, e.ts, e.ts + e.dur, "#cfcfcf", 4)
    elseif e.cat == "loop" then bar(1, e.ts, e.ts + e.dur, "#7a9cc6", 8)
    elseif e.cat == "task" and steprow[e] then bar(steprow[e], e.ts, e.ts + e.dur, "#2b5c9e", 3)
    elseif e.cat == "callback" or e.cat == "future" then bar(cbrow, e.ts, e.ts + e.dur, "#d9822b", 3)
    end
  end
end
for ms = 0, math.floor(t_end / 1000) do
  local px = x(ms * 1000)
  add(('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999"/>'):format(px, H - 24, px, H - 20))
  if ms % 5 == 0 then add(('<text x="%.1f" y="%d">%d ms</text>'):format(px - 8, H - 8, ms)) end
end
add("</svg>")
local f = assert(io.open(outpath, "w"))
f:write(table.concat(out, "\n"), "\n")
f:close()
