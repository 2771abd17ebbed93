-- dns_spec.lua - getaddrinfo and getnameinfo on libuv's thread pool
-- (host/dns.c). The machine may have no network: only localhost, numeric
-- addresses and names that fail locally are resolved.

local H = require "helper"
local loom = require "loom"
local core = require "loom.core"
H.setup()

-- The addresses of list a matching the fields of pattern p.
local function matching(a, p)
  local r = {}
  for _, addr in ipairs(a) do
    local ok = true
    for k, v in pairs(p) do
      if addr[k] ~= v then ok = false end
    end
    if ok then r[#r + 1] = addr end
  end
  return r
end

-- Runs the loop until no resolver request of it is in flight.
local function drain(loop)
  loop:run_until_complete(function()
    while core._dns_pending(loop) > 0 do loom.sleep(0.001) end
  end)
end

describe("getaddrinfo", function()
  it("resolves localhost", function()
    local r = H.run(function() return loom.getaddrinfo("localhost", 80) end)
    assert.is_true(#r >= 1)
    local v4 = matching(r, { family = "inet", host = "127.0.0.1", port = 80 })
    assert.is_true(#v4 >= 1)
    for _, a in ipairs(r) do
      assert.is_string(a.host)
      assert.are.equal("integer", math.type(a.protocol))
      assert.is_nil(a.canonname)
    end
  end)

  it("resolves a numeric IPv4 address, as a loop method", function()
    local loop = H.loop()
    local r = loop:run_until_complete(function()
      return loop:getaddrinfo("127.0.0.1", 8080, { socktype = "stream" })
    end)
    assert.are.same({ { family = "inet", host = "127.0.0.1", port = 8080,
                        socktype = "stream", protocol = 6 } }, r)
  end)

  it("resolves a numeric IPv6 address", function()
    local r = H.run(function()
      return loom.getaddrinfo("::1", 443, { socktype = "dgram" })
    end)
    assert.are.same({ { family = "inet6", host = "::1", port = 443,
                        socktype = "dgram", protocol = 17 } }, r)
  end)

  it("takes the port as a number, a numeric string or a service name", function()
    local a, b, c = H.run(function()
      local h = { socktype = "stream" }
      return loom.getaddrinfo("127.0.0.1", 80, h),
        loom.getaddrinfo("127.0.0.1", "80", h),
        loom.getaddrinfo("127.0.0.1", "http", h)
    end)
    assert.are.equal(80, a[1].port)
    assert.are.same(a, b)
    assert.are.same(a, c)
  end)

  it("with no port gives port 0", function()
    local r = H.run(function()
      return loom.getaddrinfo("127.0.0.1", nil, { socktype = "stream" })
    end)
    assert.are.equal(0, r[1].port)
  end)

  it("filters by family and socktype", function()
    local all, v6, dgram, tcp = H.run(function()
      return loom.getaddrinfo("::1", 53),
        loom.getaddrinfo("localhost", 53, { family = "inet" }),
        loom.getaddrinfo("127.0.0.1", 53, { socktype = "dgram" }),
        loom.getaddrinfo("127.0.0.1", 53, { protocol = "tcp" })
    end)
    assert.is_true(#all >= 2)  -- one per socket type
    assert.is_true(#matching(all, { socktype = "stream" }) == 1)
    assert.is_true(#matching(all, { socktype = "dgram" }) == 1)
    for _, a in ipairs(v6) do assert.are.equal("inet", a.family) end
    assert.are.equal(#dgram, #matching(dgram, { socktype = "dgram" }))
    assert.are.equal(#tcp, #matching(tcp, { protocol = 6 }))
    assert.is_true(#tcp >= 1)
  end)

  it("resolves nil host to the wildcard with passive, else loopback", function()
    local p4, p6, l4 = H.run(function()
      local s = { socktype = "stream" }
      return loom.getaddrinfo(nil, 80, { family = "inet", socktype = "stream",
                                         flags = { passive = true } }),
        loom.getaddrinfo(nil, 80, { family = "inet6", socktype = "stream",
                                    flags = { passive = true } }),
        loom.getaddrinfo(nil, 80, { family = "inet", socktype = s.socktype })
    end)
    assert.are.equal("0.0.0.0", p4[1].host)
    assert.are.equal("::", p6[1].host)
    assert.are.equal("127.0.0.1", l4[1].host)
  end)

  it("gives the canonical name on the first address when asked", function()
    local r = H.run(function()
      return loom.getaddrinfo("localhost", 80, { flags = { canonname = true },
                                                 socktype = "stream" })
    end)
    assert.is_string(r[1].canonname)
    for i = 2, #r do assert.is_nil(r[i].canonname) end
  end)

  it("false flags are off", function()
    local r = H.run(function()
      return loom.getaddrinfo("localhost", 80, { flags = { canonname = false },
                                                 socktype = "stream" })
    end)
    assert.is_nil(r[1].canonname)
  end)

  it("an unresolvable name raises an OSError with the resolver's code", function()
    local e = H.run(function()
      return H.raised(loom.getaddrinfo, "nonexistent.invalid", 80,
                      { flags = { numerichost = true } })
    end)
    assert.is_true(loom.OSError:is(e))
    assert.are.equal("EAI_NONAME", e.code)
    assert.are.equal("integer", math.type(e.errno))
    H.contains("getaddrinfo: EAI_NONAME", tostring(e))
  end)

  it("an unknown service raises an OSError", function()
    local e = H.run(function()
      return H.raised(loom.getaddrinfo, "127.0.0.1", "no-such-service-here")
    end)
    assert.is_true(loom.OSError:is(e))
    assert.are.equal("EAI_SERVICE", e.code)
  end)

  it("can be caught and the task goes on", function()
    local got = H.run(function()
      local ok = pcall(loom.getaddrinfo, "x.invalid", 1,
                       { flags = { numerichost = true } })
      assert.is_false(ok)
      return loom.getaddrinfo("127.0.0.1", 1, { socktype = "stream" })[1].host
    end)
    assert.are.equal("127.0.0.1", got)
  end)

  it("many requests at once complete in any order", function()
    local loop = H.loop()
    local r = loop:run_until_complete(function()
      local ts = {}
      for i = 1, 40 do
        ts[i] = loom.create_task(function()
          return loom.getaddrinfo("127.0.0.1", i, { socktype = "stream" })[1].port
        end)
      end
      return table.pack(loom.gather(table.unpack(ts)))
    end)
    for i = 1, 40 do assert.are.equal(i, r[i]) end
    assert.are.equal(0, core._dns_pending(loop))
  end)

  it("_getaddrinfo gives a future, outside any task", function()
    local loop = H.loop()
    local fut = core._getaddrinfo(loop, "127.0.0.1", 7, { socktype = "stream" })
    assert.is_false(fut:done())
    assert.are.equal(1, core._dns_pending(loop))
    local r = loop:run_until_complete(fut)
    assert.are.equal(7, r[1].port)
    assert.are.equal(0, core._dns_pending(loop))
  end)
end)

describe("getnameinfo", function()
  it("names 127.0.0.1:80", function()
    local host, serv = H.run(function()
      return loom.getnameinfo({ host = "127.0.0.1", port = 80 })
    end)
    assert.is_string(host)
    assert.is_true(serv == "http" or serv == "80")
  end)

  it("with numeric flags gives numbers back, as a loop method", function()
    local loop = H.loop()
    local host, serv = loop:run_until_complete(function()
      return loop:getnameinfo({ host = "::1", port = 8080, family = "inet6" },
                              { numerichost = true, numericserv = true })
    end)
    assert.are.equal("::1", host)
    assert.are.equal("8080", serv)
  end)

  it("takes a result of getaddrinfo as it is", function()
    local host, serv = H.run(function()
      local a = loom.getaddrinfo("::1", 80, { socktype = "stream",
                                             flags = { canonname = true } })[1]
      a.scope_id = 0
      return loom.getnameinfo(a, { numerichost = true, numericserv = true })
    end)
    assert.are.equal("::1", host)
    assert.are.equal("80", serv)
  end)

  it("port defaults to 0, dgram names a udp service", function()
    local _, s0, sd = H.run(function()
      local h, s = loom.getnameinfo({ host = "127.0.0.1" }, { numerichost = true,
                                                             numericserv = true })
      local _, d = loom.getnameinfo({ host = "127.0.0.1", port = 53 },
                                    { numerichost = true, dgram = true })
      return h, s, d
    end)
    assert.are.equal("0", s0)
    assert.is_true(sd == "domain" or sd == "53")
  end)
end)

describe("dns cancellation and shutdown", function()
  -- Children created by a task step first in the next iteration, before
  -- the parent's sleep(0) ends: when the parent goes on, every child has
  -- submitted its request and no poll ran since, so none is complete.
  local function children(loop, n, fn)
    local ts = {}
    for i = 1, n do ts[i] = loop:create_task(fn, i) end
    loom.sleep(0)
    return ts
  end

  it("cancelling a task awaiting getaddrinfo", function()
    local loop = H.loop()
    local got = H.capture(loop)
    local tasks = loop:run_until_complete(function()
      local ts = children(loop, 32, function(i)
        return loop:getaddrinfo("localhost", i)
      end)
      assert.are.equal(32, core._dns_pending(loop))
      for _, t in ipairs(ts) do assert.is_true(t:cancel()) end
      for _, t in ipairs(ts) do
        assert.is_true(loom.CancelledError:is(H.raised(loom.await, t)))
      end
      return ts
    end)
    for _, t in ipairs(tasks) do assert.is_true(t:cancelled()) end
    drain(loop)
    assert.are.equal(0, core._dns_pending(loop))
    assert.are.equal(0, #got)
  end)

  it("a task catching the cancellation may resolve again", function()
    local loop = H.loop()
    local port = loop:run_until_complete(function()
      local t = children(loop, 1, function()
        local ok, e = pcall(loom.getaddrinfo, "localhost", 1)
        assert(not ok and loom.CancelledError:is(e))
        return loom.getaddrinfo("127.0.0.1", 2, { socktype = "stream" })[1].port
      end)[1]
      t:cancel()
      return t:await()
    end)
    assert.are.equal(2, port)
    drain(loop)
  end)

  it("cancelling the future of _getaddrinfo", function()
    local loop = H.loop()
    local futs = {}
    for i = 1, 32 do futs[i] = core._getaddrinfo(loop, "localhost", i) end
    for _, f in ipairs(futs) do f:cancel() end
    drain(loop)
    for _, f in ipairs(futs) do assert.is_true(f:cancelled()) end
  end)

  it("closing the loop with requests pending", function()
    local loop = H.loop()
    local tasks, futs = loop:run_until_complete(function()
      local ts = children(loop, 16, function(i)
        return loop:getaddrinfo("localhost", i)
      end)
      local fs = {}
      for i = 1, 8 do
        fs[i] = core._getnameinfo(loop, { host = "127.0.0.1", port = i })
      end
      loop:stop()  -- no poll after this: every request is still pending
      return ts, fs
    end)
    assert.are.equal(24, core._dns_pending(loop))
    loop:close()
    assert.are.equal(0, core._dns_pending(loop))
    for _, t in ipairs(tasks) do assert.is_false(t:done()) end
    for _, f in ipairs(futs) do assert.is_false(f:done()) end
  end)

  it("closing a loop that never ran its request", function()
    local loop = H.loop()
    core._getaddrinfo(loop, "localhost", 80)
    loop:close()
  end)

  it("a loop dropped without close() while a task awaits a request is collected", function()
    H.drop_loop(function(_, keep)
      keep[loom.create_task(function()
        return loom.getaddrinfo("localhost", 80)
      end)] = "task"
      loom.sleep(0)   -- the task has submitted its request
    end)
  end)

  it("a loop with a request pending is collected", function()
    local loop = loom.new_event_loop()
    core._getaddrinfo(loop, "127.0.0.1", 80)
    loop:close()
    loop = nil
    collectgarbage()
    collectgarbage()
  end)
end)

describe("dns bad input", function()
  local function err(fn, ...)
    local loop = H.loop()
    local args = table.pack(...)
    return loop:run_until_complete(function()
      return H.raised(fn, table.unpack(args, 1, args.n))
    end)
  end

  local function gai(...) return loom.getaddrinfo(...) end
  local function gni(...) return loom.getnameinfo(...) end

  it("outside a task or a running loop", function()
    H.contains("getaddrinfo: no running event loop",
               H.raised(loom.getaddrinfo, "localhost", 80))
    H.contains("getnameinfo: no running event loop",
               H.raised(loom.getnameinfo, { host = "127.0.0.1" }))
    local loop = H.loop()
    H.contains("getaddrinfo: not inside a task",
               H.raised(loop.getaddrinfo, loop, "localhost", 80))
    local other = H.loop()
    local e = loop:run_until_complete(function()
      return H.raised(other.getaddrinfo, other, "localhost", 80)
    end)
    H.contains("not inside a task of this event loop", e)
    H.contains("getnameinfo: not inside a task", loop:run_until_complete(function()
      return H.raised(other.getnameinfo, other, { host = "127.0.0.1" })
    end))
    loop:close()
    H.contains("getaddrinfo: event loop is closed",
               H.raised(loop.getaddrinfo, loop, "localhost", 80))
    H.contains("getaddrinfo: event loop is closed",
               H.raised(core._getaddrinfo, loop, "localhost", 80))
  end)

  it("from a plain coroutine inside a task", function()
    H.contains("not a task", err(function()
      local co = coroutine.wrap(function() return loom.getaddrinfo("localhost", 1) end)
      return co()
    end))
  end)

  it("wrong types", function()
    H.contains("bad argument #1 to 'getaddrinfo' (string or nil expected, got number)",
               err(gai, 1, 80))
    H.contains("bad argument #2 to 'getaddrinfo' (number, string or nil expected, got table)",
               err(gai, "localhost", {}))
    H.contains("bad argument #3 to 'getaddrinfo' (table or nil expected, got string)",
               err(gai, "localhost", 80, "inet"))
    H.contains("bad argument #1 to 'getnameinfo' (address table expected, got string)",
               err(gni, "127.0.0.1"))
    H.contains("bad argument #2 to 'getnameinfo' (flag must be a table of booleans)",
               err(gni, { host = "127.0.0.1" }, "numerichost"))
  end)

  it("host and port both nil", function()
    H.contains("bad argument #1 to 'getaddrinfo' (host and port cannot both be nil)",
               err(gai, nil, nil))
  end)

  it("embedded NUL bytes", function()
    H.contains("bad argument #1 to 'getaddrinfo' (host contains a NUL byte)",
               err(gai, "local\0host", 80))
    H.contains("bad argument #2 to 'getaddrinfo' (port contains a NUL byte)",
               err(gai, "localhost", "ht\0tp"))
    H.contains("bad argument #1 to 'getnameinfo' (address host contains a NUL byte)",
               err(gni, { host = "127.0.0.1\0junk" }))
  end)

  it("ports out of range or not integers", function()
    H.contains("bad argument #2 to 'getaddrinfo' (port out of range (0..65535))",
               err(gai, "localhost", 65536))
    H.contains("port out of range", err(gai, "localhost", -1))
    H.contains("port out of range", err(gai, "localhost", "70000"))
    H.contains("port out of range", err(gai, "localhost", "000000"))
    H.contains("port must be an integer", err(gai, "localhost", 80.5))
    H.contains("port is an empty string", err(gai, "localhost", ""))
    H.contains("bad argument #1 to 'getnameinfo' (address port out of range (0..65535))",
               err(gni, { host = "127.0.0.1", port = 65536 }))
    H.contains("address port must be an integer",
               err(gni, { host = "127.0.0.1", port = 1.5 }))
    H.contains("address port must be a number, got string",
               err(gni, { host = "127.0.0.1", port = "80" }))
  end)

  it("bad hints", function()
    H.contains("bad argument #3 to 'getaddrinfo' (unknown family 'inet4')",
               err(gai, "localhost", 80, { family = "inet4" }))
    H.contains("unknown socktype 'tcp'", err(gai, "localhost", 80, { socktype = "tcp" }))
    H.contains("socktype must be a string, got number",
               err(gai, "localhost", 80, { socktype = 1 }))
    H.contains("unknown protocol 'icmp'", err(gai, "localhost", 80, { protocol = "icmp" }))
    H.contains("protocol must be", err(gai, "localhost", 80, { protocol = 1.5 }))
    H.contains("protocol must be", err(gai, "localhost", 80, { protocol = 300 }))
    H.contains("unknown hints field 'type'", err(gai, "localhost", 80, { type = "stream" }))
    H.contains("unknown flag 'pasive'",
               err(gai, "localhost", 80, { flags = { pasive = true } }))
    H.contains("flag 'passive' must be a boolean",
               err(gai, "localhost", 80, { flags = { passive = 1 } }))
    H.contains("flag keys must be flag names",
               err(gai, "localhost", 80, { flags = { "passive" } }))
    H.contains("unknown family 'in'", err(gai, "localhost", 80, { family = "in\0et" }))
  end)

  it("bad address tables", function()
    H.contains("address host must be a string, got nil", err(gni, {}))
    H.contains("address host must be a string, got number", err(gni, { host = 1 }))
    H.contains("address host 'localhost' is not a numeric IP address",
               err(gni, { host = "localhost", port = 80 }))
    H.contains("address host '::1' is not a numeric IPv4 address",
               err(gni, { host = "::1", family = "inet" }))
    H.contains("address host '127.0.0.1' is not a numeric IPv6 address",
               err(gni, { host = "127.0.0.1", family = "inet6" }))
    H.contains("unknown family 'unix'", err(gni, { host = "127.0.0.1", family = "unix" }))
    H.contains("unknown address field 'hots'", err(gni, { hots = "127.0.0.1" }))
    H.contains("address scope_id must be an integer",
               err(gni, { host = "::1", scope_id = -1 }))
    H.contains("address scope_id must be an integer",
               err(gni, { host = "::1", scope_id = "eth0" }))
    H.contains("unknown flag 'numeric'", err(gni, { host = "127.0.0.1" }, { numeric = true }))
  end)

  it("a bad argument leaves no request behind", function()
    local loop = H.loop()
    loop:run_until_complete(function()
      pcall(loom.getaddrinfo, "localhost", 1, { family = "x" })
      pcall(loom.getnameinfo, { host = "x" })
    end)
    assert.are.equal(0, core._dns_pending(loop))
  end)
end)
