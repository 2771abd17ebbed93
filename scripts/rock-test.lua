-- rock-test.lua: `luarocks test` for loom-scm-1.rockspec. Runs the busted
-- specs of tests/ against the loom that package.path and package.cpath
-- find (after `eval "$(luarocks path)"`, the installed rock's).
--   usage: lua5.4 scripts/rock-test.lua [SPEC...]    (all of tests/ if none)
-- Run from the repository root (luarocks test runs it there).
--
-- busted runs in a child process, under this interpreter, with
-- LOOM_TEST_MODE=rock and tests/ put in front of the paths: the specs
-- start children of their own that must find the same loom. Busted is
-- taken from $BUSTED, else found on package.path (Debian's lua-busted,
-- or a busted rock); nothing is installed. Specs that run the loom
-- executable need LOOM_EXE (default: build/bin/loom, when it is built);
-- without one they are left out, and the list of them is printed.

if _VERSION ~= "Lua 5.4" then
  io.stderr:write("rock-test.lua: loom needs Lua 5.4, this is ", _VERSION, "\n")
  os.exit(1)
end

local function die(msg)
  io.stderr:write("rock-test.lua: ", msg, "\n")
  os.exit(1)
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function readable(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

-- The interpreter running this script: arg's lowest index.
local lua = arg[-1]
for i = -2, -10, -1 do
  if arg[i] == nil then break end
  lua = arg[i]
end
if not lua then die("cannot tell which Lua runs this script") end

if not readable("tests/helper.lua") then
  die("run it from the repository root (tests/helper.lua not found)")
end

-- busted's command-line entry point: a file that calls busted.runner.
local busted = os.getenv("BUSTED")
if busted == nil or busted == "" then
  if package.searchpath("busted.runner", package.path) == nil then
    die("busted is not installed for " .. _VERSION .. " (Debian: apt-get " ..
        "install lua-busted; elsewhere: luarocks --lua-version 5.4 install busted)")
  end
  busted = capture("command -v busted 2>/dev/null"):match("^[^\n]+")
  if busted == nil then die("busted's command is not on PATH (set BUSTED)") end
end

-- Which loom is tested.
local init = package.searchpath("loom", package.path)
local core = package.searchpath("loom.core", package.cpath)
if init == nil or core == nil then
  die("loom is not on package.path / package.cpath " ..
      "(eval \"$(luarocks --lua-version 5.4 path)\" first)")
end
print("testing loom from " .. init)
print("        loom.core from " .. core)

local exe = os.getenv("LOOM_EXE")
if (exe == nil or exe == "") and readable("build/bin/loom") then
  exe = capture("pwd"):match("^[^\n]+") .. "/build/bin/loom"
end
if exe == "" then exe = nil end

local specs = {}
for i = 1, #arg do specs[#specs + 1] = arg[i] end
if #specs == 0 then
  for path in capture("ls tests/*_spec.lua"):gmatch("[^\n]+") do
    specs[#specs + 1] = path
  end
  if exe == nil then
    local kept, left = {}, {}
    for _, path in ipairs(specs) do
      local text = read(path)
      if text:find("LOOM_EXE", 1, true) or text:find("build/bin/loom", 1, true) then
        left[#left + 1] = path
      else
        kept[#kept + 1] = path
      end
    end
    if #left > 0 then
      print("not run, for want of the loom executable (run make, or set " ..
            "LOOM_EXE): " .. table.concat(left, " "))
    end
    specs = kept
  end
end
if #specs == 0 then die("no spec to run") end

-- The _5_4 names too, since they win over the plain ones.
local path, cpath = "tests/?.lua;" .. package.path, package.cpath
local env = {
  "LOOM_TEST_MODE=rock",
  "LUA_PATH=" .. path, "LUA_PATH_5_4=" .. path,
  "LUA_CPATH=" .. cpath, "LUA_CPATH_5_4=" .. cpath,
}
if exe then env[#env + 1] = "LOOM_EXE=" .. exe end
local cmd = { "env" }
for _, a in ipairs(env) do cmd[#cmd + 1] = q(a) end
cmd[#cmd + 1] = q(lua)
cmd[#cmd + 1] = q(busted)
for _, s in ipairs(specs) do cmd[#cmd + 1] = q(s) end

local ok, how, code = os.execute(table.concat(cmd, " ") .. " < /dev/null")
if not ok then
  if how == "signal" then die("busted was killed by signal " .. code) end
  os.exit(code)
end
