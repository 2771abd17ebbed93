-- udp_spec.lua: loop:create_datagram_endpoint and DatagramTransport
-- (host/udp.c). Real-time loops on 127.0.0.1 and ::1 only; every wait has
-- a 5 s deadline, so no test can hang.

local H = require "helper"
local loom = require "loom"
H.setup()

-- Inside a task: sleeps in small steps until done() is true or 5 s pass;
-- asserts the first.
local function wait_until(done, what)
  local deadline = loom.get_running_loop():time() + 5
  while not done() do
    if loom.get_running_loop():time() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    loom.sleep(0.001)
  end
end

-- A protocol that records everything it is called with.
local function recorder()
  local p = { made = 0, lost = 0, got = {}, errors = {} }
  function p.connection_made(self, t) self.made = self.made + 1; self.transport = t end
  function p.datagram_received(self, data, addr)
    self.got[#self.got + 1] = { data = data, addr = addr }
  end
  function p.error_received(self, err) self.errors[#self.errors + 1] = err end
  function p.connection_lost(self, err)
    self.lost = self.lost + 1
    self.lost_err = err
  end
  return p
end

local function factory_of(p) return function() return p end end

local LOCAL4 = { host = "127.0.0.1", port = 0 }

local function run(fn)
  local loop = H.loop { virtual_time = false }
  return loop, loop:run_until_complete(fn, loop)
end

describe("create_datagram_endpoint", function()
  it("exchanges datagrams both ways, with contents and addresses", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta, pa2 = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb), { local_addr = LOCAL4 })
      assert.are.equal(pa, pa2)
      assert.are.equal(1, pa.made)
      assert.are.equal(ta, pa.transport)
      local a, b = ta:get_extra_info("sockname"), tb:get_extra_info("sockname")
      assert.are.equal("127.0.0.1", a.host)
      assert.are.equal("inet", a.family)
      assert.is_true(a.port > 0 and a.port ~= b.port)
      ta:sendto("ping\0with nul", b)
      wait_until(function() return #pb.got == 1 end, "ping")
      assert.are.equal("ping\0with nul", pb.got[1].data)
      assert.are.same({ host = "127.0.0.1", port = a.port, family = "inet" }, pb.got[1].addr)
      tb:sendto("pong", pb.got[1].addr)
      tb:sendto("", a)
      wait_until(function() return #pa.got == 2 end, "pong")
      assert.are.equal("pong", pa.got[1].data)
      assert.are.equal("", pa.got[2].data)
      assert.are.same({ host = "127.0.0.1", port = b.port, family = "inet" }, pa.got[1].addr)
      ta:close()
      tb:close()
      wait_until(function() return pa.lost == 1 and pb.lost == 1 end, "connection_lost")
      assert.is_nil(pa.lost_err)
      assert.are.equal(0, loop:_udp_endpoints())
    end)
  end)

  it("works over IPv6 on ::1", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa),
        { local_addr = { host = "::1", port = 0 }, family = "inet6" })
      local tb = loop:create_datagram_endpoint(factory_of(pb),
        { remote_addr = ta:get_extra_info("sockname") })
      tb:sendto("six")
      wait_until(function() return #pa.got == 1 end, "datagram")
      assert.are.equal("six", pa.got[1].data)
      assert.are.equal("inet6", pa.got[1].addr.family)
      assert.are.equal("::1", pa.got[1].addr.host)
      assert.are.equal(tb:get_extra_info("sockname").port, pa.got[1].addr.port)
      ta:close(); tb:close()
      wait_until(function() return pa.lost + pb.lost == 2 end)
    end)
  end)

  it("binds to a wildcard address when local_addr has no host", function()
    run(function(loop)
      local t = loop:create_datagram_endpoint(factory_of(recorder()),
        { local_addr = { port = 0 } })
      local s = t:get_extra_info("sockname")
      assert.are.equal("0.0.0.0", s.host)
      t:abort()
    end)
  end)

  it("with only a family, sends from an automatically bound socket", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb), { family = "inet" })
      tb:sendto("hi", ta:get_extra_info("sockname"))
      wait_until(function() return #pa.got == 1 end)
      tb:sendto("back?", ta:get_extra_info("sockname"))
      ta:sendto("reply", pa.got[1].addr)
      wait_until(function() return #pb.got == 1 end)
      assert.are.equal("reply", pb.got[1].data)
      ta:close(); tb:close()
      wait_until(function() return pa.lost + pb.lost == 2 end)
    end)
  end)

  it("connected mode: sendto without an address, peername, others dropped", function()
    run(function(loop)
      local ps, pc, po = recorder(), recorder(), recorder()
      local ts = loop:create_datagram_endpoint(factory_of(ps), { local_addr = LOCAL4 })
      local saddr = ts:get_extra_info("sockname")
      local tc = loop:create_datagram_endpoint(factory_of(pc), { remote_addr = saddr })
      local to = loop:create_datagram_endpoint(factory_of(po), { local_addr = LOCAL4 })
      assert.are.same(saddr, tc:get_extra_info("peername"))
      assert.is_nil(ts:get_extra_info("peername"))
      tc:sendto("one")
      tc:sendto("two", { host = "127.0.0.1", port = saddr.port })
      wait_until(function() return #ps.got == 2 end)
      assert.are.equal("one", ps.got[1].data)
      assert.are.equal("two", ps.got[2].data)
      local caddr = tc:get_extra_info("sockname")
      assert.are.same(caddr, ps.got[1].addr)
      -- a datagram from another socket is dropped by the OS
      to:sendto("stranger", caddr)
      ts:sendto("friend", caddr)
      wait_until(function() return #pc.got == 1 end)
      loom.sleep(0.05)
      assert.are.equal(1, #pc.got)
      assert.are.equal("friend", pc.got[1].data)
      local e = H.raised(tc.sendto, tc, "x", to:get_extra_info("sockname"))
      H.contains("address must be nil or the remote address", e)
      ts:close(); tc:close(); to:close()
      wait_until(function() return ps.lost + pc.lost + po.lost == 3 end)
    end)
  end)

  it("delivers many datagrams in order", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb),
        { remote_addr = ta:get_extra_info("sockname") })
      -- in batches: a burst larger than the receive buffer would be
      -- dropped by the kernel, as UDP may
      local N = 1000
      for i = 1, N do
        tb:sendto(("%d:%s"):format(i, ("x"):rep(i % 100)))
        if i % 50 == 0 then
          wait_until(function() return #pa.got == i end, "datagram " .. i)
        end
      end
      for i = 1, N do
        assert.are.equal(("%d:%s"):format(i, ("x"):rep(i % 100)), pa.got[i].data)
      end
      assert.are.equal(0, tb:get_write_buffer_size())
      ta:close(); tb:close()
      wait_until(function() return pa.lost + pb.lost == 2 end)
    end)
  end)

  it("sends a large datagram, and reports one too large to error_received", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb),
        { remote_addr = ta:get_extra_info("sockname") })
      local big = ("abcdefgh"):rep(8000)  -- 64000 bytes
      tb:sendto(big)
      wait_until(function() return #pa.got == 1 end)
      assert.are.equal(big, pa.got[1].data)
      tb:sendto(("x"):rep(70000))
      wait_until(function() return #pb.errors == 1 end)
      assert.are.equal("EMSGSIZE", pb.errors[1].code)
      assert.is_false(tb:is_closing())
      ta:close(); tb:close()
      wait_until(function() return pa.lost + pb.lost == 2 end)
    end)
  end)

  it("reports ECONNREFUSED to error_received on a connected socket", function()
    run(function(loop)
      -- find a closed port: bind, note it, close
      local tmp = loop:create_datagram_endpoint(factory_of(recorder()), { local_addr = LOCAL4 })
      local dead = tmp:get_extra_info("sockname")
      tmp:abort()
      loom.sleep(0.01)
      local p = recorder()
      local t = loop:create_datagram_endpoint(factory_of(p), { remote_addr = dead })
      local deadline = loop:time() + 5
      while #p.errors == 0 and loop:time() < deadline do
        t:sendto("anyone?")
        loom.sleep(0.01)
      end
      assert.is_true(#p.errors >= 1, "no error_received")
      assert.are.equal("ECONNREFUSED", p.errors[1].code)
      assert.is_truthy(loom.OSError:is(p.errors[1]))
      assert.is_false(t:is_closing())
      assert.are.equal(0, p.lost)
      t:close()
      wait_until(function() return p.lost == 1 end)
    end)
  end)

  it("close and abort: connection_lost exactly once, sendto ignored after", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb), { local_addr = LOCAL4 })
      assert.is_false(ta:is_closing())
      ta:close()
      assert.is_true(ta:is_closing())
      ta:close()
      ta:abort()
      tb:abort()
      tb:abort()
      tb:close()
      assert.is_true(tb:is_closing())
      ta:sendto("ignored", tb:get_extra_info("sockname"))
      wait_until(function() return pa.lost == 1 and pb.lost == 1 end)
      loom.sleep(0.02)
      assert.are.equal(1, pa.lost)
      assert.are.equal(1, pb.lost)
      ta:sendto("still ignored", tb:get_extra_info("sockname"))
      ta:close()
      assert.are.equal(0, ta:get_write_buffer_size())
      -- extra info survives the close
      assert.are.equal("127.0.0.1", ta:get_extra_info("sockname").host)
      assert.are.equal("dflt", ta:get_extra_info("peername", "dflt"))
      assert.are.equal("dflt", ta:get_extra_info("nonsense", "dflt"))
      assert.is_nil(ta:get_extra_info("nonsense"))
      H.contains("loom.DatagramTransport (closed)", tostring(ta))
      assert.are.equal(0, loop:_udp_endpoints())
    end)
  end)

  it("a table with no methods is a protocol (asyncio's base protocol)", function()
    run(function(loop)
      local pa = recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(function() return {} end, { local_addr = LOCAL4 })
      ta:sendto("x", tb:get_extra_info("sockname"))
      tb:sendto("y", ta:get_extra_info("sockname"))
      wait_until(function() return #pa.got == 1 end)
      ta:close(); tb:close()
      wait_until(function() return loop:_udp_endpoints() == 0 end)
    end)
  end)
end)

describe("queued sends", function()
  it("are sent in order, counted by get_write_buffer_size, flushed by close", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb),
        { remote_addr = ta:get_extra_info("sockname") })
      tb:_force_queue(true)
      for i = 1, 20 do tb:sendto("q" .. i) end
      assert.are.equal(20 * 2 + 11, tb:get_write_buffer_size())
      tb:close()  -- the queue is sent first
      assert.is_true(tb:is_closing())
      tb:sendto("ignored")
      wait_until(function() return pb.lost == 1 end)
      assert.are.equal(0, tb:get_write_buffer_size())
      wait_until(function() return #pa.got == 20 end)
      for i = 1, 20 do assert.are.equal("q" .. i, pa.got[i].data) end
      ta:close()
      wait_until(function() return pa.lost == 1 end)
      loom.sleep(0.02)
      assert.are.equal(20, #pa.got)
    end)
  end)

  it("are dropped by abort; a queued error goes to error_received", function()
    run(function(loop)
      local pa, pb = recorder(), recorder()
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb), { local_addr = LOCAL4 })
      tb:_force_queue(true)
      tb:sendto(("x"):rep(70000), ta:get_extra_info("sockname"))
      wait_until(function() return #pb.errors == 1 end)
      assert.are.equal("EMSGSIZE", pb.errors[1].code)
      for i = 1, 10 do tb:sendto("d" .. i, ta:get_extra_info("sockname")) end
      tb:abort()
      wait_until(function() return pb.lost == 1 end)
      assert.are.equal(1, #pb.errors)  -- cancellation is not an error
      loom.sleep(0.02)
      -- libuv writes the first of a queue at once; the rest are dropped
      assert.is_true(#pa.got <= 1)
      ta:close()
      wait_until(function() return pa.lost == 1 end)
    end)
  end)

  it("are released when the loop closes with them pending", function()
    local loop = H.loop { virtual_time = false }
    local p = recorder()
    local t = loop:create_datagram_endpoint(factory_of(p), { local_addr = LOCAL4 })
    t:_force_queue(true)
    for i = 1, 10 do t:sendto(("z"):rep(i * 100), { host = "127.0.0.1", port = 9 }) end
    assert.is_true(t:get_write_buffer_size() > 0)
    loop:close()
    assert.are.equal(0, p.lost)
    assert.are.equal(0, t:get_write_buffer_size())
  end)
end)

describe("protocol errors", function()
  it("datagram_received raising: reported, transport closed, connection_lost(err)", function()
    local loop = H.loop { virtual_time = false }
    local got = H.capture(loop)
    loop:run_until_complete(function()
      local pa, pb = recorder(), recorder()
      pa.datagram_received = function() error({ boom = true }) end
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      local tb = loop:create_datagram_endpoint(factory_of(pb), { local_addr = LOCAL4 })
      tb:sendto("x", ta:get_extra_info("sockname"))
      wait_until(function() return pa.lost == 1 end)
      assert.are.equal(1, #got)
      local ctx = got[1]
      assert.are.equal("Fatal read error on datagram transport", ctx.message)
      assert.is_true(ctx.exception.boom)
      assert.are.equal(ta, ctx.transport)
      assert.are.equal(pa, ctx.protocol)
      assert.is_string(ctx.traceback)
      assert.are.equal(ctx.exception, pa.lost_err)
      assert.is_true(ta:is_closing())
      tb:close()
      wait_until(function() return pb.lost == 1 end)
    end)
  end)

  it("connection_made raising: reported, the endpoint goes on", function()
    local loop = H.loop { virtual_time = false }
    local got = H.capture(loop)
    loop:run_until_complete(function()
      local pa, pb = recorder(), recorder()
      pa.connection_made = function() error("made fails") end
      local ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      assert.are.equal(1, #got)
      assert.are.equal("Exception in protocol method connection_made", got[1].message)
      H.contains("made fails", got[1].exception)
      assert.are.equal(ta, got[1].transport)
      assert.is_false(ta:is_closing())
      local tb = loop:create_datagram_endpoint(factory_of(pb), { local_addr = LOCAL4 })
      tb:sendto("still works", ta:get_extra_info("sockname"))
      wait_until(function() return #pa.got == 1 end)
      ta:close(); tb:close()
      wait_until(function() return pa.lost + pb.lost == 2 end)
    end)
  end)

  it("connection_lost and error_received raising are reported", function()
    local loop = H.loop { virtual_time = false }
    local got = H.capture(loop)
    loop:run_until_complete(function()
      local p = recorder()
      p.connection_lost = function() error("lost fails") end
      p.error_received = function() error("err fails") end
      local t = loop:create_datagram_endpoint(factory_of(p), { local_addr = LOCAL4 })
      t:sendto(("x"):rep(70000), { host = "127.0.0.1", port = 9 })  -- EMSGSIZE
      wait_until(function() return #got == 2 end)
      assert.are.equal("Fatal error in error_received of a datagram transport",
                       got[1].message)
      H.contains("err fails", got[1].exception)
      assert.are.equal("Exception in protocol method connection_lost", got[2].message)
      H.contains("lost fails", got[2].exception)
      assert.is_true(t:is_closing())
    end)
  end)

  it("the factory's error propagates and nothing is made", function()
    run(function(loop)
      local e = H.raised(loop.create_datagram_endpoint, loop,
                         function() error("no protocol") end, { local_addr = LOCAL4 })
      H.contains("no protocol", e)
      e = H.raised(loop.create_datagram_endpoint, loop, function() return nil end,
                   { local_addr = LOCAL4 })
      H.contains("protocol_factory must return a protocol", e)
      assert.are.equal(0, loop:_udp_endpoints())
    end)
  end)
end)

describe("bad input", function()
  local function err_of(loop, opts, factory)
    return H.raised(loop.create_datagram_endpoint, loop,
                    factory or function() return {} end, opts)
  end

  it("rejects bad options and addresses with clear errors", function()
    local loop = H.loop { virtual_time = false }
    H.contains("NUL", err_of(loop, { local_addr = { host = "127.0.0.1\0evil", port = 0 } }))
    H.contains("not a numeric IP address", err_of(loop, { local_addr = { host = "localhost", port = 0 } }))
    H.contains("port out of range", err_of(loop, { local_addr = { host = "127.0.0.1", port = 70000 } }))
    H.contains("port must be an integer", err_of(loop, { local_addr = { host = "127.0.0.1", port = 1.5 } }))
    H.contains("port must be a number", err_of(loop, { local_addr = { host = "127.0.0.1", port = "80" } }))
    H.contains("unknown option 'bogus'", err_of(loop, { bogus = 1 }))
    H.contains("unknown local_addr field 'hots'", err_of(loop, { local_addr = { hots = "x" } }))
    H.contains("family, local_addr or remote_addr is required", err_of(loop, nil))
    H.contains("family must be", err_of(loop, { family = "ipx" }))
    H.contains("family does not match", err_of(loop, { family = "inet6", local_addr = { host = "127.0.0.1", family = "inet" } }))
    H.contains("not a numeric IPv6", err_of(loop, { family = "inet6", local_addr = { host = "127.0.0.1" } }))
    H.contains("remote_addr needs a port", err_of(loop, { remote_addr = { host = "127.0.0.1" } }))
    H.contains("remote_addr port out of range (1..65535)",
      err_of(loop, { remote_addr = { host = "127.0.0.1", port = 0 } }))
    H.contains("remote_addr needs a host", err_of(loop, { remote_addr = { port = 9 } }))
    H.contains("function expected", H.raised(loop.create_datagram_endpoint, loop, 42))
    H.contains("options table expected", H.raised(loop.create_datagram_endpoint, loop, function() end, 3))
    H.contains("must be an address table", err_of(loop, { local_addr = "127.0.0.1:0" }))
    assert.are.equal(0, loop:_udp_endpoints())
  end)

  it("raises an OSError when the address is in use; reuse_port allows it", function()
    local loop = H.loop { virtual_time = false }
    local t1 = loop:create_datagram_endpoint(function() return {} end, { local_addr = LOCAL4 })
    local e = err_of(loop, { local_addr = t1:get_extra_info("sockname") })
    assert.are.equal("EADDRINUSE", e.code)
    H.contains("bind", tostring(e))
    t1:abort()
    local r1 = loop:create_datagram_endpoint(function() return {} end,
      { local_addr = LOCAL4, reuse_port = true, allow_broadcast = true })
    local r2 = loop:create_datagram_endpoint(function() return {} end,
      { local_addr = r1:get_extra_info("sockname"), reuse_port = true })
    assert.are.equal(r1:get_extra_info("sockname").port, r2:get_extra_info("sockname").port)
    r1:close(); r2:close()
    loop:close()  -- closing endpoints are freed by the loop's close
  end)

  it("rejects bad sendto arguments", function()
    local loop = H.loop { virtual_time = false }
    local t = loop:create_datagram_endpoint(function() return {} end, { local_addr = LOCAL4 })
    H.contains("string expected", H.raised(t.sendto, t, 42, LOCAL4))
    H.contains("address required", H.raised(t.sendto, t, "x"))
    -- a destination needs a host and a port (not 0): said at the call,
    -- not later by error_received
    H.contains("bad argument #2 to 'sendto' (address needs a port)",
      H.raised(t.sendto, t, "x", {}))
    H.contains("address needs a host", H.raised(t.sendto, t, "x", { port = 9 }))
    H.contains("address needs a port", H.raised(t.sendto, t, "x", { host = "127.0.0.1" }))
    H.contains("address port out of range (1..65535)",
      H.raised(t.sendto, t, "x", { host = "127.0.0.1", port = 0 }))
    H.contains("NUL", H.raised(t.sendto, t, "x", { host = "127.0.0.1\0", port = 9 }))
    H.contains("not a numeric", H.raised(t.sendto, t, "x", { host = "example.com", port = 9 }))
    H.contains("DatagramTransport expected", H.raised(t.sendto, {}, "x"))
    t:close()
  end)

  it("raises on a closed loop", function()
    local loop = H.loop { virtual_time = false }
    loop:close()
    H.contains("event loop is closed", err_of(loop, { local_addr = LOCAL4 }))
  end)
end)

describe("loop shutdown", function()
  it("closing a loop with open endpoints calls no protocol method", function()
    local loop = H.loop { virtual_time = false }
    local pa, pb = recorder(), recorder()
    local ta, tb
    loop:run_until_complete(function()
      ta = loop:create_datagram_endpoint(factory_of(pa), { local_addr = LOCAL4 })
      tb = loop:create_datagram_endpoint(factory_of(pb),
        { remote_addr = ta:get_extra_info("sockname") })
      tb:sendto("in flight")
      ta:close()  -- closing, not yet closed
    end)
    for _ = 1, 100 do tb:sendto(("y"):rep(1000)) end
    loop:close()
    -- ta's close began while the loop ran: its connection_lost may have
    -- come before the loop closed; tb was open, and closing the loop must
    -- not call it
    assert.are.equal(0, pb.lost)
    assert.is_true(pa.lost <= 1)
    assert.is_true(ta:is_closing())
    assert.is_true(tb:is_closing())
    tb:sendto("ignored")
    tb:close()
    tb:abort()
    assert.are.equal(0, tb:get_write_buffer_size())
  end)

  it("a loop collected with an open endpoint whose protocol captures it", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local loop = loom.new_event_loop { virtual_time = false }
      local p = { loop = loop }
      p.datagram_received = function() return loop end
      loop:run_until_complete(function()
        weak.t = loop:create_datagram_endpoint(function() return p end,
          { local_addr = LOCAL4 })
      end)
      weak.loop = loop
    end
    collectgarbage()
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak.loop)
    assert.is_nil(weak.t)
  end)

  it("a transport collected after its close", function()
    local loop = H.loop { virtual_time = false }
    local weak = setmetatable({}, { __mode = "v" })
    loop:run_until_complete(function()
      local p = recorder()
      weak.t = loop:create_datagram_endpoint(factory_of(p), { local_addr = LOCAL4 })
      weak.t:close()
      wait_until(function() return p.lost == 1 end)
      p.transport = nil
    end)
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak.t)
    assert.are.equal(0, loop:_udp_endpoints())
  end)
end)
