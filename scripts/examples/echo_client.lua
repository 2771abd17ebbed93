-- echo_client.lua: a streams client for echo_server.lua.
--   build/bin/loom scripts/examples/echo_client.lua [[HOST:]PORT] [LINE ...]
-- Connects to HOST (default 127.0.0.1) port PORT (default 25000), sends
-- each LINE (or, with no LINE, each line read from stdin), waits for its
-- echo and prints it on stdout. Then it closes its write side and waits
-- for the server to close the connection. Exit status 1 when the
-- connection fails or an echo is missing or different.
--
-- Reading stdin blocks the loop while it waits; that is harmless here, as
-- this client has nothing else to do meanwhile.
local loom = require "loom"

local host, port = "127.0.0.1", 25000
local first = 1
if arg and arg[1] then
  local h, p = arg[1]:match("^(.*):(%d+)$")
  if p then host, port, first = h, tonumber(p), 2
  elseif arg[1]:match("^%d+$") then port, first = tonumber(arg[1]), 2 end
end

-- The lines to send: from the arguments, else from stdin (lazily).
local next_line
if arg and arg[first] then
  local i = first - 1
  next_line = function() i = i + 1; return arg[i] end
else
  next_line = function() return io.stdin:read("l") end
end

local ok, reader, writer = pcall(loom.open_connection, host, port)
if not ok then
  io.stderr:write(("echo_client: cannot connect to %s:%d: %s\n"):format(host, port, tostring(reader)))
  os.exit(1)
end

local status = 0
for line in next_line do
  writer:write(line .. "\n")
  writer:drain()
  local echo = reader:readline()
  if echo ~= line .. "\n" then
    io.stderr:write(("echo_client: expected %q, got %q\n"):format(line .. "\n", echo))
    status = 1
    break
  end
  io.stdout:write(echo)
  io.stdout:flush()
end
writer:write_eof()
reader:read(-1)          -- until the server closes (it does on our EOF)
writer:close()
writer:wait_closed()
if status ~= 0 then os.exit(status) end
