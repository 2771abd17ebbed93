-- tls_echo.lua: a TLS echo server (protocol API) for scripts/bench/run.sh tls.
--   build/bin/loom scripts/bench/tls_echo.lua PORT CERT KEY
-- Writes back every byte it receives over TLS, until killed; prints one
-- line on stderr once it listens.
local loom = require "loom"

local port = assert(tonumber(arg[1]), "port expected")
local ctx = loom.tls.context{ server = true, cert = arg[2], key = arg[3] }

local Echo = {}
Echo.__index = Echo
function Echo:connection_made(transport) self.transport = transport end
function Echo:data_received(data) self.transport:write(data) end

local loop = loom.get_running_loop()
local server = loop:create_server(function() return setmetatable({}, Echo) end,
                                  "127.0.0.1", port,
                                  { backlog = 1024, ssl = ctx })
io.stderr:write(("tls_echo: listening on 127.0.0.1:%d\n"):format(port))
server:wait_closed()
