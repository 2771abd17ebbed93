-- http_server.lua: an HTTP/1.1 hello-world server on the protocol API.
--   build/bin/loom scripts/examples/http_server.lua [PORT] [HOST] [CERT KEY]
-- Listens on HOST (default 127.0.0.1) port PORT (default 8080; 0 picks a
-- free port) and prints "http_server: listening on HOST:PORT" on stderr.
-- With CERT and KEY (PEM files) it serves HTTPS: TLS with that
-- certificate and key.
--
--   GET /  (or HEAD /)   200, "Hello, World!" (text/plain, Content-Length)
--   GET any other path   404
--   any other method     405 (a request body framed by Content-Length is
--                        read and skipped)
--   malformed request    400, then the connection is closed (after the
--                        client's EOF: a lingering close)
--
-- Keep-alive is the default for HTTP/1.1 (HTTP/1.0 only with
-- "Connection: keep-alive"); "Connection: close" is honoured (the response
-- says so and the connection closes after it). Pipelined requests (several
-- in one read) are answered in order, with one write per read.
-- Transfer-Encoding (chunked request bodies) is not supported: 501 and close.
--
-- The parser works on whole strings with string.find: it looks for the end
-- of the head ("\r\n\r\n"), matches the request line with one pattern, and
-- looks the three headers it needs up in the lower-cased header block.
-- Bytes that do not make a whole request yet wait in a per-connection
-- buffer. Used by scripts/bench/run.sh (workload http).
local loom = require "loom"

local port = tonumber(arg and arg[1]) or 8080
local host = arg and arg[2] or "127.0.0.1"
local cert, key = arg and arg[3], arg and arg[4]
local ssl = cert and loom.tls.context{ server = true, cert = cert,
                                       key = key or cert }

local find, sub, lower, match = string.find, string.sub, string.lower, string.match
local concat, tonumber = table.concat, tonumber

local MAX_HEAD = 8192          -- bytes of request line + headers
local MAX_BODY = 1024 * 1024   -- bytes of a (skipped) request body

local BODY = "Hello, World!"
local function response(status, body, extra, head_only)
  return ("HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s")
    :format(status, #body, extra or "", head_only and "" or body)
end
-- Responses are built once: a request costs a table lookup, not a format.
local OK, OK_CLOSE = response("200 OK", BODY), response("200 OK", BODY, "Connection: close\r\n")
local HEAD_OK = response("200 OK", BODY, nil, true)
local HEAD_OK_CLOSE = response("200 OK", BODY, "Connection: close\r\n", true)
local NOT_FOUND = response("404 Not Found", "Not Found\n")
local NOT_FOUND_CLOSE = response("404 Not Found", "Not Found\n", "Connection: close\r\n")
local NOT_ALLOWED = response("405 Method Not Allowed", "Method Not Allowed\n", "Allow: GET, HEAD\r\n")
local NOT_ALLOWED_CLOSE = response("405 Method Not Allowed", "Method Not Allowed\n",
  "Allow: GET, HEAD\r\nConnection: close\r\n")
local BAD = response("400 Bad Request", "Bad Request\n", "Connection: close\r\n")
local TOO_LARGE = response("413 Content Too Large", "Content Too Large\n", "Connection: close\r\n")
local NOT_IMPL = response("501 Not Implemented", "Not Implemented\n", "Connection: close\r\n")

-- The response to one parsed request (keep: whether the connection stays).
local function answer(method, target, keep)
  if method == "GET" or method == "HEAD" then
    local path = target == "/" and target or match(target, "^[^?#]*")
    if path == "/" then
      if method == "GET" then return keep and OK or OK_CLOSE end
      return keep and HEAD_OK or HEAD_OK_CLOSE
    end
    return keep and NOT_FOUND or NOT_FOUND_CLOSE
  end
  return keep and NOT_ALLOWED or NOT_ALLOWED_CLOSE
end

-- The value of header `name` (lower case, with its "\r\n" and ":") in the
-- lower-cased header block h, or nil. The block starts with "\r\n".
local function header(h, name)
  local i, j = find(h, name, 1, true)
  if i then return match(h, "^[ \t]*(.-)[ \t]*\r\n", j + 1) end
end

local Http = {}
Http.__index = Http

function Http:connection_made(transport)
  self.transport = transport
  self.buf = ""
end

-- Parses every whole request in buf; returns the responses (a string, a
-- list of strings, or nil), whether to close after them, and what is left
-- of buf (the start of an incomplete request).
local function parse(buf)
  local pos, n = 1, #buf
  local out, nout, single = nil, 0, nil
  local close = false
  while pos <= n do
    -- RFC 9112 2.2: empty lines before a request line are ignored.
    while sub(buf, pos, pos + 1) == "\r\n" do pos = pos + 2 end
    if pos > n then break end
    local hend = find(buf, "\r\n\r\n", pos, true)
    if not hend then
      if n - pos + 1 > MAX_HEAD then return BAD, true, "" end
      break
    end
    if hend - pos > MAX_HEAD then return BAD, true, "" end
    -- request line: METHOD SP target SP HTTP/1.x CRLF
    local _, le, method, target, minor = find(buf, "^(%u+) ([^%s%c]+) HTTP/1%.([01])\r\n", pos)
    local resp
    if not le then
      resp, close = BAD, true
    else
      local keep = minor == "1"
      local blen = 0
      if hend > le then  -- header lines: le+1 .. hend+1 (else hend == le-1)
        -- "\r\n" .. headers .. "\r\n", lower-cased, for plain finds
        local h = lower(sub(buf, le - 1, hend + 1))
        -- every header line needs a name and a colon; no obsolete folding
        if find(h, "\r\n[ \t:]") or find(h, "\r\n[^:\r\n]*\r\n") then
          resp, close = BAD, true
        else
          local conn = header(h, "\r\nconnection:")
          if conn then
            if find(conn, "close", 1, true) then keep = false
            elseif find(conn, "keep-alive", 1, true) then keep = true end
          end
          if find(h, "\r\ntransfer-encoding:", 1, true) then
            resp, close = NOT_IMPL, true
          else
            local cl = header(h, "\r\ncontent-length:")
            if cl then
              blen = match(cl, "^%d+$") and tonumber(cl)
              if not blen then resp, close = BAD, true
              elseif blen > MAX_BODY then resp, close = TOO_LARGE, true end
            end
            if not resp and minor == "1" and not find(h, "\r\nhost:", 1, true) then
              resp, close = BAD, true
            end
          end
        end
      elseif minor == "1" then
        resp, close = BAD, true            -- HTTP/1.1 requires Host
      end
      if not resp then
        if hend + 3 + blen > n then break  -- the body is not all here yet
        end
        resp = answer(method, target, keep)
        close = not keep
        pos = hend + 4 + blen
      end
    end
    if nout == 0 then single = resp
    else
      if nout == 1 then out = {single} end
      out[nout + 1] = resp
    end
    nout = nout + 1
    if close then return out or single, true, "" end
  end
  return out or single, false, pos > n and "" or sub(buf, pos)
end

local loop = loom.get_running_loop()

-- After a response that ends the connection: the response then FIN
-- (write_eof), reading on and dropping what the client still sends until
-- its EOF, at most LINGER seconds. Closing at once with unread input
-- would reset the connection, and a reset can destroy the response before
-- the client reads it (a lingering close, as HTTP servers do).
local LINGER = 2

function Http:data_received(data)
  if self.linger then return end
  local buf = self.buf
  if buf ~= "" then data = buf .. data end
  local resp, close, rest = parse(data)
  self.buf = rest
  local t = self.transport
  if resp then
    if type(resp) == "table" then t:write(concat(resp)) else t:write(resp) end
  end
  if close then
    if t:can_write_eof() then
      self.linger = loop:call_later(LINGER, function() t:close() end)
      t:write_eof()
    else
      t:close()   -- TLS: close_notify, then the close
    end
  end
end

function Http:connection_lost()
  if self.linger then self.linger:cancel() end
end
-- eof_received returns nothing: the transport closes on the peer's EOF
-- (every complete request before it was answered in data_received).

local function factory() return setmetatable({}, Http) end

local server = loop:create_server(factory, host, port,
                                 {backlog = 1024, ssl = ssl})
io.stderr:write(("http_server: listening on %s:%d\n")
  :format(host, server:sockets()[1].port))
server:wait_closed()   -- never closed: serves until the process is killed
