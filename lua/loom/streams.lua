-- loom.streams: StreamReader's lines(), and the stream transports' Lua
-- glue, after asyncio's streams.py.
--
-- The buffer, every rule about what a read returns and the waiting of
-- the reads live in C (host/streambuf.c). lines() is here.

local core = require "loom.core"

local type, error, pcall, getmetatable = type, error, pcall, getmetatable
local concat = table.concat
local typename = require("loom.util").typename

local await = core.await
local running_loop = core._get_running_loop

local M = {}
M.Buffer = core.Buffer  -- a byte buffer for buffered protocols (host/buffer.c)

-- The metatable of the C type (nil until loom.core opens it).
local MT = core._StreamReader and getmetatable(core._StreamReader())

-- lines(): an iterator for `for line in reader:lines() do`; each line
-- keeps its "\n" (asyncio's async iteration), and the loop ends at EOF.
if MT ~= nil then
  local readline = MT.__index.readline
  core.interpose("loom.StreamReader", "lines", function(self)
    if getmetatable(self) ~= MT then
      error(("bad argument #1 to 'lines' (loom.StreamReader expected, got %s)")
        :format(typename(self)), 2)
    end
    return function()
      local s = readline(self)
      if s ~= "" then return s end
      return nil
    end
  end)
end

-- StreamReader([opts]): a new reader; opts.limit (default 64 KiB) bounds
-- what readuntil and readline look through, and sets the flow-control
-- marks (pause past 2 * limit, resume at limit).
function M.StreamReader(opts)
  local limit
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'StreamReader' (table expected, got "
        .. type(opts) .. ")", 2)
    end
    for k in pairs(opts) do
      if k ~= "limit" then
        error(("bad argument #1 to 'StreamReader' (unknown option '%s')")
          :format(tostring(k)), 2)
      end
    end
    limit = opts.limit
  end
  return core._StreamReader(limit)
end


---------------------------------------------------------------- transports
--
-- asyncio's StreamReaderProtocol (with FlowControlMixin), StreamWriter,
-- open_connection and start_server: Lua glue between a transport of
-- host/tcp.c and a StreamReader. The protocol feeds the reader, keeps the
-- writer's drain waiters (one future each) and the waiters of
-- wait_closed; the reader pauses and resumes the transport itself.

local setmetatable, ipairs, tostring = setmetatable, ipairs, tostring
local remove = table.remove
local sleep = core.sleep
local OSError = require("loom.errors").OSError

-- Completes each pending future of list with err (an error) or nothing.
local function wake_all(list, err)
  for _, fut in ipairs(list) do
    if not fut:done() then
      if err == nil then fut:set_result() else fut:set_exception(err) end
    end
  end
end

-- Awaits a new future of the running loop, appended to list while it
-- waits (removed again however the wait ends, so cancelling is safe).
local function wait_in(list, fname)
  local loop = running_loop()
  if loop == nil then error(fname .. ": no running event loop", 3) end
  local fut = loop:create_future()
  list[#list + 1] = fut
  local ok, err = pcall(await, fut)
  for i = #list, 1, -1 do
    if list[i] == fut then remove(list, i); break end
  end
  if not ok then error(err, 0) end
end

local callable = require("loom.util").callable

local Protocol = {}
Protocol.__index = Protocol
Protocol.__name = "loom.StreamReaderProtocol"

local Writer = {}
Writer.__index = Writer
Writer.__name = "loom.StreamWriter"

-- Every writer made (weak keys). Checking self is one look-up here, on
-- the hot path of write and drain: getmetatable would also look up
-- __metatable, by name.
local writers = setmetatable({}, { __mode = "k" })

local bind = core._writer_bind

-- With a StreamReader over a transport of loom's own and the reader's
-- protocol, write and drain are C closures bound to the reader (they
-- call the methods below for anything but the common case).
local function new_writer(transport, protocol, reader)
  local w = setmetatable({ transport = transport, _protocol = protocol,
                           _reader = reader }, Writer)
  writers[w] = true
  if bind ~= nil and reader ~= nil and protocol._reader == reader then
    local write, drain = bind(w, reader, transport, Writer.write,
                              Writer.drain)
    if write ~= nil then w.write, w.drain = write, drain end
  end
  return w
end

local function new_protocol(reader, cb)
  return setmetatable({
    _reader = reader, _cb = cb,
    _paused = false,        -- pause_writing came, not yet resume_writing
    _lost = false,          -- connection_lost came
    _err = nil,             -- its error
    _drain_waiters = {}, _close_waiters = {},
  }, Protocol)
end

-- StreamReaderProtocol(reader, [client_connected_cb]).
function M.StreamReaderProtocol(reader, cb)
  if getmetatable(reader) ~= MT then
    error(("bad argument #1 to 'StreamReaderProtocol' (loom.StreamReader "
      .. "expected, got %s)"):format(typename(reader)), 2)
  end
  if cb ~= nil and not callable(cb) then
    error(("bad argument #2 to 'StreamReaderProtocol' (function expected, "
      .. "got %s)"):format(typename(cb)), 2)
  end
  return new_protocol(reader, cb)
end

-- asyncio's _on_client_connected_cb done callback.
local function client_done(task, proto, transport, loop)
  if task:cancelled() then
    transport:close()
    return
  end
  local e = task:exception()
  if e ~= nil then
    loop:call_exception_handler {
      message = "Unhandled exception in client_connected_cb",
      exception = e, transport = transport, task = task,
    }
    transport:close()
  end
  if proto._task == task then proto._task = nil end
end

local sink = core._stream_sink

function Protocol:connection_made(transport)
  self._transport = transport
  local reader = self._reader
  reader:set_transport(transport)
  -- A transport of loom's own reads straight into the reader's buffer
  -- instead of calling data_received, unless that was replaced.
  if sink ~= nil and self.data_received == Protocol.data_received then
    sink(transport, reader)
  end
  local cb = self._cb
  if cb ~= nil then
    local writer = new_writer(transport, self, reader)
    self._writer = writer
    local loop = transport:get_loop()
    local task = loop:create_task(cb, reader, writer)
    self._task = task
    task:add_done_callback(function(t)
      client_done(t, self, transport, loop)
    end)
  end
end

-- self._reader:feed_data(data), in C (it runs for every chunk read).
Protocol.data_received = core._protocol_data_received or function(self, data)
  self._reader:feed_data(data)
end

-- Keeps the transport open for writing, as asyncio does without TLS:
-- the writer closes it.
function Protocol:eof_received()
  self._reader:feed_eof()
  return true
end

function Protocol:connection_lost(err)
  local reader = self._reader
  if err == nil then reader:feed_eof() else reader:set_exception(err) end
  self._lost, self._err = true, err
  reader:_write_flow(self._paused, true)
  local waiters = self._close_waiters
  self._close_waiters = {}
  wake_all(waiters, err)
  if self._paused then wake_all(self._drain_waiters, err) end
  self._writer = nil
  self._transport = nil
end

function Protocol:pause_writing()
  self._paused = true
  self._reader:_write_flow(true, self._lost)
end

function Protocol:resume_writing()
  self._paused = false
  self._reader:_write_flow(false, self._lost)
  wake_all(self._drain_waiters)
end

-- asyncio's FlowControlMixin._drain_helper.
function Protocol:_drain_helper()
  if self._lost then
    error(OSError("ECONNRESET: Connection lost", { code = "ECONNRESET" }), 0)
  end
  if not self._paused then return end
  wait_in(self._drain_waiters, "drain")
end

-- Returns once connection_lost came; raises its error, if any.
function Protocol:_wait_closed()
  if not self._lost then wait_in(self._close_waiters, "wait_closed") end
  if self._err ~= nil then error(self._err, 0) end
end

function Protocol:__tostring()
  return ("loom.StreamReaderProtocol (%s)"):format(
    self._lost and "lost" or self._transport and "connected" or "new")
end

-- StreamWriter(transport, protocol, [reader]).
function M.StreamWriter(transport, protocol, reader)
  local tty = type(transport)
  if tty ~= "table" and tty ~= "userdata" then
    error(("bad argument #1 to 'StreamWriter' (transport expected, got %s)")
      :format(typename(transport)), 2)
  end
  if getmetatable(protocol) ~= Protocol then
    error(("bad argument #2 to 'StreamWriter' (loom.StreamReaderProtocol "
      .. "expected, got %s)"):format(typename(protocol)), 2)
  end
  if reader ~= nil and getmetatable(reader) ~= MT then
    error(("bad argument #3 to 'StreamWriter' (loom.StreamReader "
      .. "expected, got %s)"):format(typename(reader)), 2)
  end
  return new_writer(transport, protocol, reader)
end

-- Raises the bad-self error of method fname at the given level (3: the
-- caller of the method calling badw).
local function badw(self, fname, level)
  error(("bad argument #1 to '%s' (loom.StreamWriter expected, got %s)")
    :format(fname, typename(self)), level)
end

local function checkw(self, fname)
  if writers[self] == nil then badw(self, fname, 4) end
  return self.transport
end

local BUFFER_MT = getmetatable(core.Buffer(0))

-- via(fname, shift, pcall(method, obj, ...)) in a function of this
-- module that calls a method of a loop or a transport with its own
-- arguments shifted by shift places: the method's results, or its error
-- raised again at the line that called fname, an argument error
-- numbered and named as fname's.
local function via(fname, shift, ok, ...)
  if ok then return ... end
  local e = ...
  if type(e) ~= "string" then error(e, 0) end
  e = e:gsub("^[^:\n]*:%d+: ", "", 1)
  local n, name, why = e:match("^bad argument #(%d+) to '([^']*)' (.*)$")
  if n ~= nil then
    -- '?': a C method called by pcall, which counts self as #1
    n = tonumber(n) - shift - (name == "?" and 1 or 0)
    e = ("bad argument #%d to '%s' %s"):format(n, fname, why)
  end
  error(e, 3)
end

function Writer:write(data)
  if writers[self] == nil then badw(self, "write", 3) end
  if type(data) ~= "string" and getmetatable(data) ~= BUFFER_MT then
    -- raised here, so that the message points at the caller's line
    error(("bad argument #1 to 'write' (string expected, got %s)")
      :format(typename(data)), 2)
  end
  via("write", 0, pcall(self.transport.write, self.transport, data))
end

function Writer:writelines(list)
  local transport = checkw(self, "writelines")
  if type(list) ~= "table" then
    error(("bad argument #1 to 'writelines' (table expected, got %s)")
      :format(typename(list)), 2)
  end
  for i = 1, #list do
    if type(list[i]) ~= "string" then
      error(("bad argument #1 to 'writelines' (item %d is a %s, string "
        .. "expected)"):format(i, typename(list[i])), 2)
    end
  end
  via("writelines", 0, pcall(transport.writelines, transport, list))
end

function Writer:write_eof()
  local transport = checkw(self, "write_eof")
  via("write_eof", 0, pcall(transport.write_eof, transport))
end

function Writer:can_write_eof()
  return checkw(self, "can_write_eof"):can_write_eof()
end

function Writer:close()
  return checkw(self, "close"):close()
end

function Writer:is_closing()
  return checkw(self, "is_closing"):is_closing()
end

function Writer:get_extra_info(name, default)
  local transport = checkw(self, "get_extra_info")
  if type(name) ~= "string" then
    error(("bad argument #1 to 'get_extra_info' (string expected, got %s)")
      :format(typename(name)), 2)
  end
  return transport:get_extra_info(name, default)
end

function Writer:wait_closed()
  checkw(self, "wait_closed")
  self._protocol:_wait_closed()
end

-- drain(): returns at once unless the transport is paused for writing;
-- then waits until it resumes. Raises the reader's error, and once the
-- connection is lost, its error or OSError ECONNRESET.
function Writer:drain()
  if writers[self] == nil then badw(self, "drain", 3) end
  local reader = self._reader
  if reader ~= nil then
    local e = reader:exception()
    if e ~= nil then error(e, 0) end
  end
  if self.transport:is_closing() then
    -- Let connection_lost run, so that a loop of write and drain sees
    -- the connection go (asyncio does the same).
    sleep(0)
  end
  self._protocol:_drain_helper()
end

-- start_tls(ctx, [opts]): upgrades the connection to TLS in place
-- (STARTTLS); opts as loop:start_tls's. The writer and its reader go on
-- over the TLS transport.
function Writer:start_tls(ctx, opts)
  local transport = checkw(self, "start_tls")
  if not core._tls_is_context(ctx) then
    error(("bad argument #1 to 'start_tls' (loom.tls.Context expected, got "
      .. "%s)"):format(typename(ctx)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to 'start_tls' (table expected, got %s)")
      :format(typename(opts)), 2)
  end
  self:drain()
  local loop = transport:get_loop()
  local tt = via("start_tls", 2, pcall(loop.start_tls, loop, transport,
                                       self._protocol, ctx, opts))
  -- The C fast paths bound to the reader write to the plain transport.
  rawset(self, "write", nil)
  rawset(self, "drain", nil)
  self.transport = tt
  self._protocol._transport = tt
end

Writer.__close = Writer.close

function Writer:__tostring()
  return ("loom.StreamWriter (%s)"):format(tostring(self.transport))
end

-- Splits opts into the reader's limit and the options for the loop
-- method (a copy without limit, or nil).
local function split_opts(opts, fname, argn)
  if opts == nil then return nil, nil end
  if type(opts) ~= "table" then
    error(("bad argument #%d to '%s' (table expected, got %s)")
      :format(argn, fname, typename(opts)), 3)
  end
  local limit, rest = nil, nil
  for k, v in pairs(opts) do
    if k == "limit" then
      limit = v
    else
      rest = rest or {}
      rest[k] = v
    end
  end
  if limit ~= nil and (math.type(limit) ~= "integer" or limit <= 0) then
    error(("bad argument #%d to '%s' (limit must be a positive integer, "
      .. "got %s)"):format(argn, fname, tostring(limit)), 3)
  end
  return limit, rest
end

-- open_connection(host, port, [opts]) -> reader, writer. Inside a task.
-- Host may be a name (resolved with getaddrinfo, each address tried in
-- turn); opts as create_connection's, plus limit.
function M.open_connection(host, port, opts)
  local limit, copts = split_opts(opts, "open_connection", 3)
  local loop = running_loop()
  if loop == nil then error("open_connection: no running event loop", 2) end
  local reader = core._StreamReader(limit)
  local protocol = new_protocol(reader)
  local transport = via("open_connection", 1,
    pcall(loop.create_connection, loop, function() return protocol end,
          host, port, copts))
  return reader, new_writer(transport, protocol, reader)
end

-- start_server(client_connected_cb, host, port, [opts]) -> server; each
-- connection runs client_connected_cb(reader, writer) as a task. A host
-- name gets one listening socket per address it resolves to.
function M.start_server(cb, host, port, opts)
  if not callable(cb) then
    error(("bad argument #1 to 'start_server' (function expected, got %s)")
      :format(typename(cb)), 2)
  end
  local limit, sopts = split_opts(opts, "start_server", 4)
  local loop = running_loop()
  if loop == nil then error("start_server: no running event loop", 2) end
  local function factory()
    return new_protocol(core._StreamReader(limit), cb)
  end
  local server = via("start_server", 0,
    pcall(loop.create_server, loop, factory, host, port, sopts))
  return server
end

-- open_unix_connection(path, [opts]) -> reader, writer. Inside a task.
function M.open_unix_connection(path, opts)
  local limit, copts = split_opts(opts, "open_unix_connection", 2)
  local loop = running_loop()
  if loop == nil then
    error("open_unix_connection: no running event loop", 2)
  end
  local reader = core._StreamReader(limit)
  local protocol = new_protocol(reader)
  local transport = via("open_unix_connection", 1,
    pcall(loop.create_unix_connection, loop, function() return protocol end,
          path, copts))
  return reader, new_writer(transport, protocol, reader)
end

-- start_unix_server(client_connected_cb, path, [opts]) -> server.
function M.start_unix_server(cb, path, opts)
  if not callable(cb) then
    error(("bad argument #1 to 'start_unix_server' (function expected, "
      .. "got %s)"):format(typename(cb)), 2)
  end
  local limit, sopts = split_opts(opts, "start_unix_server", 3)
  local loop = running_loop()
  if loop == nil then error("start_unix_server: no running event loop", 2) end
  local function factory()
    return new_protocol(core._StreamReader(limit), cb)
  end
  local server = via("start_unix_server", 0,
    pcall(loop.create_unix_server, loop, factory, path, sopts))
  return server
end


---------------------------------------------------------------- host names
--
-- host/tcp.c takes numeric addresses; given a name, create_connection
-- and create_server (inside a task) call these private loop methods,
-- which resolve it with loop:getaddrinfo and call back with numeric
-- addresses, as asyncio's create_connection and create_server do.



-- The error to raise when every address failed (asyncio's rule: the one
-- error when they all read the same, else "Multiple exceptions: ...").
local function connect_error(errs, host)
  if #errs == 0 then
    return OSError(("getaddrinfo returned no address for '%s'"):format(host),
                   { code = "EAI_NONAME" })
  end
  local first, same = tostring(errs[1]), true
  local msgs = {}
  for i, e in ipairs(errs) do
    msgs[i] = tostring(e)
    if msgs[i] ~= first then same = false end
  end
  if same then return errs[1] end
  return OSError("Multiple exceptions: " .. concat(msgs, ", "),
                 { code = type(errs[1]) == "table" and errs[1].code or nil,
                   errors = errs })
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- loop:_connect_by_name(factory, host, port, opts): tries each address
-- of host in the resolver's order; opts.local_addr may hold a name too
-- (an address of the same family is used for each attempt).
local function connect_by_name(loop, factory, host, port, opts)
  local addrs = loop:getaddrinfo(host, port, { socktype = "stream" })
  local locals
  local la = type(opts) == "table" and opts.local_addr or nil
  if type(la) == "table" and type(la.host) == "string" then
    locals = loop:getaddrinfo(la.host, la.port or 0,
                              { socktype = "stream", flags = { passive = true } })
  end
  local errs = {}
  for _, a in ipairs(addrs) do
    local o = opts
    local skip = false
    if locals ~= nil then
      skip = true
      for _, l in ipairs(locals) do
        if l.family == a.family then
          o = copy(opts)
          o.local_addr = { host = l.host, port = l.port }
          skip = false
          break
        end
      end
    end
    if not skip then
      local ok, t, p = pcall(loop.create_connection, loop, factory, a.host,
                             a.port, o)
      if ok then return t, p end
      if not OSError:is(t) then error(t, 0) end   -- cancelled, bad args
      errs[#errs + 1] = t
    end
  end
  if #errs == 0 and locals ~= nil then
    error(OSError(("no matching local address for '%s'"):format(host),
                  { code = "EADDRNOTAVAIL" }), 0)
  end
  error(connect_error(errs, host), 0)
end

-- loop:_serve_by_name(factory, host, port, opts): one listening socket
-- for each distinct address host resolves to.
local function serve_by_name(loop, factory, host, port, opts)
  local addrs = loop:getaddrinfo(host, port,
                                 { socktype = "stream", flags = { passive = true } })
  local hosts, seen = {}, {}
  for _, a in ipairs(addrs) do
    if not seen[a.host] then
      seen[a.host] = true
      hosts[#hosts + 1] = a.host
    end
  end
  if #hosts == 0 then error(connect_error({}, host), 0) end
  return loop:create_server(factory, hosts, port, opts)
end

core.interpose("loom.Loop", "_connect_by_name", connect_by_name)
core.interpose("loom.Loop", "_serve_by_name", serve_by_name)


---------------------------------------------------------------- timeouts
--
-- opts.timeout of create_connection and create_unix_connection (and so of
-- open_connection and open_unix_connection): seconds for the whole
-- connect, name resolution and every address tried included; past it the
-- attempt is cancelled (its socket closed) and TimeoutError raised.

local run_with_timeout = require("loom.combinators").timeout

local function without_timeout(opts)
  local o = copy(opts)
  o.timeout = nil
  return o
end

-- loop:_connect_timeout(factory, host, port, opts) and
-- loop:_unix_connect_timeout(factory, path, opts): host/tcp.c and
-- host/pipe.c call these, the arguments checked, when opts.timeout is set.
local function connect_timeout(loop, factory, host, port, opts)
  return run_with_timeout(opts.timeout, loop.create_connection, loop,
                          factory, host, port, without_timeout(opts))
end

local function unix_connect_timeout(loop, factory, path, opts)
  return run_with_timeout(opts.timeout, loop.create_unix_connection, loop,
                          factory, path, without_timeout(opts))
end

core.interpose("loom.Loop", "_connect_timeout", connect_timeout)
core.interpose("loom.Loop", "_unix_connect_timeout", unix_connect_timeout)


---------------------------------------------------------------- servers

local CancelledError = require("loom.errors").CancelledError

-- server:serve_forever(): starts serving if the server does not yet, then
-- awaits until server:close() (it then returns). Cancelling the task
-- awaiting it closes the server (its listening sockets: connections
-- already accepted stay open) and the cancellation goes on.
local function serve_forever(server)
  if typename(server) ~= "loom.Server" then
    error(("bad argument #1 to 'serve_forever' (loom.Server expected, got %s)")
      :format(typename(server)), 2)
  end
  if #server:sockets() == 0 then
    error("serve_forever: the server is closed", 2)
  end
  local fut = server:get_loop():create_future()
  local prev = server:_forever(fut)
  if prev ~= nil then
    server:_forever(prev)
    error("serve_forever: another task is already serving it forever", 2)
  end
  local ok, err = pcall(function()
    server:start_serving()
    await(fut)
  end)
  server:_forever(nil)
  if not ok then
    if CancelledError:is(err) then server:close() end
    error(err, 0)
  end
end

core.interpose("loom.Server", "serve_forever", serve_forever)

return M
