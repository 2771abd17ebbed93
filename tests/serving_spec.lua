-- serving_spec.lua: servers that start serving later or forever, connect
-- timeouts, the socket behind a transport, abstract Unix socket names
-- (host/stream.c, host/tcp.c, host/pipe.c, host/socket.c,
-- lua/loom/streams.lua).
local H = require "helper"
local loom = require "loom"
local core = require "loom.core"
H.setup()

local rtloop = H.rtloop

local run = H.run_task

local function echo_factory()
  return {
    connection_made = function(self, t) self.t = t end,
    data_received = function(self, d) self.t:write(d) end,
  }
end

local function quiet() return {} end

-- One line through a stream connection to port: what comes back.
local function roundtrip(port, line)
  local r, w <close> = loom.open_connection("127.0.0.1", port)
  w:write(line .. "\n")
  local got = r:readline()
  w:close()
  return got
end

local linux = io.open("/proc/version") ~= nil

describe("start_serving = false", function()
  it("binds without listening until start_serving()", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0,
                                        {start_serving = false})
      assert.is_false(server:is_serving())
      local port = server:sockets()[1].port
      assert.is_true(port > 0)
      local ok, err = pcall(loom.open_connection, "127.0.0.1", port)
      assert.is_false(ok)
      assert.are.equal("ECONNREFUSED", err.code)
      server:start_serving()
      assert.is_true(server:is_serving())
      server:start_serving()   -- a no-op when serving
      assert.are.equal("ping\n", roundtrip(port, "ping"))
      server:close()
      assert.is_false(server:is_serving())
      H.contains("start_serving: the server is closed",
                 H.raised(server.start_serving, server))
      server:wait_closed()
    end)
  end)

  it("works for Unix servers too", function()
    local loop = rtloop()
    local path = os.tmpname()
    os.remove(path)
    run(loop, function()
      local server = loop:create_unix_server(echo_factory, path,
                                             {start_serving = false})
      assert.is_false(server:is_serving())
      local ok = pcall(loom.open_unix_connection, path)
      assert.is_false(ok)
      server:start_serving()
      local r, w = loom.open_unix_connection(path)
      w:write("unix\n")
      assert.are.equal("unix\n", r:readline())
      w:close()
      server:close()
      server:wait_closed()
    end)
    os.remove(path)
  end)
end)

describe("serve_forever", function()
  it("starts serving and returns when the server is closed", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0,
                                        {start_serving = false})
      local port = server:sockets()[1].port
      local task = loom.create_task(function()
        server:serve_forever()
        return "returned"
      end)
      loom.sleep(0)
      assert.is_true(server:is_serving())
      assert.are.equal("a\n", roundtrip(port, "a"))
      -- a second serve_forever on the same server is an error
      H.contains("another task is already serving it forever",
                 H.raised(server.serve_forever, server))
      assert.is_false(task:done())
      server:close()
      assert.are.equal("returned", task:await())
      H.contains("serve_forever: the server is closed",
                 H.raised(server.serve_forever, server))
      H.contains("bad argument #1 to 'serve_forever' (loom.Server expected, got nil)",
                 H.raised(server.serve_forever, nil))
    end)
  end)

  it("cancelling it closes the server and keeps cancelling", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(function(r, w)
        w:write(r:readline())
        w:close()
      end, "127.0.0.1", 0)
      local port = server:sockets()[1].port
      local task = loom.create_task(function() server:serve_forever() end)
      loom.sleep(0)
      assert.are.equal("b\n", roundtrip(port, "b"))
      task:cancel()
      local ok, err = pcall(task.await, task)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(err))
      assert.is_true(task:cancelled())
      assert.is_false(server:is_serving())
      assert.are.equal(0, #server:sockets())
      local refused = pcall(loom.open_connection, "127.0.0.1", port)
      assert.is_false(refused)
      server:wait_closed()
      -- closed again: serve_forever can be awaited by a new task no more
      H.contains("the server is closed", H.raised(server.serve_forever, server))
    end)
  end)

  it("a server closed with <close> ends serve_forever", function()
    local loop = rtloop()
    run(loop, function()
      local done
      do
        local server <close> = loop:create_server(echo_factory, "127.0.0.1", 0)
        done = loom.create_task(function() server:serve_forever(); return true end)
        loom.sleep(0)
      end
      assert.is_true(done:await())
    end)
  end)
end)

describe("connect timeout", function()
  -- A listener nobody accepts on: once its queue is full (backlog 0 holds
  -- one connection), further connects wait for retransmissions.
  local function full_listener(loop)
    local fd, port = core._listen(0)
    assert.is_number(fd, port)
    local first = loop:create_connection(quiet, "127.0.0.1", port)
    return fd, port, first
  end

  it("raises TimeoutError and closes the attempt", function()
    local loop = rtloop()
    run(loop, function()
      local fd, port, first = full_listener(loop)
      local made = 0
      local t0 = loop:time()
      local ok, err = pcall(loop.create_connection, loop, function()
        made = made + 1
        return {}
      end, "127.0.0.1", port, {timeout = 0.2})
      local elapsed = loop:time() - t0
      assert.is_false(ok)
      assert.is_true(loom.TimeoutError:is(err), tostring(err))
      assert.is_true(elapsed >= 0.19, tostring(elapsed))
      assert.are.equal(0, made)
      -- and with the stream API, its opts passing through
      local ok2, err2 = pcall(loom.open_connection, "127.0.0.1", port,
                              {timeout = 0.05, limit = 100})
      assert.is_false(ok2)
      assert.is_true(loom.TimeoutError:is(err2), tostring(err2))
      first:abort()
      core._close(fd)
    end)
  end)

  it("does not fire when the connection is made in time", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local port = server:sockets()[1].port
      local t, p = loop:create_connection(quiet, "127.0.0.1", port, {timeout = 5})
      assert.is_false(t:is_closing())
      assert.is_table(p)
      loom.sleep(0.05)
      assert.is_false(t:is_closing())
      t:close()
      -- with a name to resolve, and timeout 0 still allows nothing to wait
      local t2 = loop:create_connection(quiet, "localhost", port, {timeout = 5})
      t2:close()
      server:close()
      server:wait_closed()
    end)
  end)

  it("rejects bad timeouts naming the function", function()
    local loop = rtloop()
    run(loop, function()
      for _, bad in ipairs{-1, "1", 0 / 0, true} do
        local msg = H.raised(function()
          return loop:create_connection(quiet, "127.0.0.1", 9, {timeout = bad})
        end)
        H.contains("bad argument #4 to 'create_connection' (timeout must be a number >= 0)", msg)
      end
      H.contains("bad argument #3 to 'create_unix_connection' (timeout must be",
                 H.raised(function()
                   return loop:create_unix_connection(quiet, "/nonexistent", {timeout = -2})
                 end))
    end)
  end)

  it("applies to Unix connections", function()
    local loop = rtloop()
    run(loop, function()
      local ok, err = pcall(loop.create_unix_connection, loop, quiet,
                            "/nonexistent/loom.sock", {timeout = 1})
      assert.is_false(ok)
      assert.are.equal("ENOENT", err.code)
    end)
  end)
end)

describe("get_extra_info('socket')", function()
  it("gives the TCP socket: fd, family, type, names, options", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local port = server:sockets()[1].port
      local t = loop:create_connection(quiet, "127.0.0.1", port)
      local s = t:get_extra_info("socket")
      H.contains("loom.TransportSocket (fd ", tostring(s))
      assert.is_true(s:fileno() > 2)
      assert.are.equal("inet", s.family)
      assert.are.equal("stream", s.type)
      assert.are.equal(port, s:getpeername().port)
      assert.are.same(t:get_extra_info("sockname"), s:getsockname())
      assert.is_true(s:getsockopt("tcp_nodelay"))   -- on by default
      s:setsockopt("tcp_nodelay", false)
      assert.is_false(s:getsockopt("tcp_nodelay"))
      s:setsockopt("so_keepalive", true)
      assert.is_true(s:getsockopt("so_keepalive"))
      s:setsockopt("so_rcvbuf", 65536)
      assert.is_true(s:getsockopt("so_rcvbuf") >= 65536)
      assert.are.equal(0, s:getsockopt("so_error"))
      H.contains("unknown socket option 'SO_NOPE'", H.raised(s.getsockopt, s, "SO_NOPE"))
      H.contains("socket option name contains a zero byte",
        H.raised(s.setsockopt, s, "tcp_nodelay\0x", true))
      H.contains("boolean expected", H.raised(s.setsockopt, s, "tcp_nodelay", 1))
      H.contains("number expected", H.raised(s.setsockopt, s, "so_sndbuf", true))
      H.contains("so_error can only be read", H.raised(s.setsockopt, s, "so_error", 1))
      H.contains("out of range", H.raised(s.setsockopt, s, "so_sndbuf", -1))
      t:close()
      loom.sleep(0)
      -- closed: looked up again at each call
      assert.are.equal(-1, s:fileno())
      H.contains("loom.TransportSocket (closed)", tostring(s))
      H.contains("getsockname: the transport is closed", H.raised(s.getsockname, s))
      H.contains("the transport is closed", H.raised(s.getsockopt, s, "tcp_nodelay"))
      assert.is_nil(t:get_extra_info("socket"))
      assert.are.equal("dflt", t:get_extra_info("socket", "dflt"))
      server:close()
      server:wait_closed()
    end)
  end)

  it("gives Unix and UDP sockets too", function()
    local loop = rtloop()
    local path = os.tmpname()
    os.remove(path)
    run(loop, function()
      local server = loop:create_unix_server(echo_factory, path)
      local t = loop:create_unix_connection(quiet, path)
      local s = t:get_extra_info("socket")
      assert.are.equal("unix", s.family)
      assert.are.equal("stream", s.type)
      assert.are.equal(path, s:getpeername())
      assert.are.equal("", s:getsockname())
      t:close()
      server:close()
      server:wait_closed()
      local u = loop:create_datagram_endpoint(quiet, {local_addr = {host = "127.0.0.1", port = 0}})
      local us = u:get_extra_info("socket")
      assert.are.equal("dgram", us.type)
      assert.are.equal("inet", us.family)
      assert.are.same(u:get_extra_info("sockname"), us:getsockname())
      us:setsockopt("so_broadcast", true)
      assert.is_true(us:getsockopt("so_broadcast"))
      u:close()
      loom.sleep(0)
      assert.are.equal(-1, us:fileno())
    end)
    os.remove(path)
  end)

  it("keeps its transport alive, and both collect without a leak", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local port = server:sockets()[1].port
      local s
      do
        local t = loop:create_connection(quiet, "127.0.0.1", port)
        s = t:get_extra_info("socket")
        t:abort()
      end
      collectgarbage()
      loom.sleep(0)
      assert.are.equal(-1, s:fileno())
      s = nil
      collectgarbage()
      server:close()
      server:wait_closed()
    end)
  end)
end)

describe("abstract Unix socket names", function()
  if not linux then
    it("are rejected off Linux", function()
      local loop = rtloop()
      H.contains("exist only on Linux",
                 H.raised(loop.create_unix_server, loop, echo_factory, "\0x"))
    end)
    return
  end

  it("serve and connect without a file, the name given back", function()
    local loop = rtloop()
    local name = "\0loom-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
    run(loop, function()
      local server = loop:create_unix_server(echo_factory, name)
      assert.are.equal(name, server:sockets()[1])
      local r, w = loom.open_unix_connection(name)
      w:write("abstract\n")
      assert.are.equal("abstract\n", r:readline())
      assert.are.equal(name, w:get_extra_info("peername"))
      w:close()
      -- the name is taken while the server lives
      local ok, err = pcall(loop.create_unix_server, loop, echo_factory, name)
      assert.is_false(ok)
      assert.are.equal("EADDRINUSE", err.code)
      server:close()
      server:wait_closed()
      -- and free once it is closed
      local again = loop:create_unix_server(echo_factory, name)
      again:close()
      again:wait_closed()
      -- nobody listening
      local ok2, err2 = pcall(loop.create_unix_connection, loop, quiet, name)
      assert.is_false(ok2)
      assert.are.equal("ECONNREFUSED", err2.code)
    end)
  end)

  it("may hold zero bytes after the first, and are bounded", function()
    local loop = rtloop()
    run(loop, function()
      local name = "\0a\0b" .. tostring(math.random(1e9))
      local server = loop:create_unix_server(echo_factory, name)
      local t = loop:create_unix_connection(quiet, name)
      assert.are.equal(name, t:get_extra_info("peername"))
      t:close()
      server:close()
      server:wait_closed()
      H.contains("path too long (109 bytes, at most 108)",
                 H.raised(loop.create_unix_server, loop, echo_factory, "\0" .. ("x"):rep(108)))
      -- a zero byte anywhere but first is still an error
      H.contains("path contains an embedded zero",
                 H.raised(loop.create_unix_server, loop, echo_factory, "a\0b"))
    end)
  end)
end)
