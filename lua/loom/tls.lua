-- loom.tls: TLS contexts (loom.tls.context) and the ssl options of the
-- loop's connection and server methods, loop:start_tls, after asyncio's
-- base_events.py and sslproto.py.
--
-- The TLS layer itself is C (host/tls.c): a protocol that sits on a
-- plain stream transport and a transport that the application's protocol
-- sees. This file only puts it between the two: create_connection and
-- create_server (and their Unix variants) with opts.ssl make the plain
-- connection with a factory that wraps the application's protocol, then
-- await the handshake.

local core = require "loom.core"
local errors = require "loom.errors"
local util = require "loom.util"

local type, error, pcall, pairs = type, error, pcall, pairs
local callable, typename = util.callable, util.typename
local await = core.await

local wrap = core._tls_wrap
local new_context = core._tls_context

local M = {}
local tls = {}
M.tls = tls

-- tls.context{...}: see docs/tls.md.
tls.context = new_context

-- tls.is_context(v): whether v is a context.
local is_context = core._tls_is_context
tls.is_context = is_context

-- ssl = true: a client context with the defaults (the system's CAs,
-- verification and host name checks), made once.
local default_client
local function client_default()
  if default_client == nil then default_client = new_context {} end
  return default_client
end

local ssl_keys = { ssl = true, server_hostname = true,
                   ssl_handshake_timeout = true, ssl_shutdown_timeout = true }

-- Raises the argument error of the loop method fname, as luaL_argerror
-- in the C methods does (without a position: the methods here run below
-- them).
-- level: error's (3 from a function called by the one that was given
-- the bad argument); none: no position.
local function argerr(fname, argn, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(argn, fname, msg),
        level or 0)
end

local function check_timeout(opts, key, fname, argn, level)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "number" or not (v > 0)) then
    argerr(fname, argn, key .. " must be a number > 0", level)
  end
  return v
end

-- Splits opts into the TLS settings and the rest (for the plain method).
-- server: whether the method serves. Returns ctx (nil: no TLS),
-- server_hostname, handshake timeout, shutdown timeout, rest.
local function split(opts, fname, argn, server)
  local ctx = opts.ssl
  if ctx == nil or ctx == false then
    for k in pairs(ssl_keys) do
      if k ~= "ssl" and opts[k] ~= nil then
        argerr(fname, argn, k .. " is only meaningful with ssl")
      end
    end
  end
  if ctx == true and not server then ctx = client_default() end
  if ctx ~= nil and ctx ~= false and not is_context(ctx) then
    argerr(fname, argn, "ssl must be a loom.tls.Context"
      .. (server and "" or " or true") .. ", got " .. typename(ctx))
  end
  if ctx == false then ctx = nil end
  if ctx ~= nil and ctx:is_server() ~= server then
    argerr(fname, argn, server
      and "ssl is a client context (a server needs server = true)"
      or "ssl is a server context (make a client one without server = true)")
  end
  local host = opts.server_hostname
  if host ~= nil then
    if server then argerr(fname, argn, "server_hostname is for clients") end
    if type(host) ~= "string" or host:find("\0", 1, true) then
      argerr(fname, argn, "server_hostname must be a string without zeros")
    end
  end
  local hs = check_timeout(opts, "ssl_handshake_timeout", fname, argn)
  local sd = check_timeout(opts, "ssl_shutdown_timeout", fname, argn)
  local rest = {}
  for k, v in pairs(opts) do
    if not ssl_keys[k] then rest[k] = v end
  end
  return ctx, host, hs, sd, rest
end

-- Awaits the handshake's waiter; on any failure (cancelling included)
-- the connection goes, and the error is raised.
local function handshake(waiter, tt)
  local ok, err = pcall(await, waiter)
  if not ok then
    if tt ~= nil then tt:abort() end
    error(err, 0)
  end
end

-- loop:_tls_connection(factory, host, port, opts) and
-- loop:_tls_unix_connection(factory, path, opts): host/tcp.c and
-- host/pipe.c call these (the arguments checked) when opts has TLS
-- options. They connect with a factory that puts the TLS layer under the
-- application's protocol, then await the handshake.
local function client(method, fname, nargs)
  local argn = nargs + 2
  return function(loop, factory, a, b, c)
    local opts = nargs == 2 and c or b
    local ctx, host, hs, sd, rest = split(opts, fname, argn, false)
    if ctx == nil then
      if nargs == 2 then return loop[method](loop, factory, a, b, rest) end
      return loop[method](loop, factory, a, rest)
    end
    if host == nil and nargs == 2 and type(a) == "string" then host = a end
    if host == nil and ctx:check_hostname() then
      argerr(fname, argn, "server_hostname is needed: the context checks "
        .. "host names")
    end
    local waiter = loop:create_future()
    local tt, app
    local function tls_factory()
      app = factory()
      local p
      p, tt = wrap(loop, ctx, app, false, host, waiter, hs, sd, true)
      return p
    end
    if nargs == 2 then loop[method](loop, tls_factory, a, b, rest)
    else loop[method](loop, tls_factory, a, rest) end
    handshake(waiter, tt)
    return tt, app
  end
end

-- loop:_tls_server(factory, host, port, opts) and
-- loop:_tls_unix_server(factory, path, opts): every accepted connection
-- gets a TLS layer; the application's protocol is made at once, its
-- connection_made comes after the handshake.
local function server(method, fname, nargs)
  local argn = nargs + 2
  return function(loop, factory, a, b, c)
    local opts = nargs == 2 and c or b
    local ctx, _, hs, sd, rest = split(opts, fname, argn, true)
    local f = factory
    if ctx ~= nil then
      f = function()
        local p = wrap(loop, ctx, factory(), true, nil, nil, hs, sd, true)
        return p
      end
    end
    if nargs == 2 then return loop[method](loop, f, a, b, rest) end
    return loop[method](loop, f, a, rest)
  end
end

local LOOP = "loom.Loop"
core.interpose(LOOP, "_tls_connection",
               client("create_connection", "create_connection", 2))
core.interpose(LOOP, "_tls_unix_connection",
               client("create_unix_connection", "create_unix_connection", 1))
core.interpose(LOOP, "_tls_server",
               server("create_server", "create_server", 2))
core.interpose(LOOP, "_tls_unix_server",
               server("create_unix_server", "create_unix_server", 1))

-- loop:start_tls(transport, protocol, ctx, [opts]) -> the TLS transport:
-- upgrades a plain connection in place. opts: server_side (default: the
-- context's), server_hostname, ssl_handshake_timeout,
-- ssl_shutdown_timeout. Inside a task; raises when the handshake fails
-- (the connection is then closed).
local function start_tls(loop, transport, protocol, ctx, opts)
  local fname = "start_tls"
  -- raised at the line that called start_tls
  local function bad(argn, msg) argerr(fname, argn, msg, 4) end
  local tty = type(transport)
  if (tty ~= "userdata" and tty ~= "table")
      or not callable(transport.set_protocol) then
    bad(1, "transport expected, got " .. typename(transport))
  end
  local pty = type(protocol)
  if pty ~= "table" and pty ~= "userdata" then
    bad(2, "protocol (table) expected, got " .. typename(protocol))
  end
  if not is_context(ctx) then
    bad(3, "loom.tls.Context expected, got " .. typename(ctx))
  end
  if opts ~= nil and type(opts) ~= "table" then
    bad(4, "table expected, got " .. typename(opts))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "server_side" and k ~= "server_hostname"
        and k ~= "ssl_handshake_timeout" and k ~= "ssl_shutdown_timeout" then
      bad(4, ("unknown option '%s'"):format(tostring(k)))
    end
  end
  local server_side = opts.server_side
  if server_side == nil then server_side = ctx:is_server() end
  if (server_side and true or false) ~= ctx:is_server() then
    bad(4, server_side
      and "server_side needs a server context (server = true)"
      or "a client connection needs a client context")
  end
  local host = opts.server_hostname
  if host ~= nil and (type(host) ~= "string" or server_side) then
    bad(4, "server_hostname must be a string, for clients")
  end
  if host ~= nil and host:find("\0", 1, true) then
    bad(4, "server_hostname must be a string without zeros")
  end
  local hs = check_timeout(opts, "ssl_handshake_timeout", fname, 4, 4)
  local sd = check_timeout(opts, "ssl_shutdown_timeout", fname, 4, 4)
  if not server_side and host == nil and ctx:check_hostname() then
    bad(4, "server_hostname is needed: the context checks host "
      .. "names")
  end
  if transport:is_closing() then
    error(errors.OSError("start_tls: the transport is closing",
                         { code = "EPIPE" }), 2)
  end
  local waiter = loop:create_future()
  local p, tt = wrap(loop, ctx, protocol, server_side, host, waiter, hs, sd,
                     false)
  transport:pause_reading()
  transport:set_protocol(p)
  p:connection_made(transport)
  transport:resume_reading()
  handshake(waiter, tt)
  return tt
end

core.interpose(LOOP, "start_tls", start_tls)

return M
