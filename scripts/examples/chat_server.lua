-- chat_server.lua: a line-based chat server with the streams API.
--   build/bin/loom scripts/examples/chat_server.lua [PORT] [HOST]
-- Listens on HOST (default 127.0.0.1) port PORT (default 25001; 0 picks a
-- free port) and prints "chat_server: listening on HOST:PORT" on stderr.
-- Try it with two or more `nc 127.0.0.1 PORT`.
--
-- A new client is asked for a name; its first line is the name (an empty
-- line, or a name already taken or not made of 1 to 24 letters, digits,
-- '-', '_' or '.', gives "guest-N"). Then every line it sends is broadcast
-- to every other client as "NAME: line". "/who" lists the people here,
-- "/quit" leaves. Joins and leaves are announced as "* NAME joined" and
-- "* NAME left". A client that stops reading is dropped once 1 MiB waits
-- for it (a broadcast never waits for a slow reader).
local loom = require "loom"

local port = tonumber(arg and arg[1]) or 25001
local host = arg and arg[2] or "127.0.0.1"

local MAX_QUEUED = 1024 * 1024
local clients = {}       -- writer -> name, in no particular order
local names = {}         -- name -> writer
local guests = 0

local function send(writer, text)
  if writer:is_closing() then return end
  writer:write(text)
  if writer.transport:get_write_buffer_size() > MAX_QUEUED then
    writer.transport:abort()   -- too slow: drop it (its task ends on the error)
  end
end

local function broadcast(from, text)
  for w in pairs(clients) do
    if w ~= from then send(w, text) end
  end
end

local function strip(line) return (line:gsub("\r?\n$", "")) end

local function session(reader, writer)
  writer:write("Welcome to loom chat. Your name (empty for a guest name)? ")
  local line = reader:readline()
  if line == "" then return end                 -- EOF before a name
  local name = strip(line)
  if not name:match("^[%w%-_.]+$") or #name > 24 or names[name] then
    repeat guests = guests + 1; name = "guest-" .. guests until not names[name]
  end
  local others = {}
  for _, n in pairs(clients) do others[#others + 1] = n end
  table.sort(others)
  clients[writer], names[name] = name, writer
  writer:write(("* you are %s; here: %s\n"):format(name,
    #others > 0 and table.concat(others, ", ") or "nobody else"))
  broadcast(writer, ("* %s joined\n"):format(name))
  for l in reader:lines() do
    local text = strip(l)
    if text == "/quit" then break
    elseif text == "/who" then
      local all = {}
      for _, n in pairs(clients) do all[#all + 1] = n end
      table.sort(all)
      send(writer, "* here: " .. table.concat(all, ", ") .. "\n")
    elseif text ~= "" then
      broadcast(writer, ("%s: %s\n"):format(name, text))
    end
  end
end

local function client_connected(reader, writer)
  -- A reset connection or a too-long line raises in the reads: either way
  -- the client is gone, and the cleanup below runs.
  local ok, err = pcall(session, reader, writer)
  local name = clients[writer]
  if name then
    clients[writer], names[name] = nil, nil
    broadcast(writer, ("* %s left\n"):format(name))
  end
  if not ok and not (type(err) == "table" and err.code) then
    io.stderr:write("chat_server: ", tostring(err), "\n")
  end
  writer:close()
end

local server = loom.start_server(client_connected, host, port, {backlog = 1024})
io.stderr:write(("chat_server: listening on %s:%d\n")
  :format(host, server:sockets()[1].port))
server:wait_closed()   -- never closed: serves until the process is killed
