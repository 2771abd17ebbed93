-- multicore_echo.lua: a TCP echo server with one event loop per core.
--   build/bin/loom scripts/examples/multicore_echo.lua [PORT] [HOST] [LOOPS]
-- Starts LOOPS threads (default: one per CPU), each running its own loop
-- and its own echo server (asyncio's protocol API) on HOST (default
-- 127.0.0.1) port PORT (default 25000), all bound with reuse_port: the
-- kernel spreads the connections over the loops, so the server uses as
-- many cores. With PORT 0 the first loop picks a free port and the others
-- bind the same one. Prints one line on stderr once every loop listens,
-- then serves until killed.
-- Used by scripts/bench/run.sh (workload threads: echo on 1 and 2 loops).
local loom = require "loom"

local port = tonumber(arg and arg[1]) or 25000
local host = arg and arg[2] or "127.0.0.1"
local nloops = tonumber(arg and arg[3]) or loom.thread.cpu_count()

-- What each thread runs as its main task: an echo server on its own loop.
-- It reports the port it got on `ready`, then serves until the process
-- ends.
local function serve(h, p, ready)
  local Echo = {}
  Echo.__index = Echo
  function Echo:connection_made(transport) self.transport = transport end
  function Echo:data_received(data) self.transport:write(data) end

  local server = loom.get_running_loop():create_server(function()
    return setmetatable({}, Echo)
  end, h, p, { backlog = 1024, reuse_port = true })
  ready:send(server:sockets()[1].port)
  server:serve_forever()
end

local ready = loom.channel()
local threads = { loom.thread.start(serve, host, port, ready) }
port = ready:recv()                 -- the first loop's port (port 0: a free one)
for i = 2, nloops do
  threads[i] = loom.thread.start(serve, host, port, ready)
  ready:recv()
end

io.stderr:write(("multicore_echo: %d loops, listening on %s:%d\n")
  :format(nloops, host, port))
for _, t in ipairs(threads) do t:join() end   -- serves until killed
