-- check-docs.lua: every name the C core registers in a luaL_Reg table
-- (private names, starting with "_", and metamethods aside) and every
-- public field of the loom module must appear in docs/. Exits 1 and lists
-- the missing names otherwise.
--   usage: lua5.4 scripts/check-docs.lua   (from the repository root)

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function ls(pattern)
  local p = assert(io.popen("ls " .. pattern .. " 2>/dev/null"))
  local t = {}
  for line in p:lines() do t[#t + 1] = line end
  p:close()
  return t
end

local docs = {}
for _, f in ipairs(ls("docs/*.md")) do docs[#docs + 1] = read(f) end
docs = table.concat(docs, "\n")

local function documented(name)
  return docs:find("%f[%w_]" .. name:gsub("%p", "%%%0") .. "%f[^%w_]") ~= nil
end

local missing, seen, nseen = {}, {}, 0
local function need(name, where)
  if seen[name] or name:sub(1, 1) == "_" then return end
  seen[name] = true
  nseen = nseen + 1
  if not documented(name) then missing[#missing + 1] = name .. " (" .. where .. ")" end
end

for _, f in ipairs(ls("host/*.c")) do
  local src = read(f)
  for body in src:gmatch("luaL_Reg%s+[%w_]+%[%]%s*=%s*(%b{})") do
    for name in body:gmatch('{%s*"([%w_]+)"') do need(name, f) end
  end
end

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath
local ok, loom = pcall(require, "loom")
if ok then
  for name in pairs(loom) do need(name, "loom module") end
end

table.sort(missing)
if #missing > 0 then
  io.stderr:write("names missing from docs/:\n  ", table.concat(missing, "\n  "), "\n")
  os.exit(1)
end
print(("check-docs: %d names, all documented"):format(nseen))
