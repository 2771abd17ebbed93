-- check-docs.lua: docs/reference.md names every public name, and only
-- names that exist.
--
-- The public names are enumerated from the running code: the fields of
-- the loom module and of loom.core, and the methods and fields of a real
-- object of each type (a loop, a future, a task, a lock, a server, a
-- connection, a process, a file, a thread, ...), read from their
-- metatables. For each type, the section of docs/reference.md headed
-- "## <Type>" must have a table row for each name (a row whose first cell
-- starts with `name`, `loom.name`, `obj:name` or `obj.name`), and each
-- row must name something that exists. Every name in a luaL_Reg table of
-- host/*.c must appear in the reference too. Names that begin with "_"
-- are private and left out.
-- Exits 1 and lists what is wrong otherwise.
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

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath
local loom = require "loom"
local core = require "loom.core"

local problems = {}
local function problem(fmt, ...) problems[#problems + 1] = fmt:format(...) end

local function public(k)
  return type(k) == "string" and k:sub(1, 1) ~= "_"
end

---------------------------------------------------------------- the code's names

-- The names of an object: what its metatable's __index offers (a table,
-- the tables a function __index looks names up in, or a `methods` table),
-- the public keys of the object itself when it is a table, and the
-- metamethods __close, __call and __gc are left out (__close is written
-- as `<close>` in the tables of the pages, not here).
local function names_of(obj, extra, mt)
  local out = {}
  local function scan(idx, depth)
    if depth > 3 then return end
    if type(idx) == "table" then
      for k in pairs(idx) do if public(k) then out[k] = true end end
      local m = getmetatable(idx)
      if type(m) == "table" then scan(rawget(m, "__index"), depth + 1) end
    elseif type(idx) == "function" then
      for i = 1, 255 do
        local name, v = debug.getupvalue(idx, i)
        if not name then break end
        if type(v) == "table" then
          for _, x in pairs(v) do
            if type(x) == "function" then scan(v, depth + 1) break end
          end
        end
      end
    end
  end
  mt = mt or getmetatable(obj)
  if type(mt) == "table" then
    scan(rawget(mt, "__index"), 0)
    if type(rawget(mt, "methods")) == "table" then scan(mt.methods, 1) end
  end
  if type(obj) == "table" then
    for k in pairs(obj) do if public(k) then out[k] = true end end
  end
  for _, k in ipairs(extra or {}) do out[k] = true end
  return out
end

local function keys(list)
  local t = {}
  for _, k in ipairs(list) do t[k] = true end
  return t
end

local types = {}  -- section name -> set of names

-- The module: its functions, constants and constructors; the error
-- classes, loom.fs, loom.thread and loom.trace have sections of their own.
local errors = {}
do
  local m = {}
  for k, v in pairs(loom) do
    if public(k) then
      if type(v) == "table" and rawget(v, "is") ~= nil then
        errors[k] = v
      elseif k ~= "fs" and k ~= "thread" and k ~= "trace" and k ~= "tls" then
        m[k] = true
      end
    end
  end
  m.fs, m.thread, m.trace, m.tls = true, true, true, true
  types["loom"] = m
  types["loom.fs"] = names_of(loom.fs)
  types["loom.thread"] = names_of(loom.thread)
  types["loom.trace"] = names_of(loom.trace)
  types["loom.tls"] = names_of(loom.tls)
  local c = {}
  for k in pairs(core) do if public(k) then c[k] = true end end
  types["loom.core"] = c
end

-- The error classes and the fields of their instances.
do
  local e = {}
  for k in pairs(errors) do e[k] = true end
  local samples = {
    loom.Error("m"),
    loom.IncompleteReadError("m", { partial = "", expected = 1 }),
    loom.LimitOverrunError("m", { consumed = 1 }),
    loom.ExceptionGroup("m", {}),
  }
  for _, s in ipairs(samples) do
    for k in pairs(names_of(s)) do e[k] = true end
  end
  types["Errors"] = e
end

---------------------------------------------------------------- the reference's names

local ref = read("docs/reference.md")
local sections, order = {}, {}
local current
for line in (ref .. "\n"):gmatch("(.-)\n") do
  local head = line:match("^## (.+)$")
  if head then
    current = head:gsub("`", ""):match("^(%S+)")
    if sections[current] then problem("reference.md: section %s twice", current) end
    sections[current] = {}
    order[#order + 1] = current
  elseif current then
    local cell = line:match("^|%s*`([^`]+)`")
    if cell and not line:match("^|%s*`[^`]*`%s*|%s*%-%-") then
      local path = cell:match("^[%w_.:<>]+") or cell
      local name = path:match("([%w_<>]+)$")
      if name then sections[current][name] = line end
    end
  end
end

-- Real objects of each type, made on a running loop.
local registry = debug.getregistry()
local objs, fields = {}, {}
local tmp = os.tmpname()
do
  local loop = loom.new_event_loop()
  loop:run_until_complete(function()
    objs.Loop = loop
    objs.Handle = loop:call_soon(function() end)
    objs.TimerHandle = loop:call_later(1, function() end)
    objs.Future = loop:create_future()
    objs.Task = loom.current_task()
    for _, c in ipairs { "Lock", "Event", "Condition", "Semaphore",
                         "BoundedSemaphore", "Queue" } do
      objs[c] = loom[c]()
    end
    objs.PriorityQueue, objs.LifoQueue = loom.PriorityQueue(), loom.LifoQueue()
    objs.Barrier = loom.Barrier(2)
    objs.ContextVar = loom.ContextVar("v")
    objs.Timeout = loom.timeout(60)
    objs.TaskGroup = loom.TaskGroup()
    local server = loom.start_server(function(_, w) w:close() end, "127.0.0.1", 0)
    objs.Server = server
    local r, w = loom.open_connection("127.0.0.1", server:sockets()[1].port)
    objs.StreamReader, objs.StreamWriter, objs.Transport = r, w, w.transport
    objs.TransportSocket = w.transport:get_extra_info("socket")
    objs.StreamReaderProtocol = loom.StreamReaderProtocol(loom.StreamReader())
    objs.DatagramTransport = loop:create_datagram_endpoint(function() return {} end,
      { local_addr = { host = "127.0.0.1", port = 0 } })
    local p = loom.create_subprocess_exec("true",
      { stdin = loom.PIPE, stdout = loom.PIPE, stderr = loom.PIPE })
    p:wait()
    objs.Process = p
    objs.SubprocessTransport = p._transport
    objs.File = loom.fs.open(tmp, "w")
    objs.Channel = loom.channel()
    objs.Buffer = loom.Buffer(1)
    objs.Thread = loom.thread.start(function() end)
    objs.ThreadPoolExecutor = loom.ThreadPoolExecutor(1)
    objs.ConcurrentFuture = objs.ThreadPoolExecutor:submit(function() end)
    objs.ConcurrentFuture:await()
    objs.Thread:join()
    local ok, e = pcall(loom.fs.open, tmp .. "/none")
    assert(not ok and loom.OSError:is(e))
    for k in pairs(e) do if public(k) then types.Errors[k] = true end end
    -- rows may name fields that an __index function computes (a
    -- Process's returncode, a socket's family): look them up while the
    -- objects are open
    for t, obj in pairs(objs) do
      fields[t] = {}
      for k in pairs(sections[t] or {}) do
        local ok, v = pcall(function() return obj[k] end)
        if ok and v ~= nil then fields[t][k] = true end
      end
    end
    objs.Timeout:__close()
    objs.TaskGroup:__close()
    objs.ThreadPoolExecutor:shutdown()
    objs.File:close()
    objs.DatagramTransport:close()
    w:close()
    server:close()
  end)
  loop:close()
  os.remove(tmp)
end
for k, o in pairs(objs) do types[k] = names_of(o) end
-- Types reached only through other objects (a RemoteLoop is what a loop
-- becomes in another thread; the core's gathering object serves
-- loom.gather; the pipe protocol serves subprocess pipes; a TLS
-- connection needs certificates: its types are read off their
-- metatables).
for k, mt in pairs { RemoteLoop = "loom.RemoteLoop", Gathering = "loom.Gathering",
                     SubprocessPipeProtocol = "loom.SubprocessPipeProtocol",
                     TLSTransport = "loom.TLSTransport",
                     TLSProtocol = "loom.TLSProtocol",
                     TLSContext = "loom.tls.Context" } do
  types[k] = names_of(nil, nil, registry[mt])
end
-- The three queues have the same methods: one section.
for k in pairs(types.PriorityQueue) do
  if not types.Queue[k] then problem("PriorityQueue:%s is not a method of Queue", k) end
end
for k in pairs(types.LifoQueue) do
  if not types.Queue[k] then problem("LifoQueue:%s is not a method of Queue", k) end
end
types.PriorityQueue, types.LifoQueue = nil, nil

local nnames = 0
for t, names in pairs(types) do
  local sec = sections[t]
  if not sec then
    problem("reference.md has no section '## %s'", t)
  else
    for k in pairs(names) do
      nnames = nnames + 1
      if not sec[k] then problem("reference.md, %s: %s is not documented", t, k) end
    end
    for k in pairs(sec) do
      if not names[k] and not k:match("^<") and not (fields[t] or {})[k] then
        problem("reference.md, %s: %s does not exist", t, k)
      end
    end
  end
end
for _, t in ipairs(order) do
  if not types[t] then problem("reference.md: section %s is no type of loom", t) end
end

-- Every luaL_Reg name of the core, somewhere in the reference.
local function in_reference(name)
  return ref:find("%f[%w_]" .. name:gsub("%p", "%%%0") .. "%f[^%w_]") ~= nil
end
for _, f in ipairs(ls("host/*.c")) do
  local src = read(f)
  for body in src:gmatch("luaL_Reg%s+[%w_]+%[%]%s*=%s*(%b{})") do
    for name in body:gmatch('{%s*"([%w_]+)"') do
      if public(name) then
        nnames = nnames + 1
        if not in_reference(name) then
          problem("reference.md does not name %s (a luaL_Reg name of %s)", name, f)
        end
      end
    end
  end
end

table.sort(problems)
if #problems > 0 then
  io.stderr:write("check-docs:\n  ", table.concat(problems, "\n  "), "\n")
  os.exit(1)
end
print(("check-docs: %d names, all in docs/reference.md"):format(nnames))
