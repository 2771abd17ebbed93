-- streams_spec.lua
-- StreamReader (host/streambuf.c, lua/loom/streams.lua): asyncio's
-- read, readexactly, readuntil, readline and async iteration over a C
-- buffer, driven by feed_data / feed_eof from callbacks on virtual-time
-- loops.

local H = require "helper"
local loom = require "loom"
H.setup()

local raised, contains = H.raised, H.contains
local core = require "loom.core"

if core._StreamReader == nil then
  pending("host/streambuf.c is not opened by loom.core yet")
  return
end

local StreamReader = loom.StreamReader
local IncompleteReadError = loom.IncompleteReadError
local LimitOverrunError = loom.LimitOverrunError

-- Feeds each chunk from its own callback, dt apart, then EOF when eof.
local function feeder(loop, r, chunks, eof, dt)
  dt = dt or 0.01
  for i, c in ipairs(chunks) do
    loop:call_later(dt * i, function() r:feed_data(c) end)
  end
  if eof then
    loop:call_later(dt * (#chunks + 1), function() r:feed_eof() end)
  end
end

-- The error a task ends with.
local function failure(task)
  local ok, e = pcall(loom.await, task)
  assert(not ok, "expected the task to fail")
  return e
end

describe("StreamReader construction", function()
  it("has asyncio's default limit and a readable tostring", function()
    local r = StreamReader()
    assert.equal(65536, r:_limit())
    assert.equal("<StreamReader>", tostring(r))
    assert.equal(10, StreamReader{ limit = 10 }:_limit())
    r:feed_data("abc")
    r:feed_eof()
    assert.equal("<StreamReader 3 bytes eof>", tostring(r))
  end)

  it("rejects bad limits and options", function()
    contains("limit must be positive", raised(StreamReader, { limit = 0 }))
    contains("limit must be positive", raised(StreamReader, { limit = -5 }))
    contains("limit must be an integer", raised(StreamReader, { limit = 1.5 }))
    contains("limit must be an integer", raised(StreamReader, { limit = "9" }))
    contains("'StreamReader' (table expected, got number)",
      raised(StreamReader, 5))
    contains("'StreamReader' (unknown option 'limt')",
      raised(StreamReader, { limt = 10 }))
  end)

  it("checks self", function()
    local r = StreamReader()
    contains("loom.StreamReader expected", raised(r.feed_data, {}, "x"))
    contains("bad argument #1 to 'read' (loom.StreamReader expected, got number)",
      raised(r.read, 42, 1))
    contains("bad argument #1 to 'lines' (loom.StreamReader expected, got table)",
      raised(r.lines, {}))
    contains("bad argument #1 to 'readexactly' (loom.StreamReader expected, got no value)",
      raised(r.readexactly))
    contains("bad argument #1 to 'readuntil' (loom.StreamReader expected, got string)",
      raised(r.readuntil, "\n"))
    contains("bad argument #1 to 'readline' (loom.StreamReader expected, got loom.Future)",
      raised(r.readline, H.loop():create_future()))
  end)
end)

describe("StreamReader.read", function()
  it("returns what is buffered, up to n, without waiting", function()
    local r = StreamReader()
    r:feed_data("hello world")
    assert.equal("hello", r:read(5))
    assert.equal(" world", r:read(100))
    assert.equal("", r:read(0))
  end)

  it("waits for data when the buffer is empty", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "ab", "cd" })
    local got, when = loop:run_until_complete(function()
      local a = r:read(10)
      return a, loop:time()
    end)
    assert.equal("ab", got)
    assert.near(0.01, when, 1e-9)
    loop:run_until_complete(function() loom.sleep(1) end)
    assert.equal("cd", r:read(10))
  end)

  it("returns partial reads as chunks arrive, then \"\" at EOF", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "abc", "defgh" }, true)
    local got = loop:run_until_complete(function()
      local t = {}
      repeat
        local s = r:read(4)
        t[#t + 1] = s
      until s == ""
      return t
    end)
    assert.same({ "abc", "defg", "h", "" }, got)
    assert.is_true(r:at_eof())
  end)

  it("read() and read(-1) read everything up to EOF", function()
    local loop = H.loop()
    local r = StreamReader{ limit = 3 }
    feeder(loop, r, { "one ", "two ", "three" }, true)
    assert.equal("one two three", loop:run_until_complete(function()
      return r:read()
    end))
    local r2 = StreamReader()
    feeder(loop, r2, { "x", "y" }, true)
    assert.equal("xy", loop:run_until_complete(function()
      return r2:read(-1)
    end))
    assert.equal("", r2:read(-1))
    assert.equal("", r2:read(5))
  end)

  it("_try_read(-1) answers only at EOF", function()
    local r = StreamReader()
    r:feed_data("abc")
    assert.is_nil(r:_try_read(-1))
    r:feed_eof()
    assert.is_false(r:at_eof())
    assert.equal("abc", r:_try_read(-1))
    assert.is_true(r:at_eof())
  end)

  it("rejects bad sizes, naming the method", function()
    local r = StreamReader()
    contains("bad argument #1 to 'read' (integer expected, got non-integer number)",
      raised(r.read, r, 1.5))
    contains("bad argument #1 to 'read' (size must be -1 or non-negative, got -2)",
      raised(r.read, r, -2))
    contains("bad argument #1 to 'read' (integer expected, got string)",
      raised(r.read, r, "x"))
  end)

  it("cannot wait outside a running loop", function()
    local r = StreamReader()
    contains("read: no running event loop", raised(r.read, r, 1))
  end)
end)

describe("StreamReader.readexactly", function()
  it("collects exactly n bytes across many small feeds", function()
    local loop = H.loop()
    local r = StreamReader()
    local chunks = {}
    for i = 1, 100 do chunks[i] = string.char(64 + i % 26) end
    feeder(loop, r, chunks)
    local a, b = loop:run_until_complete(function()
      return r:readexactly(60), r:readexactly(40)
    end)
    assert.equal(table.concat(chunks):sub(1, 60), a)
    assert.equal(table.concat(chunks):sub(61), b)
    assert.equal("", r:readexactly(0))
  end)

  it("raises IncompleteReadError with .partial and .expected at EOF", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "abc", "de" }, true)
    local t = loop:create_task(function() return r:readexactly(10) end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    local e = failure(t)
    assert.is_true(IncompleteReadError:is(e))
    assert.equal("abcde", e.partial)
    assert.equal(10, e.expected)
    assert.equal("IncompleteReadError: 5 bytes read on a total of 10 expected bytes",
      tostring(e))
    assert.is_true(r:at_eof())
  end)

  it("rejects negative and non-integer sizes", function()
    local r = StreamReader()
    contains("'readexactly' (size must be non-negative, got -1)",
      raised(r.readexactly, r, -1))
    contains("'readexactly' (integer expected, got nil)",
      raised(r.readexactly, r))
  end)
end)

describe("StreamReader.readuntil", function()
  it("finds a multi-byte separator split across feeds", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "GET / HTTP/1.1\r", "\nHost: x\r\n\r", "\nbody" })
    local head = loop:run_until_complete(function()
      return r:readuntil("\r\n\r\n")
    end)
    assert.equal("GET / HTTP/1.1\r\nHost: x\r\n\r\n", head)
    assert.equal("body", r:read(100))
  end)

  it("finds a separator fed one byte at a time", function()
    local loop = H.loop()
    local r = StreamReader()
    local data = string.rep("ab", 500) .. "--END--" .. "tail"
    local chunks = {}
    for i = 1, #data do chunks[i] = data:sub(i, i) end
    feeder(loop, r, chunks, false, 0.001)
    local got = loop:run_until_complete(function()
      return r:readuntil("--END--")
    end)
    assert.equal(string.rep("ab", 500) .. "--END--", got)
    loop:run_until_complete(function() loom.sleep(1) end)
    assert.equal("tail", r:read(10))
  end)

  it("defaults to \"\\n\" and treats NUL bytes as data", function()
    local r = StreamReader()
    r:feed_data("a\0b\0c\nz")
    assert.equal("a\0", r:readuntil("\0"))
    assert.equal("b\0c\n", r:readuntil())
  end)

  it("raises LimitOverrunError and keeps the data (separator not found)", function()
    local r = StreamReader{ limit = 4 }
    r:feed_data("abcdefgh")
    local e = raised(r.readuntil, r, "x")
    assert.is_true(LimitOverrunError:is(e))
    assert.equal(8, e.consumed)
    contains("Separator is not found, and chunk exceed the limit", tostring(e))
    assert.equal("abcdefgh", r:read(100))
  end)

  it("raises LimitOverrunError and keeps the data (separator past the limit)", function()
    local r = StreamReader{ limit = 4 }
    r:feed_data("abcdef\nxy")
    local e = raised(r.readuntil, r, "\n")
    assert.is_true(LimitOverrunError:is(e))
    assert.equal(6, e.consumed)
    contains("Separator is found, but chunk is longer than limit", tostring(e))
    assert.equal("abcdef\nxy", r:read(100))
  end)

  it("raises LimitOverrunError once the data waited for passes the limit", function()
    local loop = H.loop()
    local r = StreamReader{ limit = 5 }
    feeder(loop, r, { "abc", "defg", "hij" })
    local t = loop:create_task(function() return r:readuntil("!!") end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    local e = failure(t)
    assert.is_true(LimitOverrunError:is(e))
    assert.equal(6, e.consumed)   -- 7 bytes buffered, 7 + 1 - 2
    loop:run_until_complete(function() loom.sleep(1) end)
    assert.equal("abcdefghij", r:read(100))
  end)

  it("raises IncompleteReadError with .expected nil at EOF", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "no separator" }, true)
    local t = loop:create_task(function() return r:readuntil("\r\n") end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    local e = failure(t)
    assert.is_true(IncompleteReadError:is(e))
    assert.equal("no separator", e.partial)
    assert.is_nil(e.expected)
    contains("12 bytes read on a total of undefined expected bytes", tostring(e))
  end)

  it("rescans correctly when another reader consumed data meanwhile", function()
    local r = StreamReader()
    r:feed_data("abc;")
    local s, pos = r:_try_readuntil("$")
    assert.is_nil(s)
    assert.equal(4, pos)
    assert.equal("ab", r:read(2))
    r:feed_data("$")
    assert.equal("c;$", r:_try_readuntil("$", pos))
  end)

  it("rejects an empty or non-string separator", function()
    local r = StreamReader()
    contains("'readuntil' (separator should be at least one-byte string)",
      raised(r.readuntil, r, ""))
    contains("'readuntil' (string expected, got number)",
      raised(r.readuntil, r, 5))
  end)
end)

describe("StreamReader.readline", function()
  it("returns lines with their newline, the partial last line, then \"\"", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "first\nsec", "ond\nla", "st" }, true)
    local got = loop:run_until_complete(function()
      return { r:readline(), r:readline(), r:readline(), r:readline() }
    end)
    assert.same({ "first\n", "second\n", "last", "" }, got)
  end)

  it("drops a line longer than the limit and raises a plain error", function()
    local r = StreamReader{ limit = 5 }
    r:feed_data("0123456789\nabc\n")
    local e = raised(r.readline, r)
    assert.equal("string", type(e))
    contains("readline: Separator is found, but chunk is longer than limit", e)
    assert.equal("abc\n", r:readline())
  end)

  it("drops the whole buffer when no newline is within the limit", function()
    local loop = H.loop()
    local r = StreamReader{ limit = 5 }
    feeder(loop, r, { "0123", "456789", "x\n" })
    local t = loop:create_task(function() return r:readline() end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    contains("readline: Separator is not found, and chunk exceed the limit",
      failure(t))
    assert.equal("", r:read(0))
    loop:run_until_complete(function() loom.sleep(1) end)
    assert.equal("x\n", r:readline())
  end)

  it("lines() iterates asyncio-style, newline kept, until EOF", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "a\nb", "\n", "c" }, true)
    local got = loop:run_until_complete(function()
      local t = {}
      for line in r:lines() do t[#t + 1] = line end
      return t
    end)
    assert.same({ "a\n", "b\n", "c" }, got)
  end)
end)

describe("StreamReader waiting", function()
  it("raises an exception set while a read waits, and on every later read", function()
    local loop = H.loop()
    local r = StreamReader()
    local boom = { "boom" }
    loop:call_later(1, function() r:set_exception(boom) end)
    local t = loop:create_task(function() return r:readexactly(3) end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    assert.equal(boom, failure(t))
    assert.equal(boom, r:exception())
    r:feed_data("abc")
    assert.equal(boom, raised(r.read, r, 1))
    assert.equal(boom, raised(r.readline, r))
    assert.equal(boom, raised(r.read, r))
    contains("'set_exception' (error value expected, got no value)",
      raised(r.set_exception, r))
  end)

  it("a cancelled read loses no data", function()
    local loop = H.loop()
    local r = StreamReader()
    feeder(loop, r, { "abc", "def" })
    local t = loop:create_task(function() return r:readexactly(10) end)
    loop:call_later(0.015, function() t:cancel() end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    assert.is_true(t:cancelled())
    loop:call_later(0.05, function() r:feed_data("ghij") end)
    assert.equal("abcdefghij", loop:run_until_complete(function()
      return r:readexactly(10)
    end))
  end)

  it("a second concurrent reader is an error", function()
    local loop = H.loop()
    local r = StreamReader()
    local t1 = loop:create_task(function() return r:readline() end)
    local t2 = loop:create_task(function() return r:read(5) end)
    loop:call_later(1, function() r:feed_data("ok\n") end)
    loop:run_until_complete(function()
      pcall(loom.await, t1)
      pcall(loom.await, t2)
    end)
    assert.equal("ok\n", t1:result())
    contains("read: called while another coroutine is already waiting for incoming data",
      failure(t2))
  end)

  it("feed_eof wakes a waiting read", function()
    local loop = H.loop()
    local r = StreamReader()
    loop:call_later(1, function() r:feed_eof() end)
    assert.equal("", loop:run_until_complete(function() return r:read(10) end))
    assert.is_true(r:at_eof())
  end)
end)

describe("StreamReader waiter", function()
  it("a cancelled read leaves no waiter behind", function()
    local loop = H.loop()
    local r = StreamReader()
    local t = loop:create_task(function() return r:read(10) end)
    loop:run_until_complete(function() loom.sleep(0.01) end)
    assert.equal("<StreamReader waiter>", tostring(r))
    t:cancel()
    loop:run_until_complete(function() pcall(loom.await, t) end)
    assert.is_true(t:cancelled())
    assert.equal("<StreamReader>", tostring(r))
    loop:call_later(0.01, function() r:feed_data("next") end)
    assert.equal("next", loop:run_until_complete(function()
      return r:read(10)
    end))
  end)

  it("a read from a plain coroutine inside a task fails and leaves no waiter", function()
    local loop = H.loop()
    local r = StreamReader()
    local e = loop:run_until_complete(function()
      local ok, err = coroutine.wrap(function() return pcall(r.read, r, 1) end)()
      assert.is_false(ok)
      return err
    end)
    contains("not a task", e)
    assert.equal("<StreamReader>", tostring(r))
    loop:call_later(0.01, function() r:feed_data("x") end)
    assert.equal("x", loop:run_until_complete(function() return r:read(1) end))
  end)

  it("waits again and again, cancelled waits and an error between them", function()
    local loop = H.loop()
    local r = StreamReader()
    local got = {}
    for round = 1, 3 do
      -- one task waits 50 times in a row
      for i = 1, 50 do
        loop:call_later(0.001 * i, function() r:feed_data(round .. ":" .. i .. ";") end)
      end
      loop:run_until_complete(function()
        for _ = 1, 50 do got[#got + 1] = r:readuntil(";") end
      end)
      -- a wait cancelled with a message, then one cancelled before it ran
      local t = loop:create_task(function() return r:read(1) end)
      loop:run_until_complete(function() loom.sleep(0.01) end)
      t:cancel("stop")
      loop:run_until_complete(function() pcall(loom.await, t) end)
      assert.is_true(t:cancelled())
      local t2 = loop:create_task(function() return r:read(1) end)
      t2:cancel()
      loop:run_until_complete(function() pcall(loom.await, t2) end)
      assert.equal("<StreamReader>", tostring(r))
    end
    assert.equal(150, #got)
    assert.equal("3:50;", got[150])
    local boom = { "boom" }
    loop:call_later(0.01, function() r:set_exception(boom) end)
    local t = loop:create_task(function() return r:readline() end)
    loop:run_until_complete(function() pcall(loom.await, t) end)
    assert.equal(boom, failure(t))
  end)

  it("every waiting read wakes on feed_data, feed_eof and set_exception", function()
    local loop = H.loop()
    local reads = {
      function(r) return r:read(2) end,
      function(r) return r:read() end,
      function(r) return r:readexactly(2) end,
      function(r) return r:readuntil("!") end,
      function(r) return r:readline() end,
    }
    for i, f in ipairs(reads) do
      local r = StreamReader()
      feeder(loop, r, { "a", "b!\n", "c" }, true)
      local got = loop:run_until_complete(function() return f(r) end)
      assert.equal(({ "a", "ab!\nc", "ab", "ab!", "ab!\n" })[i], got)
      local r2 = StreamReader()
      local boom = { "boom" }
      loop:call_later(0.01, function() r2:set_exception(boom) end)
      local t = loop:create_task(f, r2)
      loop:run_until_complete(function() pcall(loom.await, t) end)
      assert.equal(boom, failure(t))
    end
  end)
end)

describe("StreamReader kept strings", function()
  -- Data fed into an empty buffer is kept as the string itself; these
  -- go through every way out of that state.

  it("reads a kept string whole, in parts, and after more data", function()
    local r = StreamReader()
    r:feed_data("hello world")
    assert.equal("<StreamReader 11 bytes>", tostring(r))
    assert.equal("hello world", r:read(100))
    r:feed_data("hello world")
    assert.equal("hello", r:read(5))
    assert.equal(" ", r:read(1))
    assert.equal("world", r:read(5))
    assert.equal("<StreamReader>", tostring(r))
    r:feed_data("abc")                         -- kept
    assert.equal("a", r:read(1))               -- partial read of it
    r:feed_data("def")                         -- "bc" moves to the buffer
    r:feed_data("ghi")
    assert.equal("bcdefgh", r:read(7))
    r:feed_data("jk")
    assert.equal("ijk", r:read(10))
    local s = "same"
    r:feed_data(s)
    r:feed_data(s)
    assert.equal("samesame", r:read(8))
  end)

  it("readline and readuntil across a kept string and a copied chunk", function()
    local r = StreamReader()
    r:feed_data("ab")
    r:feed_data("c\nd")
    assert.equal("abc\n", r:readline())
    r:feed_data("e\nf")
    assert.equal("de\n", r:readline())
    assert.equal("f", r:read(5))
    r:feed_data("12$")
    r:feed_data("$34")
    assert.equal("12$$", r:readuntil("$$"))
    assert.equal("34", r:readexactly(2))
    local loop = H.loop()
    feeder(loop, r, { "no newline yet", " still", " done\nrest" })
    assert.equal("no newline yet still done\n", loop:run_until_complete(function()
      return r:readline()
    end))
    feeder(loop, r, { "ab", "cd|", "|" })
    assert.equal("restabcd||", loop:run_until_complete(function()
      return r:readuntil("||")
    end))
  end)

  it("keeps the limit rules on a kept string", function()
    local r = StreamReader{ limit = 4 }
    r:feed_data("abcdefgh")
    local e = raised(r.readuntil, r, ";")
    assert.is_true(LimitOverrunError:is(e))
    assert.equal(8, e.consumed)
    assert.equal("abcdefgh", r:read(100))     -- the data stayed
    r:feed_data("abcdef;")
    e = raised(r.readuntil, r, ";")
    assert.is_true(LimitOverrunError:is(e))
    assert.equal(6, e.consumed)
    assert.equal("abcdef;", r:readexactly(7))
    r:feed_data("abcdefgh")
    contains("Separator is not found", raised(r.readline, r))
    assert.equal("<StreamReader limit=4>", tostring(r))   -- dropped
    r:feed_data("abcdefg\nxy")
    contains("Separator is found, but chunk is longer than limit",
      raised(r.readline, r))
    r:feed_eof()
    assert.equal("xy", r:readline())
    assert.equal("", r:readline())
  end)

  it("raises a set exception over kept data", function()
    local r = StreamReader()
    r:feed_data("abc")
    local boom = { "boom" }
    r:set_exception(boom)
    assert.equal(boom, raised(r.read, r, 1))
    assert.equal(boom, raised(r.readuntil, r, "c"))
    assert.equal(boom, raised(r.readexactly, r, 1))
  end)

  it("gives kept bytes at EOF to IncompleteReadError and read()", function()
    local r = StreamReader()
    r:feed_data("abc")
    r:feed_eof()
    local e = raised(r.readexactly, r, 5)
    assert.is_true(IncompleteReadError:is(e))
    assert.equal("abc", e.partial)
    assert.is_true(r:at_eof())
    local r2 = StreamReader()
    r2:feed_data("abcdef")
    assert.equal("ab", r2:read(2))
    r2:feed_eof()
    e = raised(r2.readuntil, r2, "x")
    assert.equal("cdef", e.partial)
    assert.is_nil(e.expected)
    local r3 = StreamReader()
    local big = string.rep("0123456789abcdef", 65536)
    r3:feed_data(big)
    r3:feed_eof()
    assert.is_true(big == r3:read())
    assert.is_true(r3:at_eof())
  end)

  it("counts kept bytes for flow control", function()
    local r = StreamReader{ limit = 4 }
    local calls = {}
    r:set_transport({
      pause_reading = function() calls[#calls + 1] = "pause" end,
      resume_reading = function() calls[#calls + 1] = "resume" end,
    })
    r:feed_data("123456789")
    assert.same({ "pause" }, calls)
    assert.equal("12345", r:read(5))
    assert.same({ "pause", "resume" }, calls)
    assert.equal("6789", r:read(5))
  end)
end)

describe("StreamReader buffer", function()
  it("reads back several MiB fed in many chunks byte-exact", function()
    local loop = H.loop()
    local r = StreamReader{ limit = 1 << 20 }
    local parts = {}
    for i = 1, 2048 do
      local c = string.char(i % 256, (i * 7) % 256, 0, (i * 13) % 256)
      parts[i] = string.rep(c, 256 + i % 512)
    end
    local whole = table.concat(parts)
    assert.is_true(#whole > 2 * 1024 * 1024)
    loop:call_soon(function()
      for _, p in ipairs(parts) do r:feed_data(p) end
      r:feed_eof()
    end)
    local got = loop:run_until_complete(function()
      local t, sizes, i = {}, { 1, 1000, 65536, 7, 300001 }, 0
      while not r:at_eof() do
        i = i + 1
        t[#t + 1] = r:read(sizes[i % #sizes + 1])
      end
      return table.concat(t)
    end)
    assert.equal(#whole, #got)
    assert.is_true(whole == got)
  end)

  it("interleaves feeds and reads without losing bytes", function()
    local r = StreamReader()
    local out, expect = {}, {}
    for i = 1, 5000 do
      local s = tostring(i) .. ","
      expect[#expect + 1] = s
      r:feed_data(s)
      if i % 3 == 0 then out[#out + 1] = r:readuntil(",") end
    end
    r:feed_eof()
    out[#out + 1] = r:read()
    assert.equal(table.concat(expect), table.concat(out))
  end)

  it("rejects bad data and feeding after EOF", function()
    local r = StreamReader()
    contains("bad argument #1 to 'feed_data' (string expected, got number)",
      raised(r.feed_data, r, 5))
    r:feed_data("")
    assert.equal("<StreamReader>", tostring(r))
    r:feed_eof()
    contains("feed_data: called after feed_eof", raised(r.feed_data, r, "x"))
  end)
end)

describe("StreamReader flow control", function()
  local function fake()
    local t = { calls = {} }
    function t:pause_reading() self.calls[#self.calls + 1] = "pause" end
    function t:resume_reading() self.calls[#self.calls + 1] = "resume" end
    return t
  end

  it("pauses past 2 * limit and resumes at limit", function()
    local r = StreamReader{ limit = 10 }
    local t = fake()
    r:set_transport(t)
    r:feed_data(string.rep("x", 20))
    assert.same({}, t.calls)
    r:feed_data("y")
    assert.same({ "pause" }, t.calls)
    r:feed_data(string.rep("z", 30))
    assert.same({ "pause" }, t.calls)
    r:read(30)
    assert.same({ "pause" }, t.calls)
    r:read(11)
    assert.same({ "pause", "resume" }, t.calls)
    contains("transport already set", raised(r.set_transport, r, fake()))
    contains("'set_transport' (transport expected, got no value)",
      raised(r.set_transport, StreamReader()))
    contains("'set_transport' (transport expected, got number)",
      raised(r.set_transport, StreamReader(), 42))
  end)

  it("resumes a paused transport when a read must wait", function()
    local loop = H.loop()
    local r = StreamReader{ limit = 4 }
    local t = fake()
    r:set_transport(t)
    r:feed_data("0123456789")
    assert.same({ "pause" }, t.calls)
    loop:call_later(1, function() r:feed_data("abcdefghij") end)
    local got = loop:run_until_complete(function() return r:readexactly(12) end)
    assert.equal("0123456789ab", got)
    -- resumed to wait; paused again by the feed (18 > 8 before the read)
    assert.same({ "pause", "resume", "pause" }, t.calls)
    r:read(4)
    assert.same({ "pause", "resume", "pause", "resume" }, t.calls)
  end)
end)
