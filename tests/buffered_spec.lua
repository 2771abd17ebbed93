-- buffered_spec.lua: loom.Buffer (host/buffer.c) and buffered protocols
-- on stream transports (get_buffer / buffer_updated, host/stream.c and
-- host/tls.c), transport:write of a Buffer. Real sockets on 127.0.0.1
-- and a Unix socket, each test under a guard.
local H = require "helper"
local loom = require "loom"
H.setup()

local raised, contains = H.raised, H.contains
local rtloop, port_of = H.rtloop, H.port_of

local function run(loop, fn, secs) return H.run_task(loop, fn, secs or 20) end

-- A self-signed certificate for 127.0.0.1, made once for the file with
-- the openssl tool (which must not inherit a preloaded sanitizer).
local DIR
lazy_setup(function()
  local p = assert(io.popen("unset LD_PRELOAD; mktemp -d"))
  DIR = p:read("l")
  p:close()
  assert(os.execute("unset LD_PRELOAD; cd '" .. DIR .. "' && openssl req "
    .. "-x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
    .. "-keyout key.pem -out cert.pem -days 30 -subj /CN=localhost "
    .. "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 >/dev/null 2>&1"),
    "openssl could not make a certificate")
end)

lazy_teardown(function()
  if DIR then os.execute("unset LD_PRELOAD; rm -rf '" .. DIR .. "'") end
end)

local function tls_pair()
  return loom.tls.context{ server = true, cert = DIR .. "/cert.pem",
                           key = DIR .. "/key.pem" },
         loom.tls.context{ cafile = DIR .. "/cert.pem" }
end

-- n bytes of a pattern that a shifted or dropped byte would break.
local function pattern(n)
  local t, k = {}, 0
  while k < n do
    local s = string.format("%08d|", k)
    t[#t + 1] = s
    k = k + #s
  end
  return table.concat(t):sub(1, n)
end

-- A buffered echo: one Buffer per connection; writes buf 1..n back.
local function buffered_echo(size, log)
  return function()
    local buf = loom.Buffer(size or 65536)
    return {
      connection_made = function(self, t) self.t = t end,
      get_buffer = function(self, hint)
        if log then log.hints[#log.hints + 1] = hint end
        return buf
      end,
      buffer_updated = function(self, n)
        if log then log.reads = log.reads + 1 end
        self.t:write(buf, 1, n)
      end,
      eof_received = function(self) self.t:close() end,
    }
  end
end

-- A plain client protocol collecting what it receives.
local function collector(loop)
  local p = { chunks = {}, lost = loop:create_future() }
  function p:connection_made(t) self.t = t end
  function p:data_received(d) self.chunks[#self.chunks + 1] = d end
  function p:connection_lost(e) self.err = e; self.lost:set_result(true) end
  return p
end

-- A buffered client protocol that keeps everything it receives.
local function buffered_collector(loop, size)
  local buf = loom.Buffer(size)
  local p = { parts = {}, lost = loop:create_future(), reads = 0 }
  function p:connection_made(t) self.t = t end
  function p:get_buffer() return buf end
  function p:buffer_updated(n)
    self.reads = self.reads + 1
    self.parts[#self.parts + 1] = buf:tostring(1, n)
  end
  function p:connection_lost(e) self.err = e; self.lost:set_result(true) end
  return p
end

describe("loom.Buffer", function()
  it("is zero-filled, sized, and reads like a string", function()
    local b = loom.Buffer(8)
    assert.are.equal(8, #b)
    assert.are.equal(string.rep("\0", 8), b:tostring())
    assert.are.equal(0, #loom.Buffer(0))
    assert.are.equal("", loom.Buffer(0):tostring())
    assert.matches("^loom%.Buffer %(8 bytes%) 0x%x+$", tostring(b))
    assert.are.equal(9, b:set(1, "ab\0cd\255gh"))
    local s = "ab\0cd\255gh"
    assert.are.equal(s, b:tostring())
    for _, r in ipairs{{1}, {2}, {2, 4}, {-3}, {-3, -2}, {0}, {-100, 100},
                       {5, 2}, {9}, {3, 3}} do
      assert.are.equal(s:sub(table.unpack(r)), b:tostring(table.unpack(r)))
      assert.are.same({s:byte(table.unpack(r))}, {b:byte(table.unpack(r))})
    end
    assert.are.same({97}, {b:byte()})
    assert.are.same({255, 103}, {b:byte(-3, -2)})
  end)

  it("set copies strings and Buffers, ranges included, never truncating", function()
    local b = loom.Buffer(10)
    assert.are.equal(4, b:set(1, "xyz"))
    assert.are.equal(11, b:set(8, "hello", 3))          -- "llo"
    assert.are.equal("xyz\0\0\0\0llo", b:tostring())
    assert.are.equal(8, b:set(-5, "ABCDEF", -2, -1))     -- at 6: "EF"
    assert.are.equal("xyz\0\0EFllo", b:tostring())
    local c = loom.Buffer(4)
    c:set(1, b, 6, 9)
    assert.are.equal("EFll", c:tostring())
    b:set(2, b, 1, 5)                                    -- overlapping
    assert.are.equal("xxyz\0\0Fllo", b:tostring())
    contains("bad argument #1 to 'set' (3 bytes at 9 would go past the end "
      .. "of a buffer of 10)", raised(function() b:set(9, "abc") end))
    assert.are.equal("llo", b:tostring(8))              -- untouched
    contains("bad argument #1 to 'set' (position out of range)",
      raised(function() b:set(12, "") end))
    contains("bad argument #2 to 'set' (string or loom.Buffer expected, got table)",
      raised(function() b:set(1, {}) end))
    assert.are.equal(11, b:set(11, ""))                  -- empty at the end
  end)

  it("find is a plain search bounded by init and last", function()
    local b = loom.Buffer(12)
    b:set(1, "a.b\0a.b\0zz.b")
    local s = b:tostring()
    for _, q in ipairs{{"a.b"}, {"a.b", 2}, {"\0"}, {".b", -3}, {"x"},
                       {"", 5}, {"", 13}, {"zz", -100}, {"b", 13}} do
      assert.are.same({s:find(q[1], q[2], true)}, {b:find(q[1], q[2])})
    end
    assert.are.same({5, 7}, {b:find("a.b", 2, 7)})
    assert.is_nil(b:find("a.b", 2, 6))
    assert.is_nil(b:find("zz.b", 1, -2))
    assert.are.same({9, 12}, {b:find("zz.b", 1, -1)})
    local pat = loom.Buffer(3)
    pat:set(1, ".b\0")
    assert.are.same({2, 4}, {b:find(pat)})
  end)

  it("move compacts inside the buffer, bounds checked", function()
    local b = loom.Buffer(8)
    b:set(1, "abcdefgh")
    b:move(1, 4, 5)
    assert.are.equal("defghfgh", b:tostring())
    b:move(3, 1, 6)
    assert.are.equal("dedefghf", b:tostring())
    b:move(8, 1, 0)
    assert.are.equal("dedefghf", b:tostring())
    contains("bad argument #2 to 'move' (source out of range)",
      raised(function() b:move(1, 5, 5) end))
    contains("bad argument #1 to 'move' (destination out of range)",
      raised(function() b:move(0, 1, 1) end))
    contains("bad argument #3 to 'move' (count out of range)",
      raised(function() b:move(1, 1, -1) end))
    assert.are.equal("dedefghf", b:tostring())
  end)

  it("rejects sizes outside 0..2^31-1 and bad arguments", function()
    contains("bad argument #1 to 'Buffer' (size must be in 0..2^31-1)",
      raised(function() return loom.Buffer(-1) end))
    contains("bad argument #1 to 'Buffer' (size must be in 0..2^31-1)",
      raised(function() return loom.Buffer(2^31) end))
    contains("bad argument #1 to 'Buffer' (size must be in 0..2^31-1)",
      raised(function() return loom.Buffer(math.mininteger) end))
    contains("number has no integer representation",
      raised(function() return loom.Buffer(1.5) end))
    contains("bad argument #1 to 'Buffer' (number expected, got string)",
      raised(function() return loom.Buffer("x") end))
    contains("loom.Buffer expected", raised(function()
      return loom.Buffer(1).tostring("abc") end))
    contains("bad argument #1 to 'tostring' (number has no integer",
      raised(function() return loom.Buffer(4):tostring(1.5) end))
  end)
end)

describe("buffered protocols", function()
  it("a buffered server echoes 3 MiB to a plain client, every byte checked", function()
    local loop = rtloop()
    run(loop, function()
      local log = { hints = {}, reads = 0 }
      local server = loop:create_server(buffered_echo(65536, log), "127.0.0.1", 0)
      local p = collector(loop)
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server))
      local data = pattern(3 * 1024 * 1024)
      t:write(data)
      t:write_eof()
      p.lost:await()
      assert.is_nil(p.err)
      local got = table.concat(p.chunks)
      assert.are.equal(#data, #got)
      assert.is_true(got == data)
      assert.is_true(log.reads >= 48)                  -- 64 KiB at most per read
      assert.are.equal(65536, log.hints[1])
      server:close()
      server:wait_closed()
    end)
  end)

  it("a buffered client receives 3 MiB from a plain echo server", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(function()
        return {
          connection_made = function(self, t) self.t = t end,
          data_received = function(self, d) self.t:write(d) end,
          eof_received = function(self) self.t:close() end,
        }
      end, "127.0.0.1", 0)
      local p = buffered_collector(loop, 100000)
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server))
      local data = pattern(3 * 1024 * 1024)
      t:write(data)
      t:write_eof()
      p.lost:await()
      assert.is_nil(p.err)
      assert.is_true(table.concat(p.parts) == data)
      assert.is_true(p.reads >= 32)
      server:close()
      server:wait_closed()
    end)
  end)

  it("reads at the position get_buffer gives, into a small buffer in many reads", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(buffered_echo(4096), "127.0.0.1", 0)
      -- the client keeps a partial record at the front and compacts
      local buf, fill, reads, got = loom.Buffer(16), 0, 0, {}
      local done = loop:create_future()
      local p = {}
      function p:connection_made(t) self.t = t end
      function p:get_buffer() return buf, fill + 1 end
      function p:buffer_updated(n)
        reads = reads + 1
        fill = fill + n
        while true do           -- records end with "|"
          local s, e = buf:find("|", 1, fill)
          if not s then break end
          got[#got + 1] = buf:tostring(1, e)
          buf:move(1, e + 1, fill - e)
          fill = fill - e
        end
      end
      function p:connection_lost(e) done:set_result(e) end
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server))
      local data = pattern(200000)
      t:write(data)
      t:write_eof()
      assert.is_nil(done:await())
      assert.is_true(reads >= 200000 / 16)
      assert.is_true(table.concat(got) .. buf:tostring(1, fill) == data)
      server:close()
      server:wait_closed()
    end)
  end)

  it("data lands at the position get_buffer returns", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(function()
        return { connection_made = function(_, t) t:write("hello"); t:close() end }
      end, "127.0.0.1", 0)
      local buf = loom.Buffer(10)
      buf:set(1, "XYZ")
      local done, seen = loop:create_future(), {}
      local p = {
        get_buffer = function(_, hint) seen.hint = hint; return buf, 4 end,
        buffer_updated = function(_, n) seen.n = n end,
        connection_lost = function(_, e) done:set_result(e) end,
      }
      loop:create_connection(function() return p end, "127.0.0.1", port_of(server))
      done:await()
      assert.are.equal(5, seen.n)
      assert.are.equal(65536, seen.hint)
      assert.are.equal("XYZhello\0\0", buf:tostring())
      server:close()
      server:wait_closed()
    end)
  end)

  -- Each failure of a buffered protocol: reported as asyncio's fatal
  -- error, the connection aborted with the error, the server serving on.
  local cases = {
    { "get_buffer raises", "get_buffer", "boom in get_buffer",
      function() error("boom in get_buffer") end },
    { "get_buffer returns a string", "get_buffer",
      "get_buffer() returned a string (a loom.Buffer expected)",
      function() return "not a buffer" end },
    { "get_buffer returns no room", "get_buffer",
      "get_buffer() returned an empty buffer",
      function() return loom.Buffer(0) end },
    { "get_buffer returns a position past the end", "get_buffer",
      "get_buffer() returned an empty buffer",
      function() return loom.Buffer(4), 5 end },
    { "get_buffer returns a bad position", "get_buffer",
      "get_buffer() returned position 0 (an integer >= 1 expected)",
      function() return loom.Buffer(4), 0 end },
    { "buffer_updated raises", "buffer_updated", "boom in buffer_updated",
      nil, function() error("boom in buffer_updated") end },
  }
  for _, case in ipairs(cases) do
    it(case[1] .. ": reported, connection aborted, server still serving", function()
      local loop = rtloop()
      local got = H.capture(loop)
      run(loop, function()
        local lost = loop:create_future()
        local bad = true
        local server = loop:create_server(function()
          if bad then
            bad = false
            return {
              get_buffer = case[4] or function() return loom.Buffer(64) end,
              buffer_updated = case[5] or function() end,
              connection_lost = function(_, e) lost:set_result(e) end,
            }
          end
          return buffered_echo(64)()
        end, "127.0.0.1", 0)
        local p = collector(loop)
        local t = loop:create_connection(function() return p end, "127.0.0.1",
          port_of(server))
        t:write("trigger")
        local err = lost:await()
        contains(case[3], tostring(err))
        p.lost:await()
        local r = H.reports(got, "Fatal error: protocol." .. case[2]
          .. "() call failed.")
        assert.are.equal(1, #r)
        contains(case[3], tostring(r[1].exception))
        assert.is_not_nil(r[1].transport)
        assert.is_not_nil(r[1].protocol)
        -- the next client is served
        local q = collector(loop)
        local t2 = loop:create_connection(function() return q end, "127.0.0.1",
          port_of(server))
        t2:write("again")
        t2:write_eof()
        q.lost:await()
        assert.are.equal("again", table.concat(q.chunks))
        server:close()
        server:wait_closed()
      end)
    end)
  end

  -- get_buffer runs inside libuv's read: what it does to the transport
  -- (pause, close, abort, then raising) takes effect once the read ends
  for _, mode in ipairs{"pause", "close", "abort", "close and raise"} do
    it("get_buffer may " .. mode .. " the transport", function()
      local loop = rtloop()
      local got = H.capture(loop)
      run(loop, function()
        local lost, updated = loop:create_future(), {}
        local calls, srvt = 0, nil
        local server = loop:create_server(function()
          local buf = loom.Buffer(64)
          return {
            connection_made = function(self, t) self.t = t; srvt = t end,
            get_buffer = function(self)
              calls = calls + 1
              if calls == 1 then
                if mode == "pause" then self.t:pause_reading()
                elseif mode == "abort" then self.t:abort()
                else self.t:close() end
                if mode == "close and raise" then error("raised after close") end
              end
              return buf
            end,
            buffer_updated = function(self, n)
              updated[#updated + 1] = buf:tostring(1, n)
              if mode == "pause" then self.t:close() end
            end,
            connection_lost = function(_, e) lost:set_result(e) end,
          }
        end, "127.0.0.1", 0)
        local p = collector(loop)
        local t = loop:create_connection(function() return p end, "127.0.0.1",
          port_of(server))
        t:write("payload")
        if mode == "pause" then
          loom.sleep(0.1)
          assert.are.same({}, updated)   -- paused before the read: no data
          assert.is_false(lost:done())
          srvt:resume_reading()          -- the data is still there
          assert.is_nil(lost:await())
          assert.are.same({"payload"}, updated)
        else
          -- the transport closes once the read ends; nothing was read
          assert.is_nil(lost:await())    -- close() came first (asyncio too)
          assert.are.same({}, updated)
          p.lost:await()
          local r = H.reports(got, "Fatal error: protocol.get_buffer() call failed.")
          if mode == "close and raise" then
            assert.are.equal(1, #r)
            contains("raised after close", tostring(r[1].exception))
          else
            assert.are.equal(0, #got)
          end
        end
        t:close()
        server:close()
      end)
    end)
  end

  it("set_protocol switches a live transport to buffered and back", function()
    local loop = rtloop()
    run(loop, function()
      local log, step = {}, loop:create_future()
      local buf = loom.Buffer(32)
      local plain, buffered
      plain = {
        data_received = function(self, d)
          log[#log + 1] = "data:" .. d
          if d:find("switch", 1, true) then self.t:set_protocol(buffered) end
          step:set_result(true)
        end,
        connection_made = function(self, t) self.t = t end,
      }
      buffered = {
        t = nil,
        get_buffer = function() return buf end,
        buffer_updated = function(self, n)
          local s = buf:tostring(1, n)
          log[#log + 1] = "buf:" .. s
          if s:find("back", 1, true) then plain.t:set_protocol(plain) end
          step:set_result(true)
        end,
      }
      local server = loop:create_server(function() return plain end,
        "127.0.0.1", 0)
      local t = loop:create_connection(function()
        return { data_received = function() end }
      end, "127.0.0.1", port_of(server))
      for _, msg in ipairs{"one", "switch", "two", "back", "three"} do
        step = loop:create_future()
        t:write(msg)
        step:await()
      end
      assert.are.same({"data:one", "data:switch", "buf:two", "buf:back",
                       "data:three"}, log)
      assert.are.equal(plain, plain.t:get_protocol())
      t:close()
      server:close()
      server:wait_closed()
    end)
  end)

  -- get_buffer of the first protocol sets another one: nothing goes into
  -- the first one's Buffer, and every byte reaches the new protocol in
  -- the way it takes data (data_received, or its own get_buffer).
  for _, over in ipairs{"TCP", "TLS"} do
    for _, to in ipairs{"data_received", "buffered"} do
      it(("get_buffer may set a %s protocol (%s)"):format(to, over), function()
        local loop = rtloop()
        local got = H.capture(loop)
        run(loop, function()
          local sctx, cctx
          if over == "TLS" then sctx, cctx = tls_pair() end
          local old_buf, new_buf = loom.Buffer(100), loom.Buffer(1000)
          local parts, old_updates, n = {}, 0, 0
          local done = loop:create_future()
          local function take(s)
            parts[#parts + 1] = s
            n = n + #s
            if n == 300000 and not done:done() then done:set_result(true) end
          end
          local new
          if to == "data_received" then
            new = { data_received = function(_, d) take(d) end }
          else
            new = {
              get_buffer = function() return new_buf end,
              buffer_updated = function(_, k) take(new_buf:tostring(1, k)) end,
            }
          end
          local server = loop:create_server(function()
            return {
              connection_made = function(self, t) self.t = t end,
              get_buffer = function(self)
                self.t:set_protocol(new)
                return old_buf
              end,
              buffer_updated = function() old_updates = old_updates + 1 end,
            }
          end, "127.0.0.1", 0, { ssl = sctx })
          local p = collector(loop)
          local t = loop:create_connection(function() return p end,
            "127.0.0.1", port_of(server), { ssl = cctx })
          local data = pattern(300000)
          t:write(data)
          done:await()
          assert.is_true(table.concat(parts) == data)
          assert.are.equal(0, old_updates)
          assert.is_true(old_buf:tostring() == string.rep("\0", 100))
          assert.are.equal(0, #got)
          t:close()
          p.lost:await()
          server:close()
          server:wait_closed()
        end)
      end)
    end
  end

  it("works over a Unix socket", function()
    local loop = rtloop()
    local path = os.tmpname()
    os.remove(path)
    run(loop, function()
      local server = loop:create_unix_server(buffered_echo(1000), path)
      local p = buffered_collector(loop, 777)
      local t = loop:create_unix_connection(function() return p end, path)
      local data = pattern(500000)
      t:write(data)
      t:write_eof()
      p.lost:await()
      assert.is_true(table.concat(p.parts) == data)
      server:close()
      server:wait_closed()
    end)
    os.remove(path)
  end)

  it("transport:write takes a Buffer and a range, string.sub's rules", function()
    local loop = rtloop()
    run(loop, function()
      local server = loop:create_server(function()
        return {
          connection_made = function(self, t) self.t = t end,
          data_received = function(self, d) self.t:write(d) end,
          eof_received = function(self) self.t:close() end,
        }
      end, "127.0.0.1", 0)
      local p = collector(loop)
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server))
      local b = loom.Buffer(10)
      b:set(1, "0123456789")
      t:write(b, 3, 5)      -- 234
      t:write(b, -2)        -- 89
      t:write(b, 8, 100)    -- 789
      t:write(b, 5, 4)      -- nothing
      t:write(b, 0, 1)      -- 0
      t:write(b)            -- all
      contains("bad argument #2 to 'write' (number has no integer representation)",
        raised(function() t:write(b, 1.5) end))
      contains("bad argument #3 to 'write' (number expected, got table)",
        raised(function() t:write(b, 1, {}) end))
      contains("bad argument #1 to 'write' (string expected, got table)",
        raised(function() t:write({}) end))
      -- a large write: what the socket does not take at once is a copy,
      -- so the Buffer may be reused at once
      local big = loom.Buffer(4 * 1024 * 1024)
      local data = pattern(#big)
      big:set(1, data)
      t:write(big)
      big:set(1, string.rep("#", 1000))
      t:write_eof()
      p.lost:await()
      local got = table.concat(p.chunks)
      assert.are.equal("2348978900123456789", got:sub(1, 19))
      assert.is_true(got:sub(20) == data)
      server:close()
      server:wait_closed()
    end)
  end)

  it("an unreferenced Buffer and transport are collected", function()
    local loop = rtloop()
    local weak = setmetatable({}, { __mode = "v" })
    run(loop, function()
      local server = loop:create_server(buffered_echo(64), "127.0.0.1", 0)
      local got = loop:create_future()
      do
        local buf = loom.Buffer(64)
        local p = {
          get_buffer = function() return buf end,
          buffer_updated = function(_, n)
            if not got:done() then got:set_result(buf:tostring(1, n)) end
          end,
        }
        local t = loop:create_connection(function() return p end, "127.0.0.1",
          port_of(server))
        weak.buf, weak.t, weak.p = buf, t, p
        t:write("ping")
      end
      assert.are.equal("ping", got:await())
      weak.t:close()
      server:close()
      server:wait_closed()
      loom.sleep(0.05)
    end)
    collectgarbage(); collectgarbage()
    assert.is_nil(weak.buf)
    assert.is_nil(weak.t)
    assert.is_nil(weak.p)
  end)

  it("over TLS: a buffered server and a buffered client, every byte checked", function()
    local loop = rtloop()
    run(loop, function()
      local sctx, cctx = tls_pair()
      local log = { hints = {}, reads = 0 }
      local server = loop:create_server(buffered_echo(5000, log), "127.0.0.1", 0,
        { ssl = sctx })
      local p = buffered_collector(loop, 3000)
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server), { ssl = cctx })
      local data = pattern(1024 * 1024)
      t:write(data)
      local b = loom.Buffer(3)
      b:set(1, "END")
      t:write(b, 2)           -- a Buffer range over TLS too: "ND"
      local n = 0
      while n < #data + 2 do  -- (TLS has no half-close)
        loom.sleep(0.01)
        n = #table.concat(p.parts)
      end
      t:close()
      p.lost:await()
      local got = table.concat(p.parts)
      assert.are.equal(#data + 2, #got)
      assert.is_true(got == data .. "ND")
      assert.are.equal(65536, log.hints[1])
      assert.is_true(log.reads >= #data / 5000)
      assert.is_true(p.reads >= #data / 3000)
      server:close()
      server:wait_closed()
    end)
  end)

  it("over TLS: get_buffer may close the transport", function()
    local loop = rtloop()
    local got = H.capture(loop)
    run(loop, function()
      local sctx, cctx = tls_pair()
      local lost, updated = loop:create_future(), 0
      local server = loop:create_server(function()
        return {
          connection_made = function(self, t) self.t = t end,
          get_buffer = function(self) self.t:close(); return loom.Buffer(64) end,
          buffer_updated = function() updated = updated + 1 end,
          connection_lost = function(_, e) lost:set_result(e) end,
        }
      end, "127.0.0.1", 0, { ssl = sctx })
      local p = collector(loop)
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server), { ssl = cctx })
      t:write("trigger")
      assert.is_nil(lost:await())
      p.lost:await()                 -- the client sees the close
      assert.is_nil(p.err)
      assert.are.equal(0, updated)
      assert.are.equal(0, #got)
      server:close()
      server:wait_closed()
    end)
  end)

  it("over TLS: a failing get_buffer is reported and aborts the connection", function()
    local loop = rtloop()
    local got = H.capture(loop)
    run(loop, function()
      local sctx, cctx = tls_pair()
      local lost = loop:create_future()
      local server = loop:create_server(function()
        return {
          get_buffer = function() return "nope" end,
          buffer_updated = function() end,
          connection_lost = function(_, e) lost:set_result(e) end,
        }
      end, "127.0.0.1", 0, { ssl = sctx })
      local p = collector(loop)
      local t = loop:create_connection(function() return p end, "127.0.0.1",
        port_of(server), { ssl = cctx })
      t:write("trigger")
      contains("get_buffer() returned a string", tostring(lost:await()))
      p.lost:await()
      local r = H.reports(got, "Fatal error: protocol.get_buffer() call failed.")
      assert.are.equal(1, #r)
      contains("get_buffer() returned a string", tostring(r[1].exception))
      server:close()
      server:wait_closed()
    end)
  end)
end)
