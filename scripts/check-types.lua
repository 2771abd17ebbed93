-- check-types.lua: the type annotations of types/ (for the Lua Language
-- Server) match the real module. Every public name (loom.* fields, into
-- the submodule tables, and the methods and fields of every object type,
-- taken from real objects) must be annotated, and every name an
-- annotation declares must exist at runtime. Also: every annotation file
-- loads as Lua, every @param names a parameter of its function, every
-- loom.* type an annotation uses is declared, the string values of some
-- aliases are those the C source has, and every type of the core (the
-- loom.* metatables of the registry) is mapped to an annotation class or
-- listed as internal below. Exits 1 and lists the problems otherwise.
--   usage: lua5.4 scripts/check-types.lua [dir]
-- from the repository root, with build/lib and lua/ on the paths, as the
-- names check runs (or under `loom --plain`); dir is the directory of the
-- annotations, types by default.

package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/lib/?.so;" .. package.cpath

local loom = require "loom"

local problems = {}
local function problem(fmt, ...)
  problems[#problems + 1] = fmt:format(...)
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function ls(cmd)
  local p = assert(io.popen(cmd .. " 2>/dev/null"))
  local t = {}
  for line in p:lines() do t[#t + 1] = line end
  p:close()
  table.sort(t)
  return t
end

-- Public: a string key that does not start with "_" (private names and
-- metamethods).
local function public(k)
  return type(k) == "string" and k:sub(1, 1) ~= "_"
end


---------------------------------------------------------------- the annotations

-- classes[name] = {parents = {...}, names = {name = "field"|"function"},
-- where = "file:line"}
local classes, aliases, typerefs = {}, {}, {}
local literals = {}    -- alias -> {string literal = true}: its "..." values

-- The type expression at the start of s: up to the first blank outside
-- brackets that neither follows nor precedes ":", "," or "|".
local function typeexpr(s)
  local depth, i, n = 0, 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c == "(" or c == "[" or c == "{" or c == "<" then
      depth = depth + 1
    elseif c == ")" or c == "]" or c == "}" or c == ">" then
      depth = depth - 1
    elseif c:match("%s") and depth == 0 then
      local before = s:sub(1, i - 1):match("(%S)%s*$")
      local after = s:match("^%s*(%S)", i)
      if not (before == ":" or before == "," or before == "|"
              or after == ":" or after == "|") then
        break
      end
    end
    i = i + 1
  end
  return s:sub(1, i - 1)
end

local function usetypes(expr, where)
  for name in expr:gmatch("loom%.[%w_%.]*[%w_]") do
    typerefs[#typerefs + 1] = { name = name, where = where }
  end
end

local function parse(file)
  local fn, err = loadfile(file)
  if not fn then problem("%s does not load as Lua: %s", file, err) end
  local current, bound, lineno, alias = nil, {}, 0, nil
  local params = {}      -- the @param names since the last line of code
  local function literal(expr)
    local v = expr:match('^%s*"([^"]*)"%s*$')
    if v then literals[alias][v] = true end
  end
  for line in (read(file) .. "\n"):gmatch("(.-)\r?\n") do
    lineno = lineno + 1
    local where = file .. ":" .. lineno
    local tag, rest = line:match("^%-%-%-@(%w+)%s*(.*)$")
    if tag == "class" then
      local name, parents = rest:match("^([%w_%.]+)%s*:?%s*([^#]*)")
      if classes[name] then
        problem("%s: class %s declared again (first at %s)", where, name,
          classes[name].where)
      end
      current = { parents = {}, names = {}, where = where }
      for p in parents:gmatch("[%w_%.]+") do
        current.parents[#current.parents + 1] = p
        usetypes(p, where)
      end
      classes[name] = current
    elseif tag == "field" then
      local fname, opt, t = rest:match("^([%a_][%w_]*)(%??)%s+(.*)$")
      if fname == nil then
        if not rest:match("^%[") then problem("%s: unreadable @field", where) end
      elseif current == nil then
        problem("%s: @field %s outside a class", where, fname)
      else
        current.names[fname] = "field"
        usetypes(typeexpr(t), where)
      end
    elseif tag == "param" then
      local pname, t = rest:match("^([%w_%.]+)%??%s+(.*)$")
      if t then usetypes(typeexpr(t), where) end
      params[#params + 1] = { name = pname or rest, where = where }
    elseif tag == "return" or tag == "overload" or tag == "type" then
      usetypes(typeexpr(rest), where)
    elseif tag == "alias" then
      local name, t = rest:match("^([%w_%.]+)%s*(.*)$")
      aliases[name], alias, literals[name] = where, name, {}
      t = typeexpr(t)
      usetypes(t, where)
      for unit in (t .. "|"):gmatch("([^|]*)|") do literal(unit) end
    elseif line:match("^%-%-%-|") then
      local t = typeexpr(line:match("^%-%-%-|%s*(.*)$"))
      usetypes(t, where)
      if alias then literal(t) end
    elseif line:match("^%-%-%-") then
      alias = nil
    else
      alias = nil
      -- a line of code ends a class's block; `local X = {}` or `X = {}`
      -- right after it binds X to the class
      local var = line:match("^local%s+([%a_][%w_]*)%s*=%s*{}")
        or line:match("^([%a_][%w_]*)%s*=%s*{}")
      if var and current then
        for cname, c in pairs(classes) do
          if c == current then bound[var] = cname end
        end
      end
      current = nil
      -- each @param names a parameter of the function it documents
      local args = line:match("^function%s+[%w_.:]+%s*%(([^)]*)%)")
      local have = {}
      for a in (args or ""):gmatch("[%w_.]+") do have[a] = true end
      for _, pm in ipairs(params) do
        if not have[pm.name] then
          problem("%s: @param %s names no parameter of the function below",
            pm.where, pm.name)
        end
      end
      params = {}
      local v, m = line:match("^function%s+([%a_][%w_]*)[:.]([%a_][%w_]*)%s*%(")
      if v == nil then
        v, m = line:match("^([%a_][%w_]*)%.([%a_][%w_]*)%s*=")
      end
      if v ~= nil then
        if bound[v] == nil then
          problem("%s: %s.%s: %s is not bound to a class", where, v, m, v)
        else
          local names = classes[bound[v]].names
          names[m] = line:match("^function") and "function" or "field"
        end
      end
    end
  end
end

local TYPES = arg and arg[1] or "types"
local files = ls("find '" .. TYPES:gsub("'", [['\'']]) .. "' -name '*.lua'")
if #files == 0 then problem("no annotation file under %s", TYPES) end
for _, f in ipairs(files) do parse(f) end

-- The names of a class with those of its parents: name -> {kind =
-- "field" or "function", owner = the class that declares it}.
local function declared(cname, seen)
  local c = classes[cname]
  local all = {}
  seen = seen or {}
  if c == nil or seen[cname] then return all end
  seen[cname] = true
  for _, p in ipairs(c.parents) do
    for k, v in pairs(declared(p, seen)) do all[k] = v end
  end
  for k, kind in pairs(c.names) do all[k] = { kind = kind, owner = cname } end
  return all
end

for _, ref in ipairs(typerefs) do
  if not classes[ref.name] and not aliases[ref.name] then
    problem("%s: unknown type %s", ref.where, ref.name)
  end
end


---------------------------------------------------------------- real objects

local function typename(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__name") or type(v)
end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

local function catch(fn, ...)
  local ok, e = pcall(fn, ...)
  assert(not ok, "expected an error")
  return e
end

-- Every object type, made for real; names are taken from these.
local obj = {}
local objs = {}        -- class -> list of more samples (data tables, errors)
local function sample(cname, v)
  objs[cname] = objs[cname] or {}
  table.insert(objs[cname], v)
end

-- Computed fields (an __index function answers them): present when
-- obj[name] ~= nil, looked at while the object is open.
local probed = {}
local function probe(cname, o, names)
  probed[cname] = {}
  for _, k in ipairs(names) do
    if o[k] ~= nil then probed[cname][k] = true end
  end
end

local script = arg and arg[0] or "scripts/check-types.lua"

loom.run(function()
  local loop = loom.get_running_loop()
  obj.loop = loop
  local fut = loop:create_future()
  fut:set_result(1)
  obj.future = fut
  obj.handle = loop:call_soon(function() end)
  obj.timer = loop:call_later(3600, function() end)
  obj.timer:cancel()

  -- a task tree: sleeping, awaiting another task, after sleep(0)
  local a = loom.create_task(function() loom.sleep(3600) end)
  local b = loom.create_task(function() return a:await() end)
  local c = loom.create_task(function() while true do loom.sleep(0) end end)
  obj.task = a
  loom.sleep(0)
  local function walk(nodes)
    for _, n in ipairs(nodes) do
      sample("loom.TaskNode", n)
      walk(n.children)
    end
  end
  walk(loom.task_tree())
  for _, f in ipairs(a:get_stack()) do sample("loom.StackFrame", f) end
  for _, t in ipairs { a, b, c } do t:cancel() end
  loom.wait { a, b, c }

  -- streams over TCP, and what is under them
  local accepted = loop:create_future()
  local server = loom.start_server(function(r, w)
    accepted:set_result(r, w)
  end, "127.0.0.1", 0)
  obj.server = server
  sample("loom.Address", server:sockets()[1])
  local reader, writer = loom.open_connection("127.0.0.1",
                                              server:sockets()[1].port)
  local _, peer = accepted:await()
  obj.reader, obj.writer = reader, writer
  obj.transport = writer.transport
  obj.socket = writer.transport:get_extra_info("socket")
  probe("loom.TransportSocket", obj.socket, { "family", "type" })
  obj.streamprotocol = writer.transport:get_protocol()
  writer:close()
  peer:close()
  writer:wait_closed()
  server:close()
  server:wait_closed()

  -- TLS: a self-signed certificate made with the openssl command, a
  -- server with it, a plain connection upgraded with start_tls (so the
  -- TLS protocol is the plain transport's), the facts of the session, and
  -- the errors of a certificate no CA vouches for and of a peer that does
  -- not speak TLS
  local pd = assert(io.popen("unset LD_PRELOAD; mktemp -d"))
  local dir = pd:read("l")
  pd:close()
  local function q(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local made = os.execute(("unset LD_PRELOAD; openssl req -x509 -newkey ec "
    .. "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout %s -out %s "
    .. "-days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost "
    .. ">/dev/null 2>&1"):format(q(key), q(cert)))
  local sctx, cctx
  if made then
    sctx = loom.tls.context { server = true, cert = cert, key = key,
                              alpn = { "loom" } }
    cctx = loom.tls.context { cafile = cert, alpn = { "loom" } }
  end
  os.execute("rm -rf " .. q(dir))
  assert(made, "openssl could not make a certificate")
  obj.tlscontext = cctx
  local served = loop:create_future()
  local tserver = loom.start_server(function(_, w) served:set_result(w) end,
    "127.0.0.1", 0, { ssl = sctx })
  local tport = tserver:sockets()[1].port
  local lost = loop:create_future()
  local plain = loop:create_connection(function()
    return { connection_lost = function() lost:set_result() end }
  end, "127.0.0.1", tport)
  local tt = loop:start_tls(plain, plain:get_protocol(), cctx,
                            { server_hostname = "localhost" })
  obj.tlstransport, obj.tlsprotocol = tt, plain:get_protocol()
  local tw = served:await()
  for _, t in ipairs { tt, tw.transport } do
    sample("loom.tls.SSLObject", t:get_extra_info("ssl_object"))
    sample("loom.tls.Cipher", t:get_extra_info("cipher"))
  end
  sample("loom.tls.PeerCert", tt:get_extra_info("peercert"))
  sample("loom.SSLCertVerificationError", catch(loom.open_connection,
    "127.0.0.1", tport, { ssl = loom.tls.context {},
                          server_hostname = "localhost" }))
  local notls = loom.start_server(function(r, w)
    r:read(10)
    w:write("220 plain text here\r\n")
    w:close()
  end, "127.0.0.1", 0)
  sample("loom.SSLError", catch(loom.open_connection, "127.0.0.1",
    notls:sockets()[1].port, { ssl = cctx, server_hostname = "localhost" }))
  tt:close()
  tw:close()
  lost:await()
  tw:wait_closed()
  for _, srv in ipairs { tserver, notls } do
    srv:close()
    srv:wait_closed()
  end

  -- a datagram endpoint
  -- a datagram endpoint
  local udp = loop:create_datagram_endpoint(function() return {} end,
    { local_addr = { host = "127.0.0.1", port = 0 } })
  obj.udp = udp
  obj.buffer = loom.Buffer(4)
  udp:close()

  -- names
  for _, ai in ipairs(loom.getaddrinfo("127.0.0.1", 80,
      { socktype = "stream", flags = { canonname = true } })) do
    sample("loom.AddrInfo", ai)
  end

  -- a child process, and the protocol API under it
  local p = loom.create_subprocess_shell("read x",
    { stdin = loom.PIPE, stdout = loom.PIPE, stderr = loom.PIPE })
  obj.process = p
  p:communicate("\n")
  probe("loom.Process", p, { "returncode" })
  local exited = loop:create_future()
  local st = loop:subprocess_shell(function()
    return { connection_lost = function() exited:set_result() end }
  end, "exit 0", { stdin = loom.PIPE })
  obj.subprocess = st
  obj.pipeprotocol = st:get_pipe_transport(0):get_protocol()
  st:get_pipe_transport(0):close()
  exited:await()
  st:close()

  -- files
  local f <close> = loom.fs.open(script)
  obj.file = f
  sample("loom.fs.Stat", f:stat())

  -- threads, channels, executors
  obj.thread = loom.thread.start(function() return 1 end)
  obj.thread:join()
  local ch <close> = loom.channel()
  obj.channel = ch
  ch:send(loop)
  obj.remote = ch:recv()
  local ex <close> = loom.ThreadPoolExecutor(1)
  obj.executor = ex
  obj.cfuture = ex:submit(function() return 1 end)
  obj.cfuture:await()

  -- synchronisation and queues
  obj.lock, obj.event, obj.condition = loom.Lock(), loom.Event(), loom.Condition()
  obj.semaphore, obj.bounded = loom.Semaphore(), loom.BoundedSemaphore()
  obj.barrier = loom.Barrier(1)
  do
    local g <close> = obj.lock:hold()
    obj.guard = g
  end
  obj.queue, obj.lifo = loom.Queue(1), loom.LifoQueue()
  obj.priority = loom.PriorityQueue()

  -- scopes and context variables
  do
    local t <close> = loom.timeout(3600)
    obj.timeout = t
  end
  do
    local tg <close> = loom.TaskGroup()
    obj.taskgroup = tg
  end
  obj.contextvar = loom.ContextVar("v", 0)
  local outer = obj.contextvar:set(1)
  local token = obj.contextvar:set(2)
  obj.token = token
  obj.contextvar:reset(token)
  obj.contextvar:reset(outer)

  -- errors, raised for real where it is cheap
  local cf = loop:create_future()
  cf:cancel("why")
  sample("loom.CancelledError", catch(cf.result, cf))
  sample("loom.TimeoutError", catch(loom.wait_for, function() loom.sleep(1) end, 0.001))
  sample("loom.InvalidStateError", catch(loop:create_future().result, loop:create_future()))
  local r = loom.StreamReader()
  r:feed_data("ab")
  r:feed_eof()
  sample("loom.IncompleteReadError", catch(r.readexactly, r, 5))
  r = loom.StreamReader { limit = 2 }
  r:feed_data("abcdef")
  sample("loom.LimitOverrunError", catch(r.readuntil, r, "\n"))
  local q = loom.Queue(1)
  sample("loom.QueueEmpty", catch(q.get_nowait, q))
  q:put_nowait(1)
  sample("loom.QueueFull", catch(q.put_nowait, q, 2))
  q:shutdown(true)
  sample("loom.QueueShutDown", catch(q.put_nowait, q, 3))
  local bar = loom.Barrier(2)
  bar:abort()
  sample("loom.BrokenBarrierError", catch(bar.wait, bar))
  sample("loom.SendfileNotAvailableError", loom.SendfileNotAvailableError("no"))
  sample("loom.OSError", catch(loom.fs.rename, "/nonexistent/a", "/nonexistent/b"))
  sample("loom.ExceptionGroup", catch(loom.task_group, function(tg)
    tg:create_task(error, "boom")
  end))
  sample("loom.Error", loom.Error("x"))
end)


---------------------------------------------------------------- the map

-- Names of a value: its own string keys and, through its metatable, the
-- keys of an __index table.
local function names_of(v)
  local t = {}
  if type(v) == "table" then
    for k in next, v do if public(k) then t[k] = true end end
  end
  local mt = getmetatable(v)
  local idx = type(mt) == "table" and rawget(mt, "__index")
  if type(idx) == "table" then
    for k in pairs(idx) do if public(k) then t[k] = true end end
  end
  return t
end

-- The table an __index function finds methods in (its first table
-- upvalue): loom.Process.
local function index_upvalue(v)
  local f = rawget(getmetatable(v), "__index")
  for i = 1, math.huge do
    local name, u = debug.getupvalue(f, i)
    if name == nil then return nil end
    if type(u) == "table" then return u end
  end
end

-- The protocol methods a C file calls: the string constants given to its
-- callers of protocol methods, `protocall(L, tidx, "name", ...)`.
local function protocol_calls(file, callers)
  local t, src = {}, read(file)
  for _, fn in ipairs(callers) do
    for name in src:gmatch("%f[%w_]" .. fn .. '%(L,[^"\n]-"([%a_]+)"') do
      t[name] = true
    end
  end
  return t
end

-- Whether a name shows as a field in one of the files: a C string
-- ("name") or a Lua key (name =, .name).
local function in_source(name, files)
  for _, f in ipairs(files) do
    local s = read(f)
    if s:find('"' .. name .. '"', 1, true)
       or s:find("%f[%w_]" .. name .. "%s*=[^=]")
       or s:find("%." .. name .. "%f[^%w_]") then
      return true
    end
  end
  return false
end

-- Annotation class -> where its names come from:
--   object   a real object: its names, and its type name must match
--   table    a table of the module: its keys
--   extra    more names of the object (a table, or an __index upvalue)
--   probe    computed fields found by probe() above
--   samples  real values of objs[class] (data tables, error instances):
--            the union of their keys (with the class table's, for errors)
--   src      files where names no sample shows may appear instead
--            (fields set only sometimes, options of a function)
--   calls    protocols: the methods a C file calls on a protocol, the
--            names given to its functions that call them
--   accepted option names that are taken and ignored (no source reads
--            them), with the reason
--   plain    the sample is a plain table (no type name to compare)
local MAP = {
  ["loom"] = { table = loom },

  ["loom.Loop"] = { object = obj.loop },
  ["loom.Handle"] = { object = obj.handle },
  ["loom.TimerHandle"] = { object = obj.timer },
  ["loom.Future"] = { object = obj.future },
  ["loom.Task"] = { object = obj.task },
  ["loom.StackFrame"] = { samples = true },
  ["loom.TaskNode"] = { samples = true, src = { "lua/loom/introspect.lua" } },
  ["loom.ExceptionContext"] = { src = ls("ls host/*.c lua/loom/*.lua") },
  ["loom.LoopOptions"] = { src = { "host/loop.c" } },

  ["loom.Server"] = { object = obj.server },
  ["loom.TCPTransport"] = { object = obj.transport },
  ["loom.TransportSocket"] = { object = obj.socket,
                               probe = probed["loom.TransportSocket"],
                               extra = getmetatable(obj.socket).methods },
  ["loom.DatagramTransport"] = { object = obj.udp },
  ["loom.Buffer"] = { object = obj.buffer },
  ["loom.Protocol"] = { calls = { "host/stream.c", "protocall", "protofail" } },
  ["loom.DatagramProtocol"] = { calls = { "host/udp.c", "protocall" } },
  ["loom.SubprocessProtocol"] = { calls = { "host/process.c", "protocall",
                                            "pipeflow" } },
  ["loom.Address"] = { samples = true, src = { "host/udp.c", "host/dns.c" } },
  ["loom.AddrInfo"] = { samples = true, src = { "host/dns.c" } },
  ["loom.AddrinfoHints"] = { src = { "host/dns.c" } },
  ["loom.AddrinfoFlags"] = { src = { "host/dns.c" } },
  ["loom.NameinfoFlags"] = { src = { "host/dns.c" } },
  ["loom.CreateServerOptions"] = { src = { "host/tcp.c", "host/stream.c",
                                           "lua/loom/tls.lua" },
    accepted = { reuse_address = "libuv always sets SO_REUSEADDR (host/tcp.c)" } },
  ["loom.CreateConnectionOptions"] = { src = { "host/tcp.c", "host/stream.c",
                                               "lua/loom/tls.lua" } },
  ["loom.CreateUnixServerOptions"] = { src = { "host/pipe.c", "host/stream.c",
                                               "lua/loom/tls.lua" } },
  ["loom.CreateUnixConnectionOptions"] = { src = { "host/pipe.c", "host/stream.c",
                                                   "lua/loom/tls.lua" } },
  ["loom.DatagramEndpointOptions"] = { src = { "host/udp.c" } },

  ["loom.tls.Context"] = { object = obj.tlscontext },
  ["loom.tls.ContextOptions"] = { src = { "host/tls.c" } },
  ["loom.TLSTransport"] = { object = obj.tlstransport },
  ["loom.TLSProtocol"] = { object = obj.tlsprotocol },
  ["loom.StartTLSOptions"] = { src = { "lua/loom/tls.lua" } },
  ["loom.tls.PeerCert"] = { samples = true, src = { "host/tls.c" } },
  ["loom.tls.Cipher"] = { samples = true },
  ["loom.tls.SSLObject"] = { samples = true, src = { "host/tls.c" } },

  ["loom.StreamReader"] = { object = obj.reader },
  ["loom.StreamWriter"] = { object = obj.writer },
  ["loom.StreamReaderProtocol"] = { object = obj.streamprotocol },
  ["loom.StreamReaderOptions"] = { src = { "lua/loom/streams.lua" } },
  ["loom.OpenConnectionOptions"] = { src = { "lua/loom/streams.lua" } },
  ["loom.StartServerOptions"] = { src = { "lua/loom/streams.lua" } },
  ["loom.OpenUnixConnectionOptions"] = { src = { "lua/loom/streams.lua" } },
  ["loom.StartUnixServerOptions"] = { src = { "lua/loom/streams.lua" } },

  ["loom.Process"] = { object = obj.process, probe = probed["loom.Process"],
                       extra = index_upvalue(obj.process) },
  ["loom.SubprocessTransport"] = { object = obj.subprocess },
  ["loom.SubprocessPipeProtocol"] = { object = obj.pipeprotocol },
  ["loom.SubprocessOptions"] = { src = { "lua/loom/subprocess.lua" } },
  ["loom.SubprocessTransportOptions"] = { src = { "host/process.c" } },

  ["loom.File"] = { object = obj.file },
  ["loom.fs.Stat"] = { samples = true, src = { "host/fs.c" } },
  ["loom.fs.OpenOptions"] = { src = { "host/fs.c" } },
  ["loom.fs.WriteFileOptions"] = { src = { "lua/loom/fs.lua" } },
  ["loom.fs.MkdirOptions"] = { src = { "host/fs.c", "lua/loom/fs.lua" } },
  ["loom.fs.CopyfileOptions"] = { src = { "host/fs.c" } },
  ["loom.SendfileOptions"] = { src = { "lua/loom/fs.lua" } },

  ["loom.Thread"] = { object = obj.thread },
  ["loom.Channel"] = { object = obj.channel },
  ["loom.RemoteLoop"] = { object = obj.remote },
  ["loom.ThreadPoolExecutor"] = { object = obj.executor },
  ["loom.ConcurrentFuture"] = { object = obj.cfuture },

  ["loom.Lock"] = { object = obj.lock },
  ["loom.Event"] = { object = obj.event },
  ["loom.Condition"] = { object = obj.condition },
  ["loom.Semaphore"] = { object = obj.semaphore },
  ["loom.BoundedSemaphore"] = { object = obj.bounded },
  ["loom.Barrier"] = { object = obj.barrier },
  ["loom.sync.guard"] = { object = obj.guard },
  ["loom.Queue"] = { object = obj.queue },
  ["loom.LifoQueue"] = { object = obj.lifo },
  ["loom.PriorityQueue"] = { object = obj.priority },
  ["loom.PriorityQueueOptions"] = { src = { "lua/loom/queues.lua" } },

  ["loom.Timeout"] = { object = obj.timeout },
  ["loom.TaskGroup"] = { object = obj.taskgroup },
  ["loom.GatherOptions"] = { src = { "lua/loom/combinators.lua" } },
  ["loom.WaitOptions"] = { src = { "lua/loom/combinators.lua" } },
  ["loom.AsCompletedOptions"] = { src = { "lua/loom/combinators.lua" } },
  ["loom.ContextVar"] = { object = obj.contextvar },
  ["loom.ContextToken"] = { object = obj.token, plain = true },
}

-- Submodules, the plain tables of the module (loom.fs, loom.thread,
-- loom.trace, ...): their keys.
for k, v in pairs(loom) do
  if public(k) and type(v) == "table" and getmetatable(v) == nil then
    MAP["loom." .. k] = { table = v }
  end
end

-- Errors: the class table's names and those of real instances.
for _, name in ipairs { "Error", "CancelledError", "TimeoutError",
    "InvalidStateError", "IncompleteReadError", "LimitOverrunError",
    "QueueEmpty", "QueueFull", "QueueShutDown", "BrokenBarrierError",
    "SendfileNotAvailableError", "OSError", "SSLError",
    "SSLCertVerificationError", "ExceptionGroup" } do
  MAP["loom." .. name] = { samples = true, extra = loom[name] }
end
-- OSError's .errors comes only with "Multiple exceptions" of a connection.
MAP["loom.OSError"].src = { "lua/loom/streams.lua" }

-- Aliases of string values -> the C source that makes the same set of
-- strings, and the pattern that finds them there.
local ALIASES = {
  ["loom.SocketOption"] = { "host/socket.c", '{"([%w_]+)", [%w_]+, [%w_]+, %d}' },
  ["loom.fs.Type"] = { "host/fs.c", ': return "([%w_]+)";' },
  ["loom.tls.ExtraInfo"] = { "host/tls.c", 'strcmp%(name, "([%w_]+)"%) == 0' },
  ["loom.tls.Version"] = { "host/tls.c", '"(TLSv1[%.%d]*)"' },
}

-- Core types (metatables in the registry) that no annotation describes:
-- private helpers of the Lua layer, never handed to a program.
local INTERNAL = {
  ["loom.Gathering"] = "gather's bookkeeping in C (loom.core._gather)",
  ["loom.Future.gc"] = "the metatable of a failed loom.Future (same methods)",
  ["loom.CopyBuffer"] = "a buffer of a copy between threads",
  ["loom.ThreadKeeper"] = "joins threads when the Lua state closes",
}


---------------------------------------------------------------- compare

local checked = 0

-- The runtime names (and values, where known) of every mapped class.
local RT, VALUES = {}, {}
for cname, m in pairs(MAP) do
  local runtime, values = {}, {}
  if m.table ~= nil then
    for k, v in pairs(m.table) do
      if public(k) then runtime[k], values[k] = true, v end
    end
  end
  if m.object ~= nil then
    if not m.plain and typename(m.object) ~= cname then
      problem("%s: the sample object is a %s", cname, typename(m.object))
    end
    for k in pairs(names_of(m.object)) do
      runtime[k], values[k] = true, m.object[k]
    end
  end
  if m.extra ~= nil then
    for k in pairs(names_of(m.extra)) do runtime[k] = true end
  end
  for k in pairs(m.probe or {}) do runtime[k] = true end
  if m.samples then
    if objs[cname] == nil then problem("%s: no sample was made", cname) end
    for _, v in ipairs(objs[cname] or {}) do
      if m.extra ~= nil and typename(v) ~= cname then
        problem("%s: the sample is a %s (%s)", cname, typename(v), tostring(v))
      end
      for k in pairs(names_of(v)) do runtime[k] = true end
    end
  end
  if m.calls ~= nil then
    runtime = protocol_calls(m.calls[1], { table.unpack(m.calls, 2) })
  end
  RT[cname], VALUES[cname] = runtime, values
end

for cname, m in pairs(MAP) do
  local runtime, values = RT[cname], VALUES[cname]
  if classes[cname] == nil then
    problem("%s: mapped here but not annotated", cname)
  else
    local decl = declared(cname)
    for k in pairs(runtime) do
      checked = checked + 1
      if decl[k] == nil then problem("%s.%s: not annotated", cname, k) end
    end
    for k, d in pairs(decl) do
      -- a name found nowhere real; one a parent declares may be found
      -- where the parent's are
      local om = MAP[d.owner] or m
      if not runtime[k] and not (RT[d.owner] and RT[d.owner][k])
         and not (m.src and in_source(k, m.src))
         and not (om.src and in_source(k, om.src))
         and not (om.accepted and om.accepted[k]) then
        problem("%s.%s: annotated, but not found at runtime", cname, k)
      elseif d.kind == "function" and values[k] ~= nil
             and not callable(values[k]) then
        problem("%s.%s: annotated as a function, but is a %s", cname, k,
          type(values[k]))
      end
    end
  end
end

for aname, a in pairs(ALIASES) do
  local real, vals = {}, literals[aname] or {}
  for v in read(a[1]):gmatch(a[2]) do real[v] = true end
  if next(real) == nil then problem("%s: no value found in %s", aname, a[1]) end
  if aliases[aname] == nil then problem("%s: not annotated", aname) end
  for v in pairs(real) do
    checked = checked + 1
    if not vals[v] then problem('%s: "%s" (%s) not annotated', aname, v, a[1]) end
  end
  for v in pairs(vals) do
    if not real[v] then problem('%s: "%s" annotated, but not in %s', aname, v, a[1]) end
  end
end

for cname, c in pairs(classes) do
  if MAP[cname] == nil then
    problem("%s: annotated (%s) but not mapped to anything real in %s",
      cname, c.where, script)
  end
end

-- Every loom.* type of the core is annotated or known to be internal.
for k, v in pairs(debug.getregistry()) do
  if type(k) == "string" and k:match("^loom%.") and type(v) == "table"
     and MAP[k] == nil and INTERNAL[k] == nil then
    problem("%s: a type of the core with no annotation class", k)
  end
end

if #problems > 0 then
  table.sort(problems)
  io.stderr:write("check-types: ", #problems, " problem(s) in ", TYPES,
    ":\n  ",
    table.concat(problems, "\n  "), "\n")
  os.exit(1)
end
local n = 0
for _ in pairs(classes) do n = n + 1 end
print(("check-types: %d files, %d classes, %d public names, all annotated")
  :format(#files, n, checked))
