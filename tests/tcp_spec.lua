-- tcp_spec.lua: TCP transports and servers (host/tcp.c).
local H = require "helper"
local loom = require "loom"
H.setup()

local rtloop = H.rtloop

local run = H.run_task

-- A protocol class: methods record into self.log; callbacks optional.
local function proto(extra)
  local p = { log = {}, chunks = {}, lost = 0 }
  p.connection_made = function(self, t) self.t = t; self.log[#self.log + 1] = "made" end
  p.data_received = function(self, d) self.chunks[#self.chunks + 1] = d end
  p.eof_received = function(self) self.log[#self.log + 1] = "eof" end
  p.connection_lost = function(self, e)
    self.lost = self.lost + 1; self.err = e; self.log[#self.log + 1] = "lost"
    if self.on_lost then self.on_lost:set_result(true) end
  end
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

local function echo_factory()
  return {
    connection_made = function(self, t) self.t = t end,
    data_received = function(self, d) self.t:write(d) end,
    eof_received = function(self) self.t:close() end,
  }
end

local function pattern(n)
  local parts, s = {}, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
  local whole = s:rep(math.ceil(n / #s) + 1)
  for i = 0, 7 do parts[#parts + 1] = whole:sub(i + 1, i + 1) end
  return whole:sub(1, n)
end

local port_of = H.port_of

describe("tcp", function()
  it("echoes several sizes through protocols, every byte checked", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local port = port_of(server)
      for _, n in ipairs{1, 1000, 65536, 300000, 3 * 1024 * 1024} do
        local p = proto()
        p.on_lost = loop:create_future()
        local paused, resumed = 0, 0
        p.pause_writing = function() paused = paused + 1 end
        p.resume_writing = function() resumed = resumed + 1 end
        local t, pr = loop:create_connection(function() return p end, "127.0.0.1", port)
        assert.are.equal(p, pr)
        assert.are.equal(t, p.t)
        local data = pattern(n)
        t:write(data)
        t:write_eof()
        p.on_lost:await()
        local got = table.concat(p.chunks)
        assert.are.equal(#data, #got)
        assert.is_true(got == data)
        assert.are.same({"made", "eof", "lost"}, p.log)
        assert.is_nil(p.err)
        assert.are.equal(paused, resumed)  -- every pause was resumed
      end
      server:close()
      server:wait_closed()
    end, 30)
  end)

  it("echoes over IPv6 and with several clients at once", function()
    local loop = rtloop()
    run(loop, function()
      local ok6, server = pcall(loop.create_server, loop, echo_factory, "::1", 0)
      if not ok6 then server = loop:create_server(echo_factory, "127.0.0.1", 0) end
      local host = server:sockets()[1].host
      local port = port_of(server)
      local tasks = {}
      for i = 1, 10 do
        tasks[i] = loom.create_task(function()
          local p = proto()
          p.on_lost = loop:create_future()
          local t = loop:create_connection(function() return p end, host, port)
          local data = pattern(10000 + i)
          t:writelines{data:sub(1, 5), data:sub(6)}
          t:write_eof()
          p.on_lost:await()
          assert.is_true(table.concat(p.chunks) == data)
          return true
        end)
      end
      for i = 1, 10 do assert.is_true(tasks[i]:await()) end
      server:close()
      server:wait_closed()
    end)
  end)

  it("raises OSError ECONNREFUSED", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local port = port_of(server)
      server:close()
      server:wait_closed()
      local ok, e = pcall(loop.create_connection, loop, proto, "127.0.0.1", port)
      assert.is_false(ok)
      assert.are.equal("ECONNREFUSED", e.code)
      assert.is_true(loom.OSError:is(e))
      H.contains("ECONNREFUSED", tostring(e))
    end)
  end)

  it("keeps a half-open transport when eof_received returns true", function()
    local loop = rtloop()
    run(loop, function()
      local sp
      local server = loop:create_server(function()
        sp = proto{ eof_received = function(self)
          self.log[#self.log + 1] = "eof"
          self.t:write("reply:" .. table.concat(self.chunks))
          self.t:close()
          return true
        end }
        return sp
      end, "127.0.0.1", 0)
      local p = proto()
      p.on_lost = loop:create_future()
      local t = loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      assert.is_true(t:can_write_eof())
      t:write("hello")
      t:write_eof()
      assert.has_error(function() t:write("x") end)
      p.on_lost:await()
      assert.are.equal("reply:hello", table.concat(p.chunks))
      assert.are.same({"made", "eof", "lost"}, p.log)
      assert.are.same({"made", "eof", "lost"}, sp.log)
      server:close()
      server:wait_closed()
    end)
  end)

  it("close flushes, abort does not; connection_lost once; writes after close ignored", function()
    local loop = rtloop()
    run(loop, function()
      local sps = {}
      local server = loop:create_server(function()
        local p = proto()
        p.on_lost = loop:create_future()
        sps[#sps + 1] = p
        return p
      end, "127.0.0.1", 0)
      local port = port_of(server)
      -- close: everything arrives
      local p1 = proto()
      p1.on_lost = loop:create_future()
      local t1 = loop:create_connection(function() return p1 end, "127.0.0.1", port)
      local big = pattern(2 * 1024 * 1024)
      t1:write(big)
      t1:close()
      assert.is_true(t1:is_closing())
      t1:write("ignored")
      t1:close()
      t1:abort()
      p1.on_lost:await()
      loom.sleep(0.05)
      sps[1].on_lost:await()
      assert.is_true(table.concat(sps[1].chunks) == big)
      assert.are.equal(1, p1.lost)
      assert.is_nil(p1.err)
      -- abort: connection_lost(nil) at once, peer sees the end
      local p2 = proto()
      p2.on_lost = loop:create_future()
      local t2 = loop:create_connection(function() return p2 end, "127.0.0.1", port)
      t2:write(big)
      t2:abort()
      t2:abort()
      p2.on_lost:await()
      assert.are.equal(1, p2.lost)
      assert.is_nil(p2.err)
      sps[2].on_lost:await()
      assert.are.equal(1, sps[2].lost)
      assert.is_true(#table.concat(sps[2].chunks) <= #big)
      server:close()
      server:wait_closed()
    end)
  end)

  it("reports a raising protocol callback, closes that connection, keeps serving", function()
    local loop = rtloop()
    local got = H.capture(loop)
    run(loop, function()
      local n = 0
      local sp = {}
      local server = loop:create_server(function()
        n = n + 1
        local p = proto()
        p.on_lost = loop:create_future()
        if n == 1 then
          p.data_received = function() error("boom") end
        else
          p.data_received = function(self, d) self.t:write(d) end
        end
        sp[n] = p
        return p
      end, "127.0.0.1", 0)
      local port = port_of(server)
      local c1 = proto()
      c1.on_lost = loop:create_future()
      local t1 = loop:create_connection(function() return c1 end, "127.0.0.1", port)
      t1:write("x")
      c1.on_lost:await()
      sp[1].on_lost:await()
      H.contains("boom", tostring(sp[1].err))
      assert.are.equal(1, #got)
      assert.are.equal("Fatal error: protocol.data_received() call failed.", got[1].message)
      H.contains("boom", tostring(got[1].exception))
      assert.are.equal(sp[1], got[1].protocol)
      assert.are.equal(sp[1].t, got[1].transport)
      -- second client still served
      local c2 = proto()
      local done = loop:create_future()
      c2.data_received = function(self, d) done:set_result(d) end
      local t2 = loop:create_connection(function() return c2 end, "127.0.0.1", port)
      t2:write("again")
      assert.are.equal("again", done:await())
      t2:close()
      server:close()
      server:wait_closed()
    end)
  end)

  it("pause_reading and resume_reading", function()
    local loop = rtloop()
    run(loop, function()
      local sp
      local server = loop:create_server(function() sp = proto(); return sp end,
        "127.0.0.1", 0)
      local p = proto()
      p.on_lost = loop:create_future()
      local t = loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      while not sp do loom.sleep(0.001) end
      assert.is_true(sp.t:is_reading())
      sp.t:pause_reading()
      sp.t:pause_reading()
      assert.is_false(sp.t:is_reading())
      t:write("abc")
      loom.sleep(0.05)
      assert.are.equal(0, #sp.chunks)
      sp.t:resume_reading()
      assert.is_true(sp.t:is_reading())
      for _ = 1, 100 do
        if #sp.chunks > 0 then break end
        loom.sleep(0.005)
      end
      assert.are.equal("abc", table.concat(sp.chunks))
      t:close()
      p.on_lost:await()
      server:close()
      server:wait_closed()
    end)
  end)

  it("write buffer limits, pause_writing and resume_writing", function()
    local loop = rtloop()
    run(loop, function()
      local sp
      local server = loop:create_server(function()
        sp = proto()
        sp.connection_made = function(self, t) self.t = t; t:pause_reading() end
        return sp
      end, "127.0.0.1", 0)
      local trace, add = H.tracer()
      local p = proto{ pause_writing = function() add("pause") end,
                       resume_writing = function() add("resume") end }
      p.on_lost = loop:create_future()
      local t = loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      assert.are.same({16384, 65536}, {t:get_write_buffer_limits()})
      t:set_write_buffer_limits(1000)
      assert.are.same({250, 1000}, {t:get_write_buffer_limits()})
      t:set_write_buffer_limits(nil, 100)
      assert.are.same({100, 400}, {t:get_write_buffer_limits()})
      assert.has_error(function() t:set_write_buffer_limits(10, 20) end)
      t:set_write_buffer_limits(100000, 50000)
      local chunk = pattern(65536)
      local sent = 0
      while #trace == 0 and sent < 64 * 1024 * 1024 do
        t:write(chunk)
        sent = sent + #chunk
      end
      assert.are.same({"pause"}, trace)
      assert.is_true(t:get_write_buffer_size() > 100000)
      while not sp do loom.sleep(0.001) end
      sp.t:resume_reading()
      for _ = 1, 2000 do
        if #trace == 2 then break end
        loom.sleep(0.005)
      end
      assert.are.same({"pause", "resume"}, trace)
      assert.is_true(t:get_write_buffer_size() <= 50000)
      t:close()
      p.on_lost:await()
      for _ = 1, 2000 do
        if #table.concat(sp.chunks) == sent then break end
        loom.sleep(0.005)
      end
      assert.are.equal(sent, #table.concat(sp.chunks))
      server:close()
      server:wait_closed()
    end, 30)
  end)

  -- TCP_NODELAY itself (on by default) is not observable from Lua: this
  -- checks set_nodelay's API only.
  it("set_nodelay: both ways on a live transport, a no-op once closed", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local p = proto()
      p.on_lost = loop:create_future()
      local t = loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      t:set_nodelay(false)
      t:write("abc")
      t:set_nodelay(true)
      t:write("def")
      t:write_eof()
      p.on_lost:await()
      assert.are.equal("abcdef", table.concat(p.chunks))
      t:set_nodelay(true)  -- closed: ignored
      assert.has_error(function() t.set_nodelay({}, true) end)
      server:close()
      server:wait_closed()
    end)
  end)

  it("server close, wait_closed, is_serving, sockets, get_loop, close_clients", function()
    local loop = rtloop()
    run(loop, function()
      local sps = {}
      local server = loop:create_server(function()
        local p = proto(); sps[#sps + 1] = p; return p
      end, "127.0.0.1", 0, {backlog = 10, reuse_address = true})
      assert.is_true(server:is_serving())
      assert.are.equal(loop, server:get_loop())
      local socks = server:sockets()
      assert.are.equal(1, #socks)
      assert.are.equal("127.0.0.1", socks[1].host)
      assert.are.equal("inet", socks[1].family)
      assert.is_true(socks[1].port > 0)
      H.contains("loom.Server", tostring(server))
      local p = proto()
      p.on_lost = loop:create_future()
      loop:create_connection(function() return p end, "127.0.0.1", socks[1].port)
      while #sps == 0 do loom.sleep(0.001) end
      server:close()
      server:close()
      assert.is_false(server:is_serving())
      assert.are.same({}, server:sockets())
      local waited = false
      local w = loom.create_task(function() server:wait_closed(); waited = true end)
      loom.sleep(0.02)
      assert.is_false(waited)   -- a transport is still open
      server:close_clients()
      w:await()
      assert.is_true(waited)
      p.on_lost:await()
      server:wait_closed()
    end)
  end)

  it("get_extra_info, get_protocol, set_protocol, tostring", function()
    local loop = rtloop()
    run(loop, function()
      local sp
      local server = loop:create_server(function() sp = proto(); return sp end,
        "127.0.0.1", 0)
      local port = port_of(server)
      local p = proto()
      p.on_lost = loop:create_future()
      local t = loop:create_connection(function() return p end, "localhost", port)
      local peer, sock = t:get_extra_info("peername"), t:get_extra_info("sockname")
      assert.are.same({host = "127.0.0.1", port = port, family = "inet"}, peer)
      assert.are.equal("127.0.0.1", sock.host)
      assert.is_nil(t:get_extra_info("nothing"))
      assert.are.equal(7, t:get_extra_info("nothing", 7))
      while not sp do loom.sleep(0.001) end
      assert.are.same(sock, sp.t:get_extra_info("peername"))
      assert.are.equal(p, t:get_protocol())
      assert.are.equal(loop, t:get_loop())
      H.contains("loom.TCPTransport (open)", tostring(t))
      local p2 = proto()
      local ok, err = pcall(function() t:set_protocol(1) end)
      assert.is_false(ok)
      H.contains("bad argument #1 to 'set_protocol' (protocol (table) expected, got number)", err)
      assert.are.equal(p, t:get_protocol())  -- unchanged
      t:set_protocol(p2)
      assert.are.equal(p2, t:get_protocol())
      t:set_protocol(p)
      t:close()
      p.on_lost:await()
      assert.is_nil(t:get_extra_info("peername"))
      H.contains("closed", tostring(t))
      server:close()
      server:wait_closed()
    end)
  end)

  it("data_received: a method set in connection_made counts; set_protocol switches", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local got = loom.Queue()
      local p = proto()
      p.data_received = nil                 -- only set once connected
      p.connection_made = function(self, t)
        self.t = t
        self.data_received = function(_, d) got:put_nowait("first " .. d) end
      end
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server))
      t:write("a")
      assert.are.equal("first a", got:get())
      -- looked up once: a method replaced on the same protocol is not seen
      p.data_received = function(_, d) got:put_nowait("replaced " .. d) end
      t:write("b")
      assert.are.equal("first b", got:get())
      -- a protocol set with set_protocol gets the data, by its own method
      local p2 = { data_received = function(_, d) got:put_nowait("second " .. d) end }
      t:set_protocol(p2)
      t:write("c")
      assert.are.equal("second c", got:get())
      -- and setting the first one again looks its method up afresh
      t:set_protocol(p)
      t:write("d")
      assert.are.equal("replaced d", got:get())
      t:close()
      server:close()
      server:wait_closed()
    end)
  end)

  it("closing the loop with open connections and servers", function()
    local loop = rtloop()
    local sp
    local p = proto()
    local server
    run(loop, function()
      server = loop:create_server(function() sp = proto(); return sp end,
        "127.0.0.1", 0)
      local t = loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      t:write(pattern(4 * 1024 * 1024))  -- leaves queued writes
      while not sp do loom.sleep(0.001) end
      sp.t:pause_reading()
      -- a pending connect too
      loom.create_task(function()
        pcall(loop.create_connection, loop, proto, "127.0.0.1", port_of(server))
      end)
    end)
    loop:close()
    assert.are.equal(0, p.lost)   -- no Lua callbacks while closing
    assert.are.equal(0, sp.lost)
    assert.is_true(p.t:is_closing())
    assert.is_false(server:is_serving())
    p.t:write("x")
    p.t:close()
    p.t:abort()
    server:close()
  end)

  it("a loop dropped without close() with open transports is collected", function()
    -- What libuv may call back for is kept by the loop itself, so the
    -- loop, its servers, transports, protocols and pending futures are
    -- garbage together; the loop's __gc closes the sockets.
    local nfds = require("loom.core")._nfds
    collectgarbage(); collectgarbage()
    local before = nfds()
    local port
    local said = H.drop_loop(function(loop, keep)
      local sp
      local server = loop:create_server(function()
        sp = proto(); return sp
      end, "127.0.0.1", 0)
      port = port_of(server)
      keep[server] = "server"
      local p = proto()
      local t = loop:create_connection(function() return p end,
                                       "127.0.0.1", port)
      keep[t] = "transport"
      keep[p] = "protocol"
      while not sp do loom.sleep(0.001) end
      sp.t:pause_reading()
      t:set_write_buffer_limits(1)
      t:write(pattern(4 * 1024 * 1024))   -- queued: the peer reads nothing
      keep[t:_drained(0)] = "drain future"
      -- a connect left pending when the loop stops
      loom.create_task(function()
        pcall(loop.create_connection, loop, proto, "127.0.0.1", port)
      end)
      local r, w = loom.open_connection("127.0.0.1", port)
      keep[r], keep[w] = "reader", "writer"
    end)
    -- the connecting task is collected pending, as asyncio says
    H.contains("Task was destroyed but it is pending!", said)
    assert.are.equal(before, nfds())
    -- the port is free again
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(proto, "127.0.0.1", port)
      server:close()
    end)
  end)

  it("an unreferenced transport and server are collected", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(echo_factory, "127.0.0.1", 0)
      local t = loop:create_connection(proto, "127.0.0.1", port_of(server))
      t:close()
      server:close()
      server:wait_closed()
    end)
    collectgarbage(); collectgarbage()
  end)

  it("a failing protocol_factory is reported and the client sees the close", function()
    local loop = rtloop()
    local got = H.capture(loop)
    run(loop, function()
      local server = loop:create_server(function() error("nofactory") end,
        "127.0.0.1", 0)
      local p = proto()
      p.on_lost = loop:create_future()
      loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      p.on_lost:await()
      assert.are.equal(1, #got)
      H.contains("nofactory", tostring(got[1].exception))
      -- and a failing client factory rejects create_connection
      local ok, e = pcall(loop.create_connection, loop,
        function() error("clientfactory") end, "127.0.0.1", port_of(server))
      assert.is_false(ok)
      H.contains("clientfactory", tostring(e))
      server:close()
      server:wait_closed()
    end)
  end)

  it("resolves host names: every address served, each tried in turn", function()
    local loop = rtloop()
    run(loop, function()
      local addrs = loop:getaddrinfo("localhost", 0, {socktype = "stream"})
      local server = loop:create_server(echo_factory, "localhost", 0)
      local socks = server:sockets()
      assert.are.equal(#addrs, #socks)
      for i, a in ipairs(socks) do
        assert.are.equal(addrs[i].host, a.host)
        local p = proto()
        p.on_lost = loop:create_future()
        local t = loop:create_connection(function() return p end, a.host, a.port)
        t:write("ping")
        t:write_eof()
        p.on_lost:await()
        assert.are.equal("ping", table.concat(p.chunks))
      end
      -- streams over the name; the server's first address answers
      local ss = loom.start_server(function(r, w)
        w:write(r:readline()); w:close()
      end, "localhost", 0)
      local port = ss:sockets()[1].port
      local r, w = loom.open_connection("localhost", port)
      w:write("hi\n")
      assert.are.equal("hi\n", r:readline())
      w:close()
      ss:close()
      ss:wait_closed()
      -- a listener on 127.0.0.1 only: "localhost" reaches it whatever
      -- the resolver's order; local_addr binds the client's side
      local s4 = loop:create_server(echo_factory, "127.0.0.1", 0)
      local p = proto()
      local t = loop:create_connection(function() return p end, "localhost",
                                       port_of(s4), {local_addr = {host = "127.0.0.1", port = 0}})
      assert.are.equal("127.0.0.1", t:get_extra_info("peername").host)
      assert.are.equal("127.0.0.1", t:get_extra_info("sockname").host)
      t:abort()
      local p2 = proto()
      local t2 = loop:create_connection(function() return p2 end, "127.0.0.1",
                                        port_of(s4), {local_addr = {host = "localhost"}})
      assert.are.equal("127.0.0.1", t2:get_extra_info("sockname").host)
      t2:abort()
      H.contains("local_addr", H.raised(loop.create_connection, loop, proto, "127.0.0.1",
                                        port_of(s4), {local_addr = {host = "x\0"}}))
      s4:close()
      server:close()
      server:wait_closed()
      s4:wait_closed()
      -- nobody listens: the error of every address
      local e = H.raised(loom.open_connection, "localhost", port)
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("ECONNREFUSED", e.code)
      e = H.raised(loom.open_connection, "no-such-host.invalid", 1)
      assert.is_true(loom.OSError:is(e))
    end)
    -- outside a task, "localhost" is 127.0.0.1 (nothing to await)
    local server = loop:create_server(echo_factory, "localhost", 0)
    assert.are.same({"127.0.0.1"}, {server:sockets()[1].host})
    server:close()
    H.contains("numeric", H.raised(loop.create_server, loop, echo_factory, "example.invalid", 0))
    loop:run_until_complete(function() server:wait_closed() end)
  end)

  it("rejects bad input", function()
    local loop = rtloop()
    run(loop, function()
      local f = echo_factory
      H.contains("embedded zero", H.raised(loop.create_server, loop, f, "127.0.0.1\0x", 0))
      H.contains("embedded zero", H.raised(loop.create_connection, loop, f, "127.0.0.1\0", 1))
      local ne = H.raised(loop.create_server, loop, f, "example.invalid", 0)
      assert.is_true(loom.OSError:is(ne))  -- a name: resolved, and fails
      assert.is_string(ne.code)
      H.contains("port", H.raised(loop.create_server, loop, f, "127.0.0.1", 70000))
      H.contains("port", H.raised(loop.create_server, loop, f, "127.0.0.1", "x"))
      H.contains("host", H.raised(loop.create_connection, loop, f, nil, 1))
      H.contains("function", H.raised(loop.create_server, loop, 42, "127.0.0.1", 0))
      H.contains("backlog", H.raised(loop.create_server, loop, f, "127.0.0.1", 0, {backlog = -1}))
      H.contains("table", H.raised(loop.create_server, loop, f, "127.0.0.1", 0, 5))
      -- a misspelt option is an error (asyncio: unexpected keyword)
      local err = H.raised
      local here = "^[^:]*tcp_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #4 to 'create_server' %(unknown option 'reuse_adress'%)",
        err(function() loop:create_server(f, "127.0.0.1", 0, {reuse_adress = true}) end))
      assert.matches(here .. "bad argument #4 to 'create_connection' %(unknown option 'tiemout'%)",
        err(function() loop:create_connection(proto, "127.0.0.1", 1, {tiemout = 1}) end))
      assert.matches(here .. "bad argument #3 to 'create_unix_server' %(unknown option 'reuse_port'%)",
        err(function() loop:create_unix_server(f, "/tmp/x.sock", {reuse_port = true}) end))
      assert.matches(here .. "bad argument #3 to 'create_unix_connection' %(unknown option 'local_addr'%)",
        err(function() loop:create_unix_connection(proto, "/tmp/x.sock", {local_addr = {}}) end))
      -- every documented option is known
      local all = loop:create_server(f, "127.0.0.1", 0, {backlog = 5,
        reuse_address = true, reuse_port = true, start_serving = false})
      assert.is_false(all:is_serving())
      H.contains("(not serving)", tostring(all))
      all:close()
      local server = loop:create_server(f, "127.0.0.1", 0)
      H.contains("(serving)", tostring(server))
      local e = H.raised(loop.create_server, loop, f, "127.0.0.1", port_of(server))
      assert.are.equal("EADDRINUSE", e.code)
      local t = loop:create_connection(proto, "127.0.0.1", port_of(server))
      H.contains("string", H.raised(t.write, t, 42))
      H.contains("string", H.raised(t.writelines, t, {"a", 1}))
      H.contains("loom.TCPTransport", H.raised(t.write, {}, "x"))
      H.contains("loom.Server", H.raised(server.close, t))
      t:abort()
      server:close()
      server:wait_closed()
    end)
    -- create_connection outside a task
    H.contains("task", H.raised(loop.create_connection, loop, proto, "127.0.0.1", 1))
  end)
end)
