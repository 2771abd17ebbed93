-- tls_spec.lua: TLS (host/tls.c, lua/loom/tls.lua): contexts, ssl= on
-- connections and servers, start_tls, get_extra_info, faults, and real
-- peers (openssl s_server, s_client, curl). The certificates are made
-- here with the openssl tool: a CA, a server certificate it signed for
-- localhost and 127.0.0.1, an expired one, one for another name, and a
-- self-signed one no CA vouches for. Real-time loops on 127.0.0.1, each
-- test under a guard so that nothing can hang.
--
-- Commands run through a shell that first drops LD_PRELOAD: under the
-- sanitizer run the interpreter has the sanitizer runtime preloaded, and
-- openssl and curl must not inherit it.

local H = require "helper"
local loom = require "loom"
H.setup()

local raised, contains = H.raised, H.contains

local function shquote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function sh(cmd)
  local ok = os.execute("unset LD_PRELOAD; " .. cmd)
  return ok
end

local readfile = H.readfile

local DIR
local function path(name) return DIR .. "/" .. name end

-- The certificates, made once for the file.
lazy_setup(function()
  local p = assert(io.popen("unset LD_PRELOAD; mktemp -d"))
  DIR = p:read("l")
  p:close()
  local q = shquote(DIR)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local script = table.concat({
    "cd " .. q,
    "openssl req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 30 "
      .. "-subj /CN=loom-test-ca",
    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
    "printf 'subjectAltName=DNS:other.example\\n' > other.cnf",
    "openssl req " .. ec .. " -keyout srv.key -out srv.csr -subj /CN=localhost",
    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      .. "-out srv.pem -days 30 -extfile ext.cnf",
    -- valid for no time at all: expired by the time it is used
    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      .. "-out expired.pem -days 0 -extfile ext.cnf",
    "openssl req " .. ec .. " -keyout other.key -out other.csr "
      .. "-subj /CN=other.example",
    "openssl x509 -req -in other.csr -CA ca.pem -CAkey ca.key "
      .. "-CAcreateserial -out other.pem -days 30 -extfile other.cnf",
    "openssl req -x509 " .. ec .. " -keyout self.key -out self.pem -days 30 "
      .. "-subj /CN=localhost -addext subjectAltName=DNS:localhost",
    "openssl pkey -in srv.key -aes256 -passout pass:secret -out srv-enc.key",
    "openssl req " .. ec .. " -keyout client.key -out client.csr "
      .. "-subj /CN=loom-client",
    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
      .. "-CAcreateserial -out client.pem -days 30",
  }, " && ")
  assert(sh("(" .. script .. ") >/dev/null 2>&1"), "openssl could not make "
    .. "the certificates")
  sh("sleep 1")  -- expired.pem's notAfter is now in the past
end)

lazy_teardown(function()
  if DIR then sh("rm -rf " .. shquote(DIR)) end
end)

local rtloop = H.rtloop

local function run(loop, fn, secs) return H.run_task(loop, fn, secs or 20) end

local port_of = H.port_of

local function server_ctx(opts)
  local o = { server = true, cert = path("srv.pem"), key = path("srv.key") }
  for k, v in pairs(opts or {}) do o[k] = v end
  return loom.tls.context(o)
end

local function client_ctx(opts)
  local o = { cafile = path("ca.pem") }
  for k, v in pairs(opts or {}) do o[k] = v end
  return loom.tls.context(o)
end

-- A line echo server over TLS: each line back upper-cased, until EOF.
local function upper_server(sctx, extra)
  local opts = { ssl = sctx }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return loom.start_server(function(r, w)
    pcall(function()   -- a client may go without close_notify
      for line in r:lines() do
        w:write(line:upper())
        w:drain()
      end
    end)
    w:close()
  end, "127.0.0.1", 0, opts)
end

local function shut(server)
  server:close()
  server:wait_closed()
end

local pattern = H.pattern

-- A port nothing listens on now (bound, then released).
local function free_port()
  local srv = loom.start_server(function() end, "127.0.0.1", 0)
  local port = port_of(srv)
  shut(srv)
  return port
end

-- Runs a shell command line as a subprocess with pipes.
local function spawn(cmd)
  return loom.create_subprocess_exec("sh", "-c", "unset LD_PRELOAD; " .. cmd,
    { stdin = loom.PIPE, stdout = loom.PIPE, stderr = loom.PIPE })
end

-- Connects to a port until it accepts (a peer that is starting).
local function wait_listening(port)
  for _ = 1, 200 do
    local ok, _, w = pcall(loom.open_connection, "127.0.0.1", port)
    if ok then
      w:close()
      return
    end
    loom.sleep(0.05)
  end
  error("nothing listens on port " .. port)
end


describe("loom.tls.context", function()
  it("makes client and server contexts", function()
    local c = loom.tls.context{}
    contains("loom.tls.Context (client)", tostring(c))
    assert.is_false(c:is_server())
    assert.is_true(c:check_hostname())
    local s = server_ctx()
    contains("loom.tls.Context (server)", tostring(s))
    assert.is_true(s:is_server())
    assert.is_false(s:check_hostname())
    assert.is_false(loom.tls.context{ verify = "none" }:check_hostname())
    assert.is_true(loom.tls.is_context(c))
    assert.is_false(loom.tls.is_context({}))
    assert.is_false(loom.tls.is_context(nil))
  end)

  it("takes certificates, keys and CAs as PEM text as well as files", function()
    local s = loom.tls.context{ server = true, cert = readfile(path("srv.pem")),
                                key = readfile(path("srv.key")) }
    assert.is_true(s:is_server())
    -- cert and key in one PEM text
    loom.tls.context{ server = true, cert = readfile(path("srv.pem"))
                                           .. readfile(path("srv.key")) }
    loom.tls.context{ cadata = readfile(path("ca.pem")) }
    loom.tls.context{ capath = DIR }
    -- an encrypted key and its password
    loom.tls.context{ server = true, cert = path("srv.pem"),
                      key = path("srv-enc.key"), password = "secret" }
    contains("key: not a valid PEM private key, or wrong password",
      tostring(raised(loom.tls.context, { server = true, cert = path("srv.pem"),
                      key = path("srv-enc.key"), password = "wrong" })))
  end)

  it("names the option in its errors", function()
    local function err(opts) return tostring(raised(loom.tls.context, opts)) end
    contains("bad argument #1 to 'context' (unknown option 'colour')",
             err{ colour = 1 })
    contains("verify: 'sometimes' is not one of", err{ verify = "sometimes" })
    contains("cert: a server needs a certificate", err{ server = true })
    contains("cert: cannot load '/nonexistent.pem'",
             err{ server = true, cert = "/nonexistent.pem", key = path("srv.key") })
    contains("key: does not match the certificate",
             err{ server = true, cert = path("srv.pem"), key = path("other.key") })
    contains("key: not a valid PEM private key",
             err{ server = true, cert = path("srv.pem"),
                  key = "-----BEGIN PRIVATE KEY-----\ngarbage\n" })
    contains("cafile: cannot load", err{ cafile = "/nonexistent" })
    contains("cadata: no PEM certificate", err{ cadata = "-----BEGIN nothing" })
    contains("min_version: 'SSLv3' is not one of", err{ min_version = "SSLv3" })
    contains("max_version: is below min_version",
             err{ min_version = "TLSv1.3", max_version = "TLSv1.2" })
    contains("ciphers: no cipher matches 'NOPE'", err{ ciphers = "NOPE" })
    contains("alpn: item 2 is not a string", err{ alpn = { "h2", 5 } })
    contains("alpn: item 1 must be 1..255 bytes", err{ alpn = { "" } })
    contains("sni: is for servers", err{ sni = function() end })
    contains("check_hostname: needs verify",
             err{ verify = "none", check_hostname = true })
    contains("check_hostname: is for clients",
             err{ server = true, cert = path("srv.pem"), check_hostname = true })
    contains("server: boolean expected, got string", err{ server = "yes" })
    contains("cert: contains an embedded zero",
             err{ server = true, cert = "a\0b" })
    contains("bad argument #1 to 'context' (table expected, got number)",
             err(5))
  end)
end)


describe("TLS streams", function()
  it("echo between a loom server and a loom client, with the session facts",
     function()
    local loop = rtloop()
    run(loop, function()
      local server_facts
      local srv = loom.start_server(function(r, w)
        server_facts = w:get_extra_info("ssl_object")
        local line = r:readline()
        w:write("got " .. line)
        w:close()
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local r, w = loom.open_connection("localhost", port_of(srv),
                                        { ssl = client_ctx() })
      assert.are.equal(port_of(srv), w:get_extra_info("peername").port)
      w:write("hello\n")
      assert.are.equal("got hello\n", r:read())
      assert.are.equal("", r:read())
      local cert = w:get_extra_info("peercert")
      assert.are.equal("CN=localhost", cert.subject)
      assert.are.equal("CN=loom-test-ca", cert.issuer)
      assert.are.same({ "DNS:localhost", "IP:127.0.0.1" }, cert.subject_alt_names)
      contains("-----BEGIN CERTIFICATE-----", cert.pem)
      assert.is_string(cert.not_after)
      local cipher = w:get_extra_info("cipher")
      assert.are.equal("TLSv1.3", cipher.protocol)
      assert.is_true(cipher.bits >= 128)
      local facts = w:get_extra_info("ssl_object")
      assert.are.equal("TLSv1.3", facts.version)
      assert.are.equal("localhost", facts.server_hostname)
      assert.is_false(facts.server_side)
      assert.is_true(server_facts.server_side)
      assert.is_nil(server_facts.peercert)  -- no client certificate
      assert.is_nil(w:get_extra_info("alpn_protocol"))
      assert.are.equal("x", w:get_extra_info("nothing", "x"))
      contains("loom.tls.Context", tostring(w:get_extra_info("sslcontext")))
      w:close()
      w:wait_closed()
      shut(srv)
    end)
  end)

  it("carries large messages both ways with flow control", function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(r, w)
        while true do
          local s = r:read(65536)
          if s == "" then break end
          w:write(s)
          w:drain()
        end
        w:close()
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      local data = pattern(3 * 1024 * 1024 + 17)
      local reader = loom.create_task(function()
        return r:readexactly(#data)
      end)
      w:write(data)
      w:drain()
      assert.is_true(data == reader:await())
      w:close()
      w:wait_closed()
      shut(srv)
    end, 60)
  end)

  it("reassembles records that reach each side a few bytes at a time",
     function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(r, w)
        while true do
          local s = r:read(65536)
          if s == "" then break end
          w:write(s)
        end
        w:close()
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      -- A plain relay passing each direction on in 3-byte writes, a turn
      -- of the loop apart: handshake and records arrive in pieces.
      local pieces = 0
      local function pass(r, w)
        while true do
          local s = r:read(65536)
          if s == "" then break end
          for i = 1, #s, 3 do
            w:write(s:sub(i, i + 2))
            pieces = pieces + 1
            loom.sleep(0)
          end
        end
        w:close()
      end
      local relay = loom.start_server(function(cr, cw)
        local sr, sw = loom.open_connection("127.0.0.1", port_of(srv))
        local up = loom.create_task(pass, cr, sw)
        pcall(pass, sr, cw)
        pcall(up.await, up)
      end, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(relay),
        { ssl = client_ctx(), server_hostname = "localhost" })
      local data = pattern(20000)
      w:write(data)
      local back = r:readexactly(#data)
      assert.is_true(back == data)
      assert.is_true(pieces > 2 * #data / 3)
      w:close()
      w:wait_closed()
      shut(relay)
      shut(srv)
    end, 60)
  end)

  it("the TLS protocol's data_received on another object raises, no more",
     function()
    local loop = rtloop()
    local got = H.capture(loop)
    run(loop, function()
      local srv = upper_server(server_ctx())
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      local tlsproto = w.transport:_raw():get_protocol()
      local method = getmetatable(tlsproto).__index.data_received
      local lost = loom.Future()
      local plain = loom.start_server(function(_, pw)
        pw:write("hi")
        pw:close()
      end, "127.0.0.1", 0)
      loop:create_connection(function()
        return { data_received = method,
                 connection_lost = function(_, e) lost:set_result(e) end }
      end, "127.0.0.1", port_of(plain))
      contains("TLSProtocol", lost:await())
      w:write("ok\n")
      assert.are.equal("OK", r:readexactly(2))
      w:close()
      shut(plain)
      shut(srv)
    end)
    local rs = H.reports(got, "Fatal error: protocol.data_received() call failed.")
    assert.are.equal(1, #rs)
    contains("TLSProtocol", rs[1].exception)
  end)

  it("pause_writing and resume_writing reach the protocol over TLS", function()
    local loop = rtloop()
    run(loop, function()
      local srv_t
      local paused = loop:create_future()
      local srv = loop:create_server(function()
        return { connection_made = function(_, t) srv_t = t; t:pause_reading() end }
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local events = {}
      local proto = {
        pause_writing = function() events[#events + 1] = "pause"
          if not paused:done() then paused:set_result() end end,
        resume_writing = function() events[#events + 1] = "resume" end,
      }
      local t = loop:create_connection(function() return proto end,
        "127.0.0.1", port_of(srv), { ssl = client_ctx(), server_hostname = "localhost" })
      local block = pattern(256 * 1024)
      local n = 0
      while not paused:done() and n < 400 do
        t:write(block)
        n = n + 1
        loom.sleep(0)
      end
      assert.is_true(paused:done())
      assert.is_true(t:get_write_buffer_size() > 64 * 1024)
      srv_t:resume_reading()
      for _ = 1, 1000 do
        if events[#events] == "resume" then break end
        loom.sleep(0.01)
      end
      assert.are.same({ "pause", "resume" }, { events[1], events[#events] })
      t:close()
      srv:close()
      srv_t:abort()
      srv:wait_closed()
    end)
  end)

  it("delivers writes made before the handshake ends, in order", function()
    local loop = rtloop()
    run(loop, function()
      local got = {}
      local done = loop:create_future()
      local srv = loop:create_server(function()
        return {
          connection_made = function(_, t)
            t:write("one ")
            t:writelines({ "two ", "three" })
            assert.is_true(t:get_write_buffer_size() >= 0)
            t:close()
          end,
        }
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      loop:create_connection(function()
        return {
          data_received = function(_, d) got[#got + 1] = d end,
          eof_received = function() got[#got + 1] = "<eof>" end,
          connection_lost = function(_, e) done:set_result(e) end,
        }
      end, "127.0.0.1", port_of(srv), { ssl = client_ctx(), server_hostname = "localhost" })
      assert.is_nil(done:await())
      assert.are.equal("one two three<eof>", table.concat(got))
      shut(srv)
    end)
  end)

  it("pause_reading holds data back until resume_reading", function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(_, w)
        w:write("first\n")
        w:drain()
        loom.sleep(0.1)
        w:write("second\n")
        w:drain()
        loom.sleep(0.2)
        w:close()
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local got = {}
      local lost = loop:create_future()
      local t = loop:create_connection(function()
        return {
          data_received = function(self, d)
            got[#got + 1] = d
            self.t:pause_reading()
          end,
          connection_made = function(self, tr) self.t = tr end,
          connection_lost = function() lost:set_result() end,
        }
      end, "127.0.0.1", port_of(srv), { ssl = client_ctx(), server_hostname = "localhost" })
      loom.sleep(0.25)
      assert.are.same({ "first\n" }, got)
      assert.is_false(t:is_reading())
      t:resume_reading()
      assert.is_true(t:is_reading())
      loom.sleep(0.05)
      assert.are.equal("first\nsecond\n", table.concat(got))
      t:resume_reading()
      lost:await()
      shut(srv)
    end)
  end)

  it("an error in the protocol is reported, and aborts the connection",
     function()
    local loop = rtloop()
    local got = H.capture(loop)
    local lost = loop:create_future()
    local proto = {
      data_received = function() error("boom") end,
      connection_lost = function(_, e) lost:set_result(e) end,
    }
    local tt
    run(loop, function()
      local srv = upper_server(server_ctx())
      tt = loop:create_connection(function() return proto end, "127.0.0.1",
        port_of(srv), { ssl = client_ctx(), server_hostname = "localhost" })
      tt:write("x\n")
      contains("boom", lost:await())
      assert.is_true(tt:is_closing())
      shut(srv)
    end)
    local rs = H.reports(got, "Fatal error: protocol.data_received() call failed.")
    assert.are.equal(1, #rs)
    contains("boom", rs[1].exception)
    assert.are.equal(tt, rs[1].transport)
    assert.are.equal(proto, rs[1].protocol)
  end)

  it("has no half-close: write_eof raises, can_write_eof is false", function()
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(server_ctx())
      local _, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      assert.is_false(w:can_write_eof())
      contains("do not support half-close", tostring(raised(w.write_eof, w)))
      -- the message points at the line that called the writer's method
      local e = H.raised(function() w:write_eof() end)
      assert.matches("^[^:]*tls_spec%.lua:%d+: write_eof: TLS transports", e)
      w:close()
      assert.is_true(w:is_closing())
      w:wait_closed()
      shut(srv)
    end)
  end)

  it("the peer's close_notify is an EOF, then the connection closes", function()
    local loop = rtloop()
    run(loop, function()
      local trace = {}
      local srv = loop:create_server(function()
        return { connection_made = function(_, t) t:write("bye") t:close() end }
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local lost = loop:create_future()
      loop:create_connection(function()
        return {
          data_received = function(_, d) trace[#trace + 1] = d end,
          eof_received = function() trace[#trace + 1] = "eof"; return true end,
          connection_lost = function(_, e) trace[#trace + 1] = "lost"
            lost:set_result(e) end,
        }
      end, "127.0.0.1", port_of(srv), { ssl = client_ctx(), server_hostname = "localhost" })
      assert.is_nil(lost:await())
      assert.are.same({ "bye", "eof", "lost" }, trace)
      shut(srv)
    end)
  end)

  it("negotiates ALPN and picks a context by server name (SNI)", function()
    local loop = rtloop()
    run(loop, function()
      local other = loom.tls.context{ server = true, cert = path("other.pem"),
                                      key = path("other.key"), alpn = { "h2" } }
      local names = {}
      local sctx = server_ctx{ alpn = { "h2", "http/1.1" }, sni = function(name)
        names[#names + 1] = name
        if name == "other.example" then return other end
      end }
      local srv = upper_server(sctx)
      local _, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx{ alpn = { "http/1.1" } }, server_hostname = "localhost" })
      assert.are.equal("http/1.1", w:get_extra_info("alpn_protocol"))
      assert.are.equal("CN=localhost", w:get_extra_info("peercert").subject)
      w:close()
      local _, w2 = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx{ alpn = { "h2" } }, server_hostname = "other.example" })
      assert.are.equal("h2", w2:get_extra_info("alpn_protocol"))
      assert.are.equal("CN=other.example", w2:get_extra_info("peercert").subject)
      w2:close()
      w2:wait_closed()
      assert.are.same({ "localhost", "other.example" }, names)
      shut(srv)
    end)
  end)

  it("an error in the sni callback fails the handshake, reported", function()
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(server_ctx{ sni = function() error("no such site") end })
      local e = raised(loom.open_connection, "127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      assert.is_true(loom.SSLError:is(e))
      contains("alert internal error", tostring(e))
      shut(srv)
    end)
  end)

  it("reuses sessions of a client context", function()
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(server_ctx())
      local cctx = client_ctx()
      local function once()
        local r, w = loom.open_connection("127.0.0.1", port_of(srv),
          { ssl = cctx, server_hostname = "localhost" })
        w:write("x\n")
        assert.are.equal("X\n", r:readline())
        local reused = w:get_extra_info("ssl_object").session_reused
        w:close()
        w:wait_closed()
        return reused
      end
      assert.is_false(once())
      assert.is_true(once())
      -- a context without the cache does not resume
      cctx = client_ctx{ session_cache = false }
      assert.is_false(once())
      assert.is_false(once())
      shut(srv)
    end)
  end)

  it("verifies a client certificate when the server requires one", function()
    local loop = rtloop()
    run(loop, function()
      local subject
      local srv = loom.start_server(function(r, w)
        subject = w:get_extra_info("peercert").subject
        w:write(r:readline())
        w:close()
      end, "127.0.0.1", 0, { ssl = server_ctx{ verify = "required",
                                                cafile = path("ca.pem") } })
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx{ cert = path("client.pem"), key = path("client.key") },
          server_hostname = "localhost" })
      w:write("me\n")
      assert.are.equal("me\n", r:readline())
      assert.are.equal("CN=loom-client", subject)
      w:close()
      -- without one the handshake fails (TLS 1.3: on the first read)
      local ok, e = pcall(function()
        local r2, w2 = loom.open_connection("127.0.0.1", port_of(srv),
          { ssl = client_ctx(), server_hostname = "localhost" })
        w2:write("me\n")
        return r2:read()
      end)
      assert.is_false(ok)
      assert.is_true(loom.SSLError:is(e))
      contains("certificate required", tostring(e))
      shut(srv)
    end)
  end)

  it("rejects bad ssl options with the argument named", function()
    local loop = rtloop()
    run(loop, function()
      local function f() return {} end
      contains("bad argument #4 to 'create_connection' (ssl must be a "
        .. "loom.tls.Context or true, got string)",
        tostring(raised(loop.create_connection, loop, f, "127.0.0.1", 1,
                        { ssl = "yes" })))
      contains("server_hostname is only meaningful with ssl",
        tostring(raised(loop.create_connection, loop, f, "127.0.0.1", 1,
                        { server_hostname = "x" })))
      contains("ssl is a server context",
        tostring(raised(loop.create_connection, loop, f, "127.0.0.1", 1,
                        { ssl = server_ctx() })))
      contains("server_hostname is needed",
        tostring(raised(loop.create_unix_connection, loop, f, "/tmp/x.sock",
                        { ssl = client_ctx() })))
      contains("ssl_handshake_timeout must be a number > 0",
        tostring(raised(loop.create_connection, loop, f, "127.0.0.1", 1,
                        { ssl = client_ctx(), ssl_handshake_timeout = -1 })))
      contains("bad argument #4 to 'create_server' (ssl is a client context",
        tostring(raised(loop.create_server, loop, f, "127.0.0.1", 0,
                        { ssl = client_ctx() })))
      -- at the caller's line, though the TLS layer checks them deeper
      local ok, e = pcall(function()
        loop:create_server(f, "127.0.0.1", 0, { ssl = true })
      end)
      assert.is_false(ok)
      assert.matches("^[^:]*tls_spec%.lua:%d+: bad argument #4 to 'create_server' "
        .. "%(ssl must be a loom.tls.Context, got boolean%)", e)
      contains("bad argument #3 to 'start_tls' (loom.tls.Context expected",
        tostring(raised(loop.start_tls, loop, {set_protocol = f}, {}, 5)))
      contains("bad argument #1 to 'start_tls' (transport expected, got table)",
        tostring(raised(loop.start_tls, loop, {}, {}, client_ctx())))
    end)
  end)

  it("start_tls rejects a server_hostname with a zero byte (OpenSSL would "
     .. "check only the name before it) and a protocol that is not a table, "
     .. "at the caller's line", function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(r, w) r:read(-1); w:close() end,
                                    "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(srv))
      local err = H.raised
      local here = "^[^:]*tls_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #2 to 'start_tls' %(server_hostname "
        .. "must be a string without zeros%)", err(function()
          w:start_tls(client_ctx(), { server_hostname = "localhost\0.evil" })
        end))
      assert.matches(here .. "bad argument #4 to 'start_tls' %(server_hostname "
        .. "must be a string without zeros%)", err(function()
          loop:start_tls(w.transport, w._protocol, client_ctx(),
                         { server_hostname = "localhost\0.evil" })
        end))
      assert.matches(here .. "bad argument #2 to 'start_tls' %(protocol "
        .. "%(table%) expected, got boolean%)", err(function()
          loop:start_tls(w.transport, true, client_ctx(),
                         { server_hostname = "localhost" })
        end))
      assert.matches(here .. "bad argument #1 to 'start_tls' %(loom.tls.Context "
        .. "expected, got nil%)", err(function() w:start_tls(nil) end))
      assert.matches(here .. "bad argument #2 to 'start_tls' %(unknown option "
        .. "'server_hostnme'%)", err(function()
          w:start_tls(client_ctx(), { server_hostnme = "localhost" })
        end))
      assert.matches(here .. "bad argument #2 to 'start_tls' %(ssl_handshake_"
        .. "timeout must be a number > 0%)", err(function()
          w:start_tls(client_ctx(), { ssl_handshake_timeout = 0 / 0 })
        end))
      -- the C layer refuses it too, whoever calls it
      contains("server_hostname must be a string without zeros",
        tostring(raised(loom._core._tls_wrap, loop, client_ctx(), {}, false,
                        "localhost\0.evil")))
      -- nothing was started: the connection is still plain
      w:write("plain\n")
      w:write_eof()
      assert.is_false(w:is_closing())
      w:close()
      w:wait_closed()
      shut(srv)
    end)
  end)

  it("serves and connects over Unix sockets", function()
    local loop = rtloop()
    run(loop, function()
      local sock = path("tls.sock")
      os.remove(sock)
      local srv = loom.start_unix_server(function(r, w)
        w:write(r:readline():upper())
        w:close()
      end, sock, { ssl = server_ctx() })
      local r, w = loom.open_unix_connection(sock,
        { ssl = client_ctx(), server_hostname = "localhost" })
      w:write("unix\n")
      assert.are.equal("UNIX\n", r:readline())
      w:close()
      w:wait_closed()
      shut(srv)
      os.remove(sock)
    end)
  end)
end)


describe("start_tls", function()
  it("upgrades a plain stream connection (STARTTLS), both sides", function()
    local loop = rtloop()
    run(loop, function()
      local sctx = server_ctx()
      local srv = loom.start_server(function(r, w)
        assert.are.equal("STARTTLS\n", r:readline())
        w:write("GO\n")
        w:drain()
        w:start_tls(sctx)
        local line = r:readline()
        w:write("secret " .. line)
        w:write(w:get_extra_info("cipher").protocol .. "\n")
        w:close()
      end, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(srv))
      assert.is_nil(w:get_extra_info("cipher"))
      w:write("STARTTLS\n")
      assert.are.equal("GO\n", r:readline())
      w:start_tls(client_ctx(), { server_hostname = "localhost" })
      assert.are.equal("CN=localhost", w:get_extra_info("peercert").subject)
      w:write("words\n")
      assert.are.equal("secret words\n", r:readline())
      assert.are.equal("TLSv1.3\n", r:readline())
      assert.are.equal("", r:read())
      w:close()
      w:wait_closed()
      shut(srv)
    end)
  end)

  it("loop:start_tls wraps a protocol's transport and returns the new one",
     function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(r, w)
        r:readline()
        w:write("ok\n")
        w:start_tls(server_ctx())
        w:write("hi " .. r:readline())
        w:close()
      end, "127.0.0.1", 0)
      local got = {}
      local lost = loop:create_future()
      local ok = loop:create_future()
      local proto = {
        data_received = function(_, d)
          if not ok:done() then ok:set_result(d) else got[#got + 1] = d end
        end,
        connection_lost = function(_, e) lost:set_result(e) end,
      }
      local t = loop:create_connection(function() return proto end,
                                       "127.0.0.1", port_of(srv))
      t:write("upgrade\n")
      -- the server's answer first: what follows is TLS
      assert.are.equal("ok\n", ok:await())
      local tt = loop:start_tls(t, proto, client_ctx(),
                                { server_hostname = "localhost" })
      contains("loom.TLSTransport (open)", tostring(tt))
      assert.are.equal(proto, tt:get_protocol())
      tt:write("you\n")
      assert.is_nil(lost:await())
      assert.are.equal("hi you\n", table.concat(got))
      assert.is_true(tt:is_closing())
      shut(srv)
    end)
  end)
end)


describe("TLS faults", function()
  local function expect_verify_error(sctx, opts, needle)
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(sctx)
      local o = { ssl = client_ctx() }
      for k, v in pairs(opts or {}) do o[k] = v end
      local e = raised(loom.open_connection, "127.0.0.1", port_of(srv), o)
      assert.is_true(loom.SSLCertVerificationError:is(e), tostring(e))
      assert.is_true(loom.SSLError:is(e))
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("CERTIFICATE_VERIFY_FAILED", e.reason)
      contains(needle, tostring(e))
      contains(needle, e.verify_message)
      shut(srv)
    end)
  end

  it("an expired certificate", function()
    expect_verify_error(server_ctx{ cert = path("expired.pem") },
                        { server_hostname = "localhost" },
                        "certificate has expired")
  end)

  it("a wrong host name", function()
    expect_verify_error(server_ctx(), { server_hostname = "wrong.example" },
      "Hostname mismatch, certificate is not valid for 'wrong.example'")
  end)

  it("a wrong IP address", function()
    expect_verify_error(server_ctx{ cert = path("other.pem"),
                                    key = path("other.key") }, nil,
                        "IP address mismatch")
  end)

  it("an unknown CA", function()
    expect_verify_error(server_ctx{ cert = path("self.pem"), key = path("self.key") },
                        { server_hostname = "localhost" },
                        "self-signed certificate")
  end)

  it("ssl = true trusts the system's CAs, which do not know the test CA",
     function()
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(server_ctx())
      local e = raised(loom.open_connection, "localhost", port_of(srv),
                       { ssl = true })
      assert.is_true(loom.SSLCertVerificationError:is(e), tostring(e))
      contains("unable to get local issuer certificate", e.verify_message)
      shut(srv)
    end)
  end)

  it("verify = \"none\" accepts any certificate", function()
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(server_ctx{ cert = path("self.pem"), key = path("self.key") })
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = loom.tls.context{ verify = "none" } })
      w:write("ok\n")
      assert.are.equal("OK\n", r:readline())
      w:close()
      shut(srv)
    end)
  end)

  it("a plain-text client talking to a TLS server", function()
    local loop = rtloop()
    loop:set_debug(true)
    local got = H.capture(loop)
    run(loop, function()
      local srv = upper_server(server_ctx())
      local r, w = loom.open_connection("127.0.0.1", port_of(srv))
      w:write("GET / HTTP/1.0\r\n\r\n")
      -- the server answers with an alert (not text) and closes
      local answer = r:read()
      assert.is_true(answer == "" or answer:byte(1) == 21)  -- an alert record
      while r:read() ~= "" do end
      w:close()
      for _ = 1, 100 do
        if #got > 0 then break end
        loom.sleep(0.01)
      end
      shut(srv)
    end)
    local rs = H.reports(got, "TLS handshake failed on an incoming connection")
    assert.are.equal(1, #rs)
    assert.is_true(loom.SSLError:is(rs[1].exception))
    contains("http request", tostring(rs[1].exception))
  end)

  it("a TLS client talking to a plain-text server", function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(r, w)
        r:read(10)
        w:write("220 plain text here\r\n")
        w:close()
      end, "127.0.0.1", 0)
      local e = raised(loom.open_connection, "127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      assert.is_true(loom.SSLError:is(e))
      assert.are.equal("WRONG_VERSION_NUMBER", e.reason)
      contains("wrong version number", tostring(e))
      shut(srv)
    end)
  end)

  it("a handshake that never finishes times out", function()
    local loop = rtloop()
    run(loop, function()
      local conns = {}
      local srv = loom.start_server(function(r, w)   -- says nothing
        conns[#conns + 1] = w
        r:read()
      end, "127.0.0.1", 0)
      local t0 = loop:time()
      local e = raised(loom.open_connection, "127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost",
          ssl_handshake_timeout = 0.2 })
      assert.is_true(loom.TimeoutError:is(e), tostring(e))
      contains("TLS handshake is taking longer than 0.2", tostring(e))
      assert.is_true(loop:time() - t0 >= 0.19)
      -- the server side times out as well: it closes the connection
      local lost = loop:create_future()
      local srv2 = loop:create_server(function()
        return { connection_lost = function(_, err) lost:set_result(err) end }
      end, "127.0.0.1", 0, { ssl = server_ctx(), ssl_handshake_timeout = 0.2 })
      local t1 = loop:time()
      local r2, w = loom.open_connection("127.0.0.1", port_of(srv2))
      assert.are.equal("", r2:read())
      assert.is_true(loop:time() - t1 >= 0.19)
      assert.is_false(lost:done())   -- never connected: never lost
      w:close()
      for _, c in ipairs(conns) do c:close() end
      shut(srv)
      shut(srv2)
    end)
  end)

  it("a peer that closes without close_notify", function()
    local loop = rtloop()
    run(loop, function()
      local srv = loom.start_server(function(r, w)
        w:write("partial")
        w:drain()
        loom.sleep(0.05)
        w.transport:_raw():close()   -- FIN without close_notify
        r:read()
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      assert.are.equal("partial", r:read(7))
      local e = raised(r.read, r)
      assert.is_true(loom.SSLError:is(e))
      assert.are.equal("UNEXPECTED_EOF_WHILE_READING", e.reason)
      contains("without close_notify", tostring(e))
      w:close()
      -- ragged_eof = true takes it as an EOF
      local r2, w2 = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx{ ragged_eof = true }, server_hostname = "localhost" })
      assert.are.equal("partial", r2:read(7))
      assert.are.equal("", r2:read())
      w2:close()
      shut(srv)
    end)
  end)

  it("the shutdown times out when the peer never answers close_notify",
     function()
    local loop = rtloop()
    run(loop, function()
      -- a server that stops reading: our close_notify gets no answer
      local hold = loop:create_future()
      local srv = loop:create_server(function()
        return { connection_made = function(_, t)
          t:write("ready")
          t:pause_reading()
          hold:add_done_callback(function() t:abort() end)
        end }
      end, "127.0.0.1", 0, { ssl = server_ctx() })
      local lost = loop:create_future()
      local ready = loop:create_future()
      local t = loop:create_connection(function()
        return { connection_lost = function(_, e) lost:set_result(e) end,
                 data_received = function() ready:set_result() end }
      end, "127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost",
          ssl_shutdown_timeout = 0.2 })
      ready:await()
      t:close()
      local e = lost:await()
      assert.is_true(loom.TimeoutError:is(e), tostring(e))
      contains("TLS shutdown is taking longer than 0.2", tostring(e))
      hold:set_result()
      shut(srv)
    end)
  end)
end)


describe("TLS with real peers", function()
  it("a loom client against openssl s_server", function()
    local loop = rtloop()
    run(loop, function()
      local port = free_port()
      local p = spawn(("exec openssl s_server -quiet -rev "
        .. "-accept 127.0.0.1:%d -cert %s -key %s"):format(port,
        shquote(path("srv.pem")), shquote(path("srv.key"))))
      wait_listening(port)
      local r, w = loom.open_connection("localhost", port, { ssl = client_ctx() })
      w:write("hello openssl\n")
      assert.are.equal("lssnepo olleh\n", r:readline())
      w:close()
      w:wait_closed()
      p:kill()
      p:wait()
    end, 30)
  end)

  it("openssl s_client against a loom server", function()
    local loop = rtloop()
    run(loop, function()
      local srv = upper_server(server_ctx())
      local p = spawn(("exec openssl s_client -quiet -verify_return_error "
        .. "-connect 127.0.0.1:%d -servername localhost -CAfile %s")
        :format(port_of(srv), shquote(path("ca.pem"))))
      p.stdin:write("quiet words\n")
      p.stdin:drain()
      assert.are.equal("QUIET WORDS\n", p.stdout:readline())
      p.stdin:close()
      p:kill()
      p:wait()
      shut(srv)
    end, 30)
  end)

  it("openssl s_client with a client certificate, TLS 1.2", function()
    local loop = rtloop()
    run(loop, function()
      local who
      local srv = loom.start_server(function(r, w)
        who = w:get_extra_info("peercert").subject
        local line = r:readline()
        w:write(w:get_extra_info("cipher").protocol .. " " .. line)
        w:close()
      end, "127.0.0.1", 0, { ssl = server_ctx{ verify = "required",
        cafile = path("ca.pem"), max_version = "TLSv1.2" } })
      local p = spawn(("exec openssl s_client -quiet -verify_return_error "
        .. "-connect 127.0.0.1:%d -CAfile %s -cert %s -key %s")
        :format(port_of(srv), shquote(path("ca.pem")),
                shquote(path("client.pem")), shquote(path("client.key"))))
      p.stdin:write("v\n")
      assert.are.equal("TLSv1.2 v\n", p.stdout:readline())
      assert.are.equal("CN=loom-client", who)
      p:kill()
      p:wait()
      shut(srv)
    end, 30)
  end)

  it("a renegotiation started by the peer fails the connection", function()
    local loop = rtloop()
    run(loop, function()
      local port = free_port()
      local p = spawn(("exec openssl s_server -tls1_2 "
        .. "-accept 127.0.0.1:%d -cert %s -key %s"):format(port,
        shquote(path("srv.pem")), shquote(path("srv.key"))))
      wait_listening(port)
      local r, w = loom.open_connection("localhost", port, { ssl = client_ctx() })
      w:write("before\n")
      -- s_server's "r" command: a HelloRequest to renegotiate
      loom.sleep(0.2)
      p.stdin:write("r\n")
      local e = raised(function()
        for _ = 1, 100 do
          r:read()
        end
      end)
      assert.is_true(loom.SSLError:is(e), tostring(e))
      assert.are.equal("RENEGOTIATION_REFUSED", e.reason)
      contains("renegotiation", tostring(e))
      w:close()
      p:kill()
      p:wait()
    end, 30)
  end)

  it("curl --cacert against the HTTP example served over TLS", function()
    local EXE = os.getenv("LOOM_EXE") or "build/bin/loom"
    local errf = path("http.err")
    local p = assert(io.popen(("unset LD_PRELOAD; timeout -s KILL 120 %s "
      .. "scripts/examples/http_server.lua 0 127.0.0.1 %s %s </dev/null "
      .. ">/dev/null 2>%s & echo $!"):format(shquote(EXE),
      shquote(path("srv.pem")), shquote(path("srv.key")), shquote(errf))))
    local pid = assert(tonumber(p:read("a"):match("%d+")))
    p:close()
    local port
    for _ = 1, 600 do
      local f = io.open(errf, "rb")
      local s = f and f:read("a") or ""
      if f then f:close() end
      port = tonumber(s:match("listening on [^\n]*:(%d+)\n"))
      if port then break end
      sh("sleep 0.05")
    end
    assert(port, "the HTTP example did not start")
    local c = assert(io.popen(("unset LD_PRELOAD; timeout 60 curl -sS "
      .. "--cacert %s https://localhost:%d/ https://localhost:%d/missing "
      .. "-H 'Connection: close' 2>&1"):format(shquote(path("ca.pem")), port, port)))
    local out = c:read("a")
    c:close()
    local v = assert(io.popen(("unset LD_PRELOAD; timeout 60 curl -sS "
      .. "https://localhost:%d/ 2>&1"):format(port)))
    local refused = v:read("a")
    v:close()
    sh("kill " .. pid .. " 2>/dev/null")
    local err = readfile(errf)
    assert.are.equal("Hello, World!Not Found\n", out)
    contains("certificate", refused)     -- no --cacert: curl refuses
    assert.is_nil(err:gsub("^[^\n]*listening on [^\n]*\n", ""):match("%S"),
                  "the server printed: " .. err)
  end)
end)


describe("TLS lifetime", function()
  it("a loop closed with TLS connections open neither crashes nor leaks",
     function()
    local loop = rtloop()
    local srv
    run(loop, function()
      srv = upper_server(server_ctx())
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      w:write("a\n")
      assert.are.equal("A\n", r:readline())
      -- a handshake in progress too
      loop:create_task(function()
        pcall(loom.open_connection, "127.0.0.1", port_of(srv),
          { ssl = client_ctx(), server_hostname = "localhost" })
      end)
      loom.sleep(0)
    end)
    loop:close()
    collectgarbage()
    collectgarbage()
  end)

  it("an abandoned TLS transport is collected", function()
    local loop = rtloop()
    local weak = setmetatable({}, { __mode = "v" })
    run(loop, function()
      local srv = upper_server(server_ctx())
      local r, w = loom.open_connection("127.0.0.1", port_of(srv),
        { ssl = client_ctx(), server_hostname = "localhost" })
      weak[1] = w.transport
      w:write("b\n")
      assert.are.equal("B\n", r:readline())
      w.transport:abort()
      loom.sleep(0.05)
      shut(srv)
    end)
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)
end)
