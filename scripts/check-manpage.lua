-- check-manpage.lua: docs/loom.1 documents exactly the options the
-- executable accepts. The options are read from host/main.c twice: from
-- collectargs() (what is parsed) and from print_usage() (what the usage
-- message lists); the page's are the tagged paragraphs of its OPTIONS
-- section. All three sets must be equal. So must the prompt's commands
-- (lua/loom/repl.lua) and those the PROMPT section describes.
--   usage: lua5.4 scripts/check-manpage.lua [MAIN.C [PAGE [REPL.LUA]]]

local main_c = arg[1] or "host/main.c"
local page = arg[2] or "docs/loom.1"
local repl_lua = arg[3] or "lua/loom/repl.lua"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local src, man = read(main_c), read(page)

-- The body of a C function: from its definition line to the first "}"
-- at the start of a line.
local function body(name)
  local b = src:match("\nstatic [^\n]-" .. name .. "%s*%b()%s*{(.-)\n}")
  assert(b, "no function " .. name .. " in " .. main_c)
  return b
end

local parsed = {}
do
  local b = body("collectargs")
  for opt in b:gmatch('strcmp%(a, "(%-%-[%w%-]+)"%)') do parsed[opt] = true end
  for c in b:gmatch("case '(.)':") do
    if c ~= "-" then parsed["-" .. c] = true end
  end
  -- case '\0' is a lone "-"; case '-' with a[2] == '\0' is "--".
  if b:find("case '\\0'", 1, true) then parsed["-"] = true end
  if b:find("if (a[2] == '\\0') {  /* '--' */", 1, true) then parsed["--"] = true end
end

local usage = {}
do
  local b = body("print_usage")
  for line in b:gmatch('"  (%-[^"]*)\\n"') do
    usage[line:match("^(%S+)")] = true
  end
end

local documented = {}
do
  local sect = man:match("\n%.SH OPTIONS\n(.-)\n%.SH ")
  assert(sect, "no OPTIONS section in " .. page)
  for tag in ("\n" .. sect):gmatch("\n%.TP\n%.BI? ([^\n]+)") do
    local opt = tag:match('^"?([^%s"]+)'):gsub("\\%-", "-")
    documented[opt] = true
  end
end

local commands, described = {}, {}
for name in read(repl_lua):gmatch("\n%s*function commands%.([%w_]+)%(") do
  commands[":" .. name] = true
end
do
  local sect = man:match("\n%.SH PROMPT\n(.-)\n%.SH ")
  assert(sect, "no PROMPT section in " .. page)
  for name in ("\n" .. sect):gmatch("\n%.TP\n%.BI? (:[%w_]+)") do
    described[name] = true
  end
end

local function keys(t)
  local k = {}
  for name in pairs(t) do k[#k + 1] = name end
  table.sort(k)
  return k
end

local failures = 0
local function compare(a, an, b, bn)
  for _, opt in ipairs(keys(a)) do
    if not b[opt] then
      failures = failures + 1
      io.stderr:write(("check-manpage: %s is in %s but not in %s\n"):format(opt, an, bn))
    end
  end
end
local P = main_c .. "'s collectargs"
local U = main_c .. "'s usage message"
compare(parsed, P, documented, page)
compare(documented, page, parsed, P)
compare(parsed, P, usage, U)
compare(usage, U, parsed, P)
compare(commands, repl_lua, described, page .. "'s PROMPT section")
compare(described, page .. "'s PROMPT section", commands, repl_lua)

if next(parsed) == nil or next(commands) == nil then
  failures = failures + 1
  io.stderr:write("check-manpage: no option or no command found\n")
end
if failures > 0 then os.exit(1) end
print("check-manpage: " .. page .. " documents the options " ..
      table.concat(keys(parsed), " ") .. " and the commands " ..
      table.concat(keys(commands), " "))
