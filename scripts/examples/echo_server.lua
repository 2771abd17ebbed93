-- echo_server.lua: a TCP echo server, with asyncio's protocol API or with
-- its streams API.
--   build/bin/loom scripts/examples/echo_server.lua [PORT] [HOST] [MODE]
-- Listens on HOST (default 127.0.0.1) port PORT (default 25000), writes
-- back every byte it receives, and serves until killed. MODE is
--   protocol  (the default) loop:create_server with a protocol whose
--             data_received writes the data straight back;
--   streams   loom.start_server: each connection runs a task that loops
--             reader:read(1000000), writer:write(data), writer:drain()
--             until EOF, then closes the writer;
--   buffered  loop:create_server with a buffered protocol: get_buffer
--             gives the transport a loom.Buffer to read into, and
--             buffer_updated(n) writes its bytes 1..n back (no string
--             made per read). All connections share one Buffer: a read
--             fills it and buffer_updated empties it before any other
--             read, and write keeps a copy of what the socket did not
--             take at once.
-- In every mode TCP_NODELAY is on (loom sets it on every TCP transport).
-- Used by scripts/bench/run.sh (workload echo: loom, loom-streams and
-- loom-buffered);
-- prints one line on stderr.
local loom = require "loom"

local port = tonumber(arg and arg[1]) or 25000
local host = arg and arg[2] or "127.0.0.1"
local mode = arg and arg[3] or "protocol"
if mode ~= "protocol" and mode ~= "streams" and mode ~= "buffered" then
  io.stderr:write(("echo_server: unknown mode %q (protocol, streams or "
    .. "buffered)\n")
    :format(mode))
  os.exit(2)
end

local server
if mode == "protocol" then
  local Echo = {}
  Echo.__index = Echo
  function Echo:connection_made(transport) self.transport = transport end
  function Echo:data_received(data) self.transport:write(data) end
  -- eof_received returns nothing: the transport closes on the peer's EOF.

  local function factory() return setmetatable({}, Echo) end
  server = loom.get_running_loop():create_server(factory, host, port,
                                                 {backlog = 1024})
elseif mode == "buffered" then
  local Echo = {}
  Echo.__index = Echo
  function Echo:connection_made(transport) self.transport = transport end
  function Echo:get_buffer(sizehint) return self.buf end
  function Echo:buffer_updated(n) self.transport:write(self.buf, 1, n) end

  -- 256 KiB: a 100 KiB message in one read, as the protocol mode's
  local shared = loom.Buffer(256 * 1024)
  local function factory() return setmetatable({buf = shared}, Echo) end
  server = loom.get_running_loop():create_server(factory, host, port,
                                                 {backlog = 1024})
else
  local function echo(reader, writer)
    while true do
      local data = reader:read(1000000)
      if data == "" then break end          -- EOF
      writer:write(data)
      writer:drain()
    end
  end

  server = loom.start_server(function(reader, writer)
    -- A client that resets or vanishes ends its task quietly; anything
    -- else still goes to the loop's exception handler.
    local ok, err = pcall(echo, reader, writer)
    writer:close()
    if not ok and not loom.OSError:is(err) then error(err, 0) end
  end, host, port, {backlog = 1024})
end

io.stderr:write(("echo_server: %s API, listening on %s:%d\n")
  :format(mode, host, server:sockets()[1].port))
server:serve_forever()   -- serves until the process is killed
