-- echo_server.lua: a TCP echo server with asyncio's protocol API.
--   build/bin/loom scripts/examples/echo_server.lua [PORT] [HOST]
-- Listens on HOST (default 127.0.0.1) port PORT (default 25000), writes
-- back every byte it receives, and serves until killed. Used by
-- scripts/bench/run.sh (workload echo); prints one line on stderr.
local loom = require "loom"

local port = tonumber(arg and arg[1]) or 25000
local host = arg and arg[2] or "127.0.0.1"

local Echo = {}
Echo.__index = Echo
function Echo:connection_made(transport) self.transport = transport end
function Echo:data_received(data) self.transport:write(data) end
-- eof_received returns nothing: the transport closes on the peer's EOF.

local function factory() return setmetatable({}, Echo) end

local loop = loom.get_running_loop()
local server = loop:create_server(factory, host, port, {backlog = 1024})
io.stderr:write(("echo_server: listening on %s:%d\n")
  :format(host, server:sockets()[1].port))
server:wait_closed()   -- never closed: serves until the process is killed
