-- streams_tcp_spec.lua: streams over TCP (lua/loom/streams.lua):
-- open_connection, start_server, StreamWriter, StreamReaderProtocol,
-- flow control both ways. Real-time loops on 127.0.0.1, each test under
-- a guard so that nothing can hang.

local H = require "helper"
local loom = require "loom"
H.setup()

local raised, contains = H.raised, H.contains

local rtloop = H.rtloop

local run = H.run_task

local port_of = H.port_of

-- n bytes of a pattern that does not repeat every power of two.
local function pattern(n, seed)
  local s = {}
  local x = seed or 7
  for i = 1, 251 do
    x = (x * 1103515245 + 12345) % 2147483648
    s[i] = string.char(x % 256)
  end
  local block = table.concat(s)
  return block:rep(n // #block + 1):sub(1, n)
end

-- Runs client(1) .. client(n) as tasks at once; each returns its id.
local function run_clients(n, client)
  local tasks = {}
  for id = 1, n do tasks[id] = loom.create_task(client, id) end
  local res = {loom.gather(table.unpack(tasks))}
  for id = 1, n do assert.are.equal(id, res[id]) end
end

-- An echo handler: lines until EOF, then closes.
local function echo_lines(r, w)
  for line in r:lines() do
    w:write(line)
    w:drain()
  end
  w:close()
  w:wait_closed()
end

-- An echo handler by blocks, with drain.
local function echo_blocks(r, w)
  while true do
    local s = r:read(65536)
    if s == "" then break end
    w:write(s)
    w:drain()
  end
  w:close()
end

-- More bytes than the kernel holds for a connection whose peer does not
-- read: the sender's and the receiver's socket buffers at their largest
-- (autotuning stops at tcp_wmem's and tcp_rmem's maxima, setsockopt at
-- twice wmem_max and rmem_max), and 2 MiB for what the peer's stream
-- reader takes in before it pauses. Written without a peer reading, this
-- much leaves the writer's transport paused until the peer reads.
local function unabsorbable()
  local function field(path, i)
    local f = io.open(path)
    if not f then return 0 end
    local text = f:read("a")
    f:close()
    local n = 0
    for v in text:gmatch("%d+") do
      n = n + 1
      if n == i then return math.tointeger(v) end
    end
    return 0
  end
  local snd = math.max(field("/proc/sys/net/ipv4/tcp_wmem", 3),
                       2 * field("/proc/sys/net/core/wmem_max", 1))
  local rcv = math.max(field("/proc/sys/net/ipv4/tcp_rmem", 3),
                       2 * field("/proc/sys/net/core/rmem_max", 1))
  if snd == 0 or rcv == 0 then return 256 << 20 end  -- no /proc: plenty
  return snd + rcv + (2 << 20)
end

-- Closes server and awaits it.
local function shut(server)
  server:close()
  server:wait_closed()
end

describe("streams over TCP", function()
  it("echoes lines, exact sizes and read(-1) to EOF after write_eof", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      assert.is_true(server:is_serving())
      local r, w = loom.open_connection("127.0.0.1", port_of(server))
      assert.are.equal("loom.StreamReader", getmetatable(r).__name)
      w:write("hello\n")
      assert.are.equal("hello\n", r:readline())
      w:writelines{"a", "b", "c\n", "de", "f\n"}
      w:drain()
      assert.are.equal("abc\n", r:readexactly(4))
      assert.are.equal("def\n", r:readuntil("\n"))
      w:write("one\ntwo\nthree")       -- the last line has no newline
      assert.is_true(w:can_write_eof())
      w:write_eof()
      assert.are.equal("one\ntwo\nthree", r:read(-1))
      assert.are.equal("", r:read())
      assert.is_true(r:at_eof())
      assert.is_false(w:is_closing())  -- half-open: asyncio keeps it
      w:close()
      assert.is_true(w:is_closing())
      w:wait_closed()
      w:wait_closed()                  -- again: returns at once
      shut(server)
    end)
  end)

  it("transfers 4 MiB byte-exact with drain and flow control", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_blocks, "127.0.0.1", 0,
                                       {limit = 4096})
      local r, w = loom.open_connection("127.0.0.1", port_of(server),
                                        {limit = 8192})
      local t = w.transport
      t:set_write_buffer_limits(32768)
      local data = pattern(4 * 1024 * 1024)
      local reader = loom.create_task(function() return r:read(-1) end)
      local over = 0
      for i = 1, #data, 100000 do
        w:write(data:sub(i, i + 99999))
        if t:get_write_buffer_size() > 32768 then over = over + 1 end
        w:drain()
        assert.is_true(t:get_write_buffer_size() <= 32768)
      end
      w:write_eof()
      local got = reader:await()
      assert.are.equal(#data, #got)
      assert.is_true(got == data)
      assert.is_true(over > 0, "the write buffer never went past high")
      w:close()
      w:wait_closed()
      shut(server)
    end, 30)
  end)

  it("drain blocks while the peer does not read; cancelling it is safe", function()
    local loop = rtloop()
    run(loop, function()
      local go = loom.Event()
      local total = loop:create_future()
      local server = loom.start_server(function(r, w)
        go:wait()
        local n = 0
        while true do
          local s = r:read(1 << 20)
          if s == "" then break end
          n = n + #s
        end
        total:set_result(n)
        w:write(tostring(n))
        w:close()
      end, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(server))
      -- More than the kernel can take while the peer does not read: the
      -- transport is paused whatever the time, so drain cannot return.
      -- (Stopping at the first drain that takes longer than a moment
      -- would take a slow machine for a full buffer.)
      local chunk = pattern(1 << 20)
      local sent, limit = 0, unabsorbable()
      while sent <= limit do
        w:write(chunk)
        sent = sent + #chunk
      end
      assert.is_true(w.transport:get_write_buffer_size() > 65536)
      for _ = 1, 2 do
        local ok, e = pcall(loom.wait_for, loom.create_task(w.drain, w), 0.2)
        assert.is_false(ok, "drain did not block")
        assert.is_true(loom.TimeoutError:is(e))
      end
      assert.is_true(w.transport:get_write_buffer_size() > 65536)
      -- Every cancelled drain took its waiter away.
      assert.are.equal(0, #w._protocol._drain_waiters)
      -- Two more drains; one is cancelled, the other one completes.
      local d1 = loom.create_task(function() w:drain(); return "d1" end)
      local d2 = loom.create_task(function() w:drain(); return "d2" end)
      loom.sleep(0.05)
      assert.are.equal(2, #w._protocol._drain_waiters)
      assert.is_false(d1:done())
      d1:cancel()
      loom.sleep(0)
      assert.is_true(d1:cancelled())
      assert.are.equal(1, #w._protocol._drain_waiters)
      go:set()
      assert.are.equal("d2", d2:await())
      w:drain()                          -- not paused: returns at once
      w:write_eof()
      assert.are.equal(sent, total:await())
      assert.are.equal(tostring(sent), r:read(-1))
      w:close()
      w:wait_closed()
      shut(server)
    end, 60)
  end)

  it("bad arguments to write and create_task point at the caller's line",
     function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      local _, w = loom.open_connection("127.0.0.1", port_of(server))
      local here = ".-streams_tcp_spec%.lua:%d+: "
      local ok, e = pcall(function() w:write(1) end)
      assert.is_false(ok)
      assert.matches("^" .. here .. "bad argument #1 to 'write' %(string "
                     .. "expected, got number%)$", e)
      ok, e = pcall(function() loom.create_task(42) end)
      assert.is_false(ok)
      assert.matches("^" .. here .. "bad argument #1 to 'create_task' %("
                     .. "function expected, got number%)$", e)
      w:close()
      w:wait_closed()
      shut(server)
    end)
    local ok, e = pcall(function() loom.create_task(function() end) end)
    assert.is_false(ok)
    assert.matches("^.-streams_tcp_spec%.lua:%d+: create_task: no running "
                   .. "event loop$", e)
  end)

  it("raises OSError ECONNREFUSED", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      local port = port_of(server)
      shut(server)
      local ok, e = pcall(loom.open_connection, "127.0.0.1", port)
      assert.is_false(ok)
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("ECONNREFUSED", e.code)
    end)
  end)

  it("closes the connection when a reader goes out of a <close> scope", function()
    local loop = rtloop()
    run(loop, function()
      local seen = loop:create_future()
      local server = loom.start_server(function(r, w)
        seen:set_result(r:read(-1))
        w:close()
      end, "127.0.0.1", 0)
      local writer
      do
        local r <close>, w = loom.open_connection("127.0.0.1", port_of(server))
        writer = w
        w:write("from a reader scope")
        assert.is_false(w:is_closing())
      end
      assert.is_true(writer:is_closing())
      assert.are.equal("from a reader scope", seen:await())   -- queued data went out
      writer:wait_closed()
      -- a reader made by hand has no transport: <close> leaves it alone
      do local lone <close> = loom.StreamReader() end
      shut(server)
    end)
  end)

  it("closes a writer on <close> and wait_closed returns", function()
    local loop = rtloop()
    run(loop, function()
      local seen = loop:create_future()
      local server = loom.start_server(function(r, w)
        seen:set_result(r:read(-1))
        w:close()
      end, "127.0.0.1", 0)
      local writer
      do
        local _, w <close> = loom.open_connection("127.0.0.1", port_of(server))
        writer = w
        w:write("bye")
      end
      assert.is_true(writer:is_closing())
      assert.are.equal("bye", seen:await())
      writer:wait_closed()
      -- Closed: drain raises ECONNRESET, writes are ignored.
      local e = raised(writer.drain, writer)
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("ECONNRESET", e.code)
      writer:write("ignored")
      shut(server)
    end)
  end)

  it("drain: at once while open, the reader's error, one yield while closing", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_blocks, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(server))
      -- Open and not paused: drain returns without yielding.
      local ticks = 0
      local ticker = loom.create_task(function()
        while true do ticks = ticks + 1; loom.sleep(0) end
      end)
      loom.sleep(0)
      local before = ticks
      for _ = 1, 100 do w:write("x"); w:drain() end
      assert.are.equal(before, ticks)
      assert.are.equal(("x"):rep(100), r:readexactly(100))
      -- An error set on the reader by hand: drain raises it.
      local boom = { "boom" }
      r:set_exception(boom)
      assert.are.equal(boom, raised(w.drain, w))
      -- Closing the transport itself (not through the writer): drain
      -- yields once. Whether connection_lost came in that one iteration
      -- depends on the loop's poll, which runs the close callback and
      -- which a loop with tasks ready skips in some iterations (on a
      -- count and on the clock): drain returns before it, raises
      -- ECONNRESET after it.
      local r2, w2 = loom.open_connection("127.0.0.1", port_of(server))
      w2.transport:close()
      before = ticks
      local ok, err = pcall(w2.drain, w2)
      assert.are.equal(before + 1, ticks)
      if not ok then assert.are.equal("ECONNRESET", err.code) end
      w2:wait_closed()
      local e = raised(w2.drain, w2)
      assert.are.equal("ECONNRESET", e.code)
      assert.are.equal("", r2:read(10))
      ticker:cancel()
      w:close()
      shut(server)
    end)
  end)

  it("wait_closed and reads raise the error the connection was lost with", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(function(_, w)
        w.transport:pause_reading()
        w:write("ready\n")
        loom.sleep(0.2)                -- the client's data stays unread
        w.transport:abort()            -- so the close sends a reset
      end, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(server))
      assert.are.equal("ready\n", r:readline())
      w:write(("x"):rep(1000))
      local e = raised(r.read, r)
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("ECONNRESET", e.code)
      assert.are.equal(e, raised(w.wait_closed, w))
      assert.are.equal(e, raised(w.drain, w))
      assert.are.equal(e, r:exception())
      shut(server)
    end)
  end)

  it("reports an error in the client callback, closes it, keeps serving", function()
    local loop = rtloop()
    local got = H.capture(loop)
    run(loop, function()
      local n = 0
      local server = loom.start_server(function(r, w)
        n = n + 1
        local line = r:readline()
        if line == "fail\n" then error("boom", 0) end
        w:write("ok " .. line)
        w:close()
      end, "127.0.0.1", 0)
      local port = port_of(server)
      local r1, w1 = loom.open_connection("127.0.0.1", port)
      w1:write("fail\n")
      assert.are.equal("", r1:read())  -- the server closed it
      w1:close()
      local r2, w2 = loom.open_connection("127.0.0.1", port)
      w2:write("again\n")
      assert.are.equal("ok again\n", r2:read(-1))
      w2:close()
      w2:wait_closed()
      shut(server)
      assert.are.equal(2, n)
    end)
    local rs = H.reports(got, "Unhandled exception in client_connected_cb")
    assert.are.equal(1, #rs)
    assert.are.equal("boom", rs[1].exception)
    assert.is_not_nil(rs[1].transport)
    assert.is_not_nil(rs[1].task)
    assert.are.equal(1, #got)          -- nothing "never retrieved"
  end)

  it("closes the connection of a cancelled client callback", function()
    local loop = rtloop()
    run(loop, function()
      local task = loop:create_future()
      local server = loom.start_server(function(r)
        task:set_result(loom.current_task())
        r:read()
      end, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(server))
      task:await():cancel()
      assert.are.equal("", r:read())
      w:close()
      shut(server)
    end)
  end)

  it("serves 50 clients × 100 messages, every byte checked", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      local port = port_of(server)
      local function client(id)
        local r, w <close> = loom.open_connection("127.0.0.1", port)
        local msgs = {}
        for i = 1, 100 do
          msgs[i] = ("%d:%d:%s\n"):format(id, i, ("z"):rep((id * i) % 300))
          w:write(msgs[i])
        end
        w:drain()
        for i = 1, 100 do
          local line = r:readline()
          if line ~= msgs[i] then error(("client %d message %d"):format(id, i)) end
        end
        w:write_eof()
        assert.are.equal("", r:read(-1))
        return id
      end
      run_clients(50, client)
      shut(server)
    end, 30)
  end)

  it("reads what one poll cannot take at the next, byte-exact to EOF", function()
    -- Eight peers each send 512 KiB and EOF at once: a poll finds more
    -- readable than the readers take in one (1 MiB), so the rest of the
    -- sockets are read at later polls; nothing is lost, EOF comes last.
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(function(r, w)
        w:write(r:read(-1))
        w:close()
        w:wait_closed()
      end, "127.0.0.1", 0)
      local port = port_of(server)
      local function client(id)
        local r, w <close> = loom.open_connection("127.0.0.1", port)
        local msg = pattern(512 * 1024, id)
        w:write(msg)
        w:write_eof()
        local back = r:read(-1)
        if back ~= msg then
          error(("client %d: %d bytes back, not the %d sent"):format(
            id, #back, #msg))
        end
        return id
      end
      run_clients(8, client)
      shut(server)
    end, 30)
  end)

  it("applies the reader limit over TCP", function()
    local loop = rtloop()
    run(loop, function()
      local body = ("x"):rep(3000)
      local server = loom.start_server(function(r, w)
        w:write(body .. "\nok\n")
        w:write(pattern(200000))
        w:write_eof()
        r:read(-1)
        w:close()
      end, "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", port_of(server),
                                        {limit = 1024})
      local e = raised(r.readuntil, r, "\n")
      assert.is_true(loom.LimitOverrunError:is(e))
      assert.is_true(e.consumed > 1024)
      assert.are.equal(body .. "\n", r:readexactly(3001))
      assert.are.equal("ok\n", r:readline())
      loom.sleep(0.1)                   -- the transport pauses past 2048
      assert.is_false(w.transport:is_reading())
      assert.is_true(r:read(-1) == pattern(200000))
      w:close()
      w:wait_closed()
      shut(server)
    end)
  end)

  it("get_extra_info, transport, tostring", function()
    local loop = rtloop()
    run(loop, function()
      local peer = loop:create_future()
      local server = loom.start_server(function(r, w)
        peer:set_result(w:get_extra_info("peername"))
        r:read(-1)
        w:close()
      end, "127.0.0.1", 0)
      local port = port_of(server)
      local _, w = loom.open_connection("127.0.0.1", port)
      local pn = w:get_extra_info("peername")
      assert.are.equal("127.0.0.1", pn.host)
      assert.are.equal(port, pn.port)
      local sn = w:get_extra_info("sockname")
      assert.are.same(sn, peer:await())
      assert.are.equal("dflt", w:get_extra_info("nothing", "dflt"))
      assert.is_nil(w:get_extra_info("nothing"))
      assert.are.equal("loom.TCPTransport", getmetatable(w.transport).__name)
      contains("loom.StreamWriter", tostring(w))
      contains("loom.StreamReaderProtocol", tostring(w._protocol))
      w:close()
      w:wait_closed()
      shut(server)
    end)
  end)

  it("StreamReaderProtocol and StreamWriter by hand", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      local reader = loom.StreamReader()
      local proto = loom.StreamReaderProtocol(reader)
      local t = loop:create_connection(function() return proto end,
                                       "127.0.0.1", port_of(server))
      local w = loom.StreamWriter(t, proto, reader)
      assert.are.equal(t, w.transport)
      w:write("by hand\n")
      assert.are.equal("by hand\n", reader:readline())
      w:close()
      w:wait_closed()
      assert.is_true(reader:at_eof())
      shut(server)
    end)
  end)

  it("writers bound to their reader and writers by hand behave alike", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      -- open_connection's writer has write and drain bound in C
      local r1, w1 = loom.open_connection("127.0.0.1", port_of(server))
      assert.are.equal("function", type(rawget(w1, "drain")))
      -- a writer whose reader is not its protocol's uses the Lua methods
      local reader = loom.StreamReader()
      local proto = loom.StreamReaderProtocol(reader)
      local t = loop:create_connection(function() return proto end,
                                       "127.0.0.1", port_of(server))
      local r2 = loom.StreamReader()
      local w2 = loom.StreamWriter(t, proto, r2)
      assert.is_nil(rawget(w2, "drain"))
      for _, c in ipairs{{r1, w1}, {reader, w2}} do
        local r, w = c[1], c[2]
        w:write("a line\n")
        w:drain()
        assert.are.equal("a line\n", r:readline())
        contains("string expected", raised(w.write, w, 42))
        contains("bad argument #1 to 'drain' (loom.StreamWriter expected, got string)",
          raised(w.drain, "x"))
        -- paused for writing: drain waits for resume_writing
        w._protocol:pause_writing()
        local d = loom.create_task(function() w:drain(); return "drained" end)
        loom.sleep(0.01)
        assert.is_false(d:done())
        w._protocol:resume_writing()
        assert.are.equal("drained", d:await())
        w:write_eof()
        contains("cannot write after write_eof", raised(w.write, w, "late"))
        -- the transport's errors point at the line that called the
        -- writer's method, in the fast paths and in the Lua methods
        for _, f in ipairs{function() w:write("late") end,
                           function() w:writelines({"la", "te"}) end} do
          local e = H.raised(f)
          assert.matches("^[^:]*streams_tcp_spec%.lua:%d+: write%a*: cannot "
            .. "write after write_eof", e)
        end
        -- errors of the Lua methods behind the C fast paths: at the
        -- caller's line too
        for _, c in ipairs{{function() w.write(nil, "x") end, "write", "nil"},
                           {function() w.drain({}) end, "drain", "table"}} do
          local e = H.raised(c[1])
          assert.matches("^[^:]*streams_tcp_spec%.lua:%d+: bad argument #1 to '"
            .. c[2] .. "' %(loom.StreamWriter expected, got " .. c[3] .. "%)", e)
        end
        local eb = H.raised(function() w:write(loom.Buffer(2)) end)
        assert.matches("^[^:]*streams_tcp_spec%.lua:%d+: write: cannot write "
          .. "after write_eof", eb)
        local e = H.raised(function() w:writelines({"a", 5}) end)
        assert.matches("^[^:]*streams_tcp_spec%.lua:%d+: bad argument #1 "
          .. "to 'writelines' %(item 2 is a number, string expected%)", e)
        assert.are.equal("", r:read(-1))
        w:close()
        w:wait_closed()
        -- lost: writes are ignored, drain raises
        w:write("ignored")
        assert.are.equal("ECONNRESET", raised(w.drain, w).code)
      end
      shut(server)
    end)
  end)

  it("reads into the reader's buffer, unless data_received was replaced", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      -- data fed by hand before the socket's: kept, then joined
      local r1, w1 = loom.open_connection("127.0.0.1", port_of(server))
      r1:feed_data("pre-")
      w1:write("abc\n")
      assert.are.equal("pre-abc\n", r1:readline())
      local bulk = loom.start_server(echo_blocks, "127.0.0.1", 0)
      local r2, w2 = loom.open_connection("127.0.0.1", port_of(bulk))
      local long = pattern(300000, 3)       -- several reads of the socket
      w2:write(long)
      local back = r2:readexactly(#long)
      assert.is_true(long == back)
      w2:close()
      shut(bulk)
      -- a protocol whose data_received is its own sees every byte
      local seen = {}
      local reader = loom.StreamReader()
      local proto = loom.StreamReaderProtocol(reader)
      function proto:data_received(d)
        seen[#seen + 1] = d
        reader:feed_data(d:upper())
      end
      local t = loop:create_connection(function() return proto end,
                                       "127.0.0.1", port_of(server))
      t:write("shout\n")
      assert.are.equal("SHOUT\n", reader:readline())
      assert.are.equal("shout\n", table.concat(seen))
      -- a new protocol set on the transport gets the data instead
      local other = {}
      local got = loop:create_future()
      function other.data_received(_, d) got:set_result(d) end
      w1.transport:set_protocol(other)
      w1:write("moved\n")
      assert.are.equal("moved\n", got:await())
      t:close()
      w1:close()
      shut(server)
    end)
  end)

  it("wakes a waiting wait_closed, and cancelling one is safe", function()
    local loop = rtloop()
    run(loop, function()
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      local _, w = loom.open_connection("127.0.0.1", port_of(server))
      local a = loom.create_task(function() w:wait_closed(); return "a" end)
      local b = loom.create_task(function() w:wait_closed(); return "b" end)
      loom.sleep(0.01)
      b:cancel()
      loom.sleep(0)
      assert.is_true(b:cancelled())
      assert.is_false(a:done())
      local r2 = w._protocol._reader
      w:write_eof()                    -- the server closes on EOF,
      assert.are.equal("", r2:read(-1))
      loom.sleep(0.05)
      assert.is_false(a:done())        -- yet this side stays half-open
      w:close()
      assert.are.equal("a", a:await())
      assert.is_true(w:is_closing())
      shut(server)
    end)
  end)

  it("rejects bad input", function()
    local loop = rtloop()
    contains("no running event loop", raised(loom.start_server, echo_lines, "127.0.0.1", 0))
    contains("no running event loop", raised(loom.open_connection, "127.0.0.1", 1))
    run(loop, function()
      contains("bad argument #1 to 'start_server' (function expected, got nil)",
        raised(loom.start_server, nil, "127.0.0.1", 0))
      contains("bad argument #4 to 'start_server' (table expected, got number)",
        raised(loom.start_server, echo_lines, "127.0.0.1", 0, 5))
      contains("bad argument #3 to 'open_connection' (table expected, got string)",
        raised(loom.open_connection, "127.0.0.1", 1, "x"))
      for _, lim in ipairs{0, -1, 1.5, "10"} do
        contains("limit must be a positive integer",
          raised(loom.open_connection, "127.0.0.1", 1, {limit = lim}))
        contains("limit must be a positive integer",
          raised(loom.start_server, echo_lines, "127.0.0.1", 0, {limit = lim}))
      end
      -- the loop method's argument errors, named and numbered as the
      -- function's, at the caller's line
      contains("bad argument #2 to 'open_connection' (port number expected, got string)",
        raised(loom.open_connection, "127.0.0.1", "x"))
      contains("bad argument #3 to 'start_server'",
        raised(loom.start_server, echo_lines, "127.0.0.1", -1))
      local err = H.raised
      local here = "^[^:]*streams_tcp_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #1 to 'get_extra_info' %(string expected, got nil%)",
        err(function() loom.StreamWriter({}, loom.StreamReaderProtocol(
          loom.StreamReader())):get_extra_info(nil) end))
      assert.matches(here .. "bad argument #1 to 'open_connection' %(host expected, got nil%)",
        err(function() loom.open_connection(nil, 80) end))
      assert.matches(here .. "bad argument #2 to 'start_server' %(host contains an embedded zero%)",
        err(function() loom.start_server(echo_lines, "a\0b", 0) end))
      assert.matches(here .. "bad argument #1 to 'open_unix_connection' %(path is empty%)",
        err(function() loom.open_unix_connection("") end))
      assert.matches(here .. "bad argument #2 to 'start_unix_server' %(path is empty%)",
        err(function() loom.start_unix_server(echo_lines, "") end))
      -- a misspelt option is an error, as asyncio's unexpected keyword
      assert.matches(here .. "bad argument #3 to 'open_connection' %(unknown option 'tiemout'%)",
        err(function() loom.open_connection("127.0.0.1", 1, {tiemout = 5}) end))
      assert.matches(here .. "bad argument #4 to 'start_server' %(unknown option 'backlg'%)",
        err(function() loom.start_server(echo_lines, "127.0.0.1", 0, {backlg = 5}) end))
      assert.matches(here .. "bad argument #2 to 'open_unix_connection' %(unknown option '1'%)",
        err(function() loom.open_unix_connection("/nonexistent.sock", {5}) end))
      assert.matches(here .. "bad argument #3 to 'start_unix_server' %(unknown option 'reuse_port'%)",
        err(function() loom.start_unix_server(echo_lines, "/tmp/x.sock", {reuse_port = true}) end))
      contains("bad argument #1 to 'StreamReaderProtocol' (loom.StreamReader expected",
        raised(loom.StreamReaderProtocol, {}))
      contains("bad argument #2 to 'StreamReaderProtocol' (function expected",
        raised(loom.StreamReaderProtocol, loom.StreamReader(), 5))
      contains("bad argument #1 to 'StreamWriter' (transport expected",
        raised(loom.StreamWriter))
      contains("bad argument #1 to 'StreamWriter' (transport expected, got string)",
        raised(loom.StreamWriter, "a\0b",
               loom.StreamReaderProtocol(loom.StreamReader())))
      contains("bad argument #2 to 'StreamWriter' (loom.StreamReaderProtocol expected",
        raised(loom.StreamWriter, {}, {}))
      local server = loom.start_server(echo_lines, "127.0.0.1", 0)
      local _, w = loom.open_connection("127.0.0.1", port_of(server))
      contains("bad argument #1 to 'write' (loom.StreamWriter expected, got string)",
        raised(w.write, "data"))
      contains("bad argument #1 to 'drain' (loom.StreamWriter expected, got nil)",
        raised(w.drain))
      raised(w.write, w, {})
      raised(w.writelines, w, {1, {}})
      contains("bad argument #3 to 'StreamWriter' (loom.StreamReader expected",
        raised(loom.StreamWriter, w.transport, w._protocol, 5))
      w:close()
      w:wait_closed()
      shut(server)
    end)
  end)
end)
