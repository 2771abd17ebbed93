-- check-rockspec.lua: loom-scm-1.rockspec lists exactly the files there
-- are. The builtin build names every file by hand, so a file added to
-- host/ or lua/loom/ and not to the rockspec would leave the rock broken
-- (a module missing, or an undefined symbol in loom.core) with nothing
-- to say so; a file listed and gone fails only at `luarocks make`.
--   usage: lua5.4 scripts/check-rockspec.lua [ROCKSPEC]
-- Run from the repository root. Checks:
--   loom.core's sources are host/*.c except the executable's files;
--   each lua/loom/X.lua is module loom.X (init.lua: loom), and nothing else
--   is listed;
--   copy_directories holds docs/ and, once it exists, types/;
--   the only dependency is Lua 5.4, and there are no test dependencies
--   (luarocks would fetch them).

local rockspec = arg[1] or "loom-scm-1.rockspec"

-- The executable's own files: in host/, not in loom.core.
local EXE_ONLY = { ["host/main.c"] = true, ["host/repl.c"] = true }

local failures = 0
local function fail(msg)
  failures = failures + 1
  io.stderr:write("check-rockspec: ", msg, "\n")
end

local function ls(pattern)
  local p = assert(io.popen("ls -d " .. pattern .. " 2>/dev/null", "r"))
  local t = {}
  for line in p:lines() do t[#t + 1] = line end
  p:close()
  return t
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- A rockspec is a Lua chunk that sets globals; load it into an empty env.
local spec = {}
local chunk, err = loadfile(rockspec, "t", spec)
if not chunk then
  io.stderr:write("check-rockspec: ", err, "\n")
  os.exit(1)
end
chunk()

local build = spec.build or {}
local modules = build.modules or {}

-- loom.core's sources against host/*.c.
local core = modules["loom.core"]
local listed = {}
if type(core) ~= "table" or type(core.sources) ~= "table" then
  fail("build.modules['loom.core'].sources is missing")
else
  for _, src in ipairs(core.sources) do
    if listed[src] then fail(src .. " is listed twice in loom.core's sources") end
    listed[src] = true
    if EXE_ONLY[src] then
      fail(src .. " belongs to the executable, not to loom.core")
    elseif not exists(src) then
      fail(src .. " is listed in loom.core's sources but does not exist")
    end
  end
  local found = 0
  for _, src in ipairs(ls("host/*.c")) do
    found = found + 1
    if not EXE_ONLY[src] and not listed[src] then
      fail(src .. " is missing from loom.core's sources in " .. rockspec)
    end
  end
  if found == 0 then fail("no host/*.c found: run from the repository root") end
end

-- The Lua modules against lua/loom/*.lua.
local want = {}
for _, path in ipairs(ls("lua/loom/*.lua")) do
  local base = path:match("^lua/loom/(.+)%.lua$")
  want[base == "init" and "loom" or "loom." .. base] = path
end
if next(want) == nil then fail("no lua/loom/*.lua found") end
for name, path in pairs(want) do
  if modules[name] == nil then
    fail(("%s is missing from %s (as [%q] = %q)"):format(path, rockspec, name, path))
  elseif modules[name] ~= path then
    fail(("module %s is %s, not %s"):format(name, tostring(modules[name]), path))
  end
end
for name, src in pairs(modules) do
  if name ~= "loom.core" and want[name] == nil then
    fail(("module %s (%s) is listed but there is no such file in lua/loom/")
      :format(name, tostring(src)))
  end
end

-- The directories shipped with the rock.
local dirs = {}
for _, d in ipairs(build.copy_directories or {}) do
  dirs[d] = true
  if not exists(d .. "/.") then fail("copy_directories lists " .. d .. "/, which does not exist") end
end
for _, d in ipairs { "docs", "types" } do
  if exists(d .. "/.") and not dirs[d] then
    fail(d .. "/ exists but is not in build.copy_directories")
  end
end

-- Dependencies: Lua 5.4 and nothing to download.
local deps = spec.dependencies or {}
if #deps ~= 1 or not tostring(deps[1]):match("^lua >= 5%.4, < 5%.5$") then
  fail("dependencies should be exactly { \"lua >= 5.4, < 5.5\" }")
end
if spec.test_dependencies and #spec.test_dependencies > 0 then
  fail("test_dependencies would make luarocks download them")
end
if type(spec.test) ~= "table" or not exists(spec.test.script or "") then
  fail("test.script is missing or names no file")
end

if failures > 0 then os.exit(1) end
print(("check-rockspec: %s lists the %d C files of loom.core and the %d Lua modules")
  :format(rockspec, #core.sources, (function()
    local n = 0
    for _ in pairs(want) do n = n + 1 end
    return n
  end)()))
