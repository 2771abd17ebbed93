-- check-names.lua: every public name of DESIGN.md's contract resolves at
-- runtime, or is listed below as not built yet (with the area that will
-- build it). Fails when a name neither resolves nor is listed, and when a
-- listed name has started to resolve (so the list only shrinks).
--   usage: lua5.4 scripts/check-names.lua [path/to/DESIGN.md]
-- Run from the repository root with the module on the paths, or inside
-- the executable with --plain.

local design = arg[1] or "../shared/DESIGN.md"

-- Names of the contract not built yet, by area.
local later = {}
local function pending(area, names)
  for name in names:gmatch("%S+") do later[name] = area end
end

local f = assert(io.open(design, "rb"))
local text = f:read("a")
f:close()
local contract = text:match("## Contract %(public names%)(.-)\n## ")
assert(contract, "no contract section in " .. design)

-- Bullets of the contract: "- Title: names..." up to the next bullet.
local groups = {}
for title, body in (contract .. "\n- "):gmatch("\n%- ([%w ]-):(.-)\n%f[-]") do
  groups[#groups + 1] = { title = title, body = body }
end

local loom = require "loom"
local loop = loom.new_event_loop { virtual_time = true }
local fut = loop:create_future()
local task = loop:create_task(function() end)
local objects = {
  ["Loop methods"] = { "loop", loop },
  ["Future"] = { "future", fut },
  ["Task (a Future)"] = { "task", task },
}

-- Groups whose names are fields of the module; in the strict ones every
-- name must resolve (or be listed).
local module_groups, strict = {}, {}
for _, t in ipairs { "Loops", "Module functions (inside a running loop)",
                     "Synchronisation", "Errors" } do
  module_groups[t], strict[t] = true, true
end
for _, t in ipairs { "Streams", "Subprocesses", "Files", "Threads", "TLS",
                     "Tracing" } do
  module_groups[t] = true
end

local checked, missing, stale = 0, {}, {}
local function check(key, ok)
  checked = checked + 1
  if ok and later[key] then
    stale[#stale + 1] = key .. " (listed as later: " .. later[key] .. ")"
  elseif not ok and not later[key] then
    missing[#missing + 1] = key
  end
end

for _, g in ipairs(groups) do
  local obj = objects[g.title]
  for name in g.body:gmatch("`([%a_][%w_%.]*)") do
    if obj then
      check(obj[1] .. "." .. name, obj[2][name] ~= nil)
    elseif module_groups[g.title] then
      -- module fields; in the groups of types not built yet (streams,
      -- processes, ...) only the names listed above, not their methods
      local head = name:match("^([%a_][%w_]*)")
      local field = head == "loom" and name:match("^loom%.([%a_][%w_]*)") or head
      if field and head ~= "opts" and (strict[g.title] or later[field]) then
        check(field, loom[field] ~= nil)
      end
    end
  end
end

loop:run_until_complete(task)
loop:close()

if #missing > 0 or #stale > 0 then
  if #missing > 0 then
    io.stderr:write("names of the contract that do not resolve:\n  ",
      table.concat(missing, "\n  "), "\n")
  end
  if #stale > 0 then
    io.stderr:write("names listed as later that resolve now:\n  ",
      table.concat(stale, "\n  "), "\n")
  end
  os.exit(1)
end
local n = 0
for _ in pairs(later) do n = n + 1 end
print(("check-names: %d contract names checked, %d listed for later"):format(checked, n))
