-- fds_spec.lua: add_reader / add_writer / remove_*, wait_readable /
-- wait_writable (host/poll.c, lua/loom/fds.lua).

local H = require "helper"
local loom = require "loom"
H.setup()

local core = require "loom.core"

-- A pipe whose fds are closed after the test.
local opened = {}
local function pipe()
  local r, w = core._pipe()
  assert(r, w)
  opened[#opened + 1] = r
  opened[#opened + 1] = w
  return r, w
end

local function close(fd)
  for i, f in ipairs(opened) do
    if f == fd then
      table.remove(opened, i)
      assert(core._close(fd))
      return
    end
  end
end

after_each(function()
  for _, fd in ipairs(opened) do core._close(fd) end
  opened = {}
end)

-- A real-time loop with a guard that stops it after secs (default 2).
local function rloop(secs)
  local loop = H.loop { virtual_time = false }
  local guard = loop:call_later(secs or 2, function() loop:stop() end)
  return loop, guard
end

describe("the private pipe helpers", function()
  it("move bytes through a non-blocking pipe", function()
    local r, w = pipe()
    assert.are.equal(5, core._write(w, "hello"))
    assert.are.equal("hel", core._read(r, 3))
    assert.are.equal("lo", core._read(r, 10))
    local v, msg, code = core._read(r, 10)
    assert.is_nil(v)
    assert.are.equal("EAGAIN", code)
    H.contains("EAGAIN", msg)
    close(w)
    assert.are.equal("", core._read(r, 10))
  end)

  it("report errors as nil, message, code", function()
    local r = pipe()
    close(r)
    local v, msg, code = core._close(r)
    assert.is_nil(v)
    assert.are.equal("EBADF", code)
    H.contains("EBADF", msg)
  end)
end)

describe("add_reader", function()
  it("runs the callback with its arguments when data arrives", function()
    local loop = rloop()
    local r, w = pipe()
    local got
    loop:add_reader(r, H.expect(function(a, b)
      got = { a, b, core._read(r, 100) }
      assert.is_true(loop:remove_reader(r))
      loop:stop()
    end, 1), "x", 42)
    loop:call_soon(core._write, w, "data")
    loop:run_forever()
    assert.are.same({ "x", 42, "data" }, got)
  end)

  it("keeps firing each iteration until the fd is drained", function()
    local loop = rloop()
    local r, w = pipe()
    local n = 0
    loop:add_reader(r, function()
      n = n + 1
      if n == 3 then
        assert.are.equal("abc", core._read(r, 100))
        loop:call_later(0.05, function() loop:stop() end)
      end
    end)
    core._write(w, "abc")
    loop:run_forever()
    assert.are.equal(3, n)  -- not once more after the drain
    assert.is_true(loop:remove_reader(r))
  end)

  it("runs the callback as a loop callback, never inside the poll", function()
    local loop = rloop()
    local r, w = pipe()
    local trace, add = H.tracer()
    core._write(w, "x")
    loop:add_reader(r, function()
      add("reader")
      loop:call_soon(add, "soon")
      loop:remove_reader(r)
      loop:call_soon(loop.stop, loop)
    end)
    loop:run_forever()
    assert.are.same({ "reader", "soon" }, trace)
  end)

  it("sees end of file as readable", function()
    local loop = rloop()
    local r, w = pipe()
    close(w)
    local got
    loop:add_reader(r, H.expect(function()
      got = core._read(r, 10)
      loop:remove_reader(r)
      loop:stop()
    end, 1))
    loop:run_forever()
    assert.are.equal("", got)
  end)

  it("replaces the callback when added again", function()
    local loop = rloop()
    local r, w = pipe()
    loop:add_reader(r, H.expect(nil, 0))
    loop:add_reader(r, H.expect(function(tag)
      assert.are.equal("second", tag)
      loop:remove_reader(r)
      loop:stop()
    end, 1), "second")
    core._write(w, "x")
    loop:run_forever()
    assert.are.equal(0, loop:_fd_watchers())
  end)

  it("a replacement in the same batch does not run the old callback", function()
    local loop = rloop()
    local r, w = pipe()
    local a, b = pipe()
    core._write(w, "x")
    core._write(b, "x")
    local calls = {}
    -- both fds are ready in the same poll; whichever runs first replaces
    -- the other's reader, so exactly one of the originals runs
    local function first(mine, other)
      calls[#calls + 1] = mine
      loop:add_reader(other, function()
        calls[#calls + 1] = "replacement"
        loop:remove_reader(other)
        loop:stop()
      end)
      loop:remove_reader(mine)
    end
    loop:add_reader(r, first, r, a)
    loop:add_reader(a, first, a, r)
    loop:run_forever()
    assert.are.equal(2, #calls)
    assert.are.equal("replacement", calls[2])
  end)

  it("remove_reader returns true once, then false", function()
    local loop = H.loop()
    local r = pipe()
    assert.is_false(loop:remove_reader(r))
    loop:add_reader(r, print)
    assert.are.equal(1, loop:_fd_watchers())
    assert.is_true(loop:remove_reader(r))
    assert.is_false(loop:remove_reader(r))
    assert.are.equal(0, loop:_fd_watchers())
  end)

  it("a removed reader does not run even when its event was queued", function()
    local loop = rloop()
    local r, w = pipe()
    local a, b = pipe()
    core._write(w, "x")
    core._write(b, "x")
    local ran = 0
    local function cb(other)
      ran = ran + 1
      loop:remove_reader(other)
      loop:call_soon(loop.stop, loop)
    end
    loop:add_reader(r, cb, a)
    loop:add_reader(a, cb, r)
    loop:run_forever()
    assert.are.equal(1, ran)
    assert.is_false(loop:remove_reader(r) and loop:remove_reader(a))
  end)

  it("can remove itself in its callback", function()
    local loop = rloop(0.2)
    local r, w = pipe()
    core._write(w, "x")
    loop:add_reader(r, H.expect(function()
      assert.is_true(loop:remove_reader(r))
    end, 1))
    loop:run_forever()  -- the guard stops it; data is still there
    assert.are.equal(0, loop:_fd_watchers())
  end)
end)

describe("add_writer", function()
  it("fires on a writable pipe, with arguments", function()
    local loop = rloop()
    local _, w = pipe()
    loop:add_writer(w, H.expect(function(a, b, c)
      assert.are.same({ 1, nil, 3 }, { a, b, c })
      assert.are.equal(2, core._write(w, "hi"))
      assert.is_true(loop:remove_writer(w))
      loop:stop()
    end, 1), 1, nil, 3)
    loop:run_forever()
  end)

  it("replaces and removes like the reader", function()
    local loop = rloop()
    local _, w = pipe()
    assert.is_false(loop:remove_writer(w))
    loop:add_writer(w, H.expect(nil, 0))
    loop:add_writer(w, H.expect(function()
      assert.is_true(loop:remove_writer(w))
      assert.is_false(loop:remove_writer(w))
      loop:stop()
    end, 1))
    loop:run_forever()
  end)

  it("a full pipe is not writable until drained", function()
    local loop = rloop()
    local r, w = pipe()
    local chunk = string.rep("x", 65536)
    while core._write(w, chunk) do end
    local drained = false
    loop:add_writer(w, H.expect(function()
      assert.is_true(drained)
      loop:remove_writer(w)
      loop:stop()
    end, 1))
    loop:call_later(0.05, function()
      drained = true
      while core._read(r, 65536) do end
    end)
    loop:run_forever()
  end)
end)

describe("a reader and a writer on the same fd", function()
  it("run independently", function()
    local loop = rloop()
    local r, w = pipe()
    -- a pipe end is one-way: watch both directions on a socket-like pair
    -- by watching the read end for reading and the write end for both
    local trace, add = H.tracer()
    loop:add_writer(w, function()
      add("writer")
      loop:remove_writer(w)
      core._write(w, "x")
    end)
    loop:add_reader(w, H.expect(nil, 0))  -- the write end never reads
    loop:add_reader(r, function()
      add("reader")
      core._read(r, 10)
      loop:remove_reader(r)
      loop:stop()
    end)
    loop:run_forever()
    assert.are.same({ "writer", "reader" }, trace)
    assert.are.equal(1, loop:_fd_watchers())  -- w's reader is left
    assert.is_true(loop:remove_reader(w))
    assert.are.equal(0, loop:_fd_watchers())
  end)

  it("share one watcher: removing one keeps the other", function()
    local loop = rloop()
    local _, w = pipe()
    local n = 0
    loop:add_reader(w, print)
    loop:add_writer(w, function()
      n = n + 1
      if n == 2 then loop:remove_writer(w); loop:stop() end
    end)
    assert.are.equal(1, loop:_fd_watchers())
    assert.is_true(loop:remove_reader(w))
    assert.are.equal(1, loop:_fd_watchers())
    loop:run_forever()
    assert.are.equal(2, n)
    assert.are.equal(0, loop:_fd_watchers())
  end)

  it("both run after a poll error", function()
    local loop = rloop(0.3)
    local r, w = pipe()
    close(r)  -- the write end now reports an error (EPOLLERR)
    local trace, add = H.tracer()
    loop:add_reader(w, H.expect(function() add("reader") end, 1))
    loop:add_writer(w, H.expect(function() add("writer") end, 1))
    loop:run_forever()
    table.sort(trace)
    assert.are.same({ "reader", "writer" }, trace)
    -- still installed, though libuv stopped the poll
    assert.is_true(loop:remove_writer(w))
    assert.is_true(loop:remove_reader(w))
  end)
end)

describe("callbacks that raise", function()
  it("go to the exception handler and the loop goes on", function()
    local loop = rloop()
    local got = H.capture(loop)
    local r, w = pipe()
    core._write(w, "x")
    local n = 0
    loop:add_reader(r, function()
      n = n + 1
      if n == 1 then error("boom") end
      loop:remove_reader(r)
      loop:stop()
    end)
    loop:run_forever()
    assert.are.equal(2, n)
    assert.are.equal(1, #got)
    H.contains("boom", tostring(got[1].exception))
    H.contains("Exception in callback", got[1].message)
  end)
end)

describe("wait_readable and wait_writable", function()
  it("suspend the task until the fd is ready", function()
    local loop = rloop()
    local r, w = pipe()
    local trace, add = H.tracer()
    loop:call_later(0.02, function() add("write"); core._write(w, "ping") end)
    loop:run_until_complete(function()
      loom.wait_writable(w)
      add("writable")
      loom.wait_readable(r)
      add("readable " .. core._read(r, 10))
    end)
    assert.are.same({ "writable", "write", "readable ping" }, trace)
    assert.are.equal(0, loop:_fd_watchers())
    assert.is_false(loop:remove_reader(r))
  end)

  it("return nothing and accept integral floats", function()
    local loop = rloop()
    local _, w = pipe()
    local n = loop:run_until_complete(function()
      return select("#", loom.wait_writable(w + 0.0))
    end)
    assert.are.equal(0, n)
  end)

  it("a cancelled wait removes its watch", function()
    local loop = rloop()
    local r = pipe()
    local task = loop:create_task(loom.wait_readable, r)
    H.spin(loop, 2)
    assert.are.equal(1, loop:_fd_watchers())
    task:cancel()
    local ok, e = pcall(loop.run_until_complete, loop, task)
    assert.is_false(ok)
    assert.is_true(loom.CancelledError:is(e))
    assert.is_true(task:cancelled())
    assert.is_false(loop:remove_reader(r))
    assert.are.equal(0, loop:_fd_watchers())
  end)

  it("a cancelled wait keeps a reader installed over it", function()
    local loop = rloop()
    local r = pipe()
    local task = loop:create_task(loom.wait_readable, r)
    H.spin(loop, 2)
    loop:add_reader(r, print)
    task:cancel()
    pcall(loop.run_until_complete, loop, task)
    assert.is_true(task:cancelled())
    assert.is_true(loop:remove_reader(r))
  end)

  it("can run under timeout", function()
    local loop = rloop()
    local r = pipe()
    local ok, e = pcall(loop.run_until_complete, loop, function()
      loom.wait_for(loop:create_task(loom.wait_readable, r), 0.05)
    end)
    assert.is_false(ok)
    assert.is_true(loom.TimeoutError:is(e))
    assert.are.equal(0, loop:_fd_watchers())
  end)

  it("reject bad input and calls outside a task", function()
    local loop = H.loop()
    local r = pipe()
    H.contains("bad argument #1 to 'wait_readable'",
      H.raised(loom.wait_readable, -1))
    -- past a C int: still wait_readable's error, not an inner function's
    H.contains("bad argument #1 to 'wait_readable' (file descriptor",
      H.raised(loom.wait_readable, 2^53))
    H.contains("bad argument #1 to 'wait_writable' (file descriptor",
      H.raised(loom.wait_writable, 2^31))
    H.contains("bad argument #1 to 'wait_writable'",
      H.raised(loom.wait_writable, "3"))
    H.contains("wait_readable: no running event loop",
      H.raised(loom.wait_readable, r))
    loop:call_soon(function()
      H.contains("wait_writable: not called from a task",
        H.raised(loom.wait_writable, r))
    end)
    H.spin(loop)
    assert.are.equal(0, loop:_fd_watchers())
  end)
end)

describe("closing", function()
  it("a loop with watchers installed closes them", function()
    local loop = rloop()
    local r, w = pipe()
    loop:add_reader(r, print, "captured", loop)
    loop:add_writer(w, print)
    loop:add_reader(w, print)
    assert.are.equal(2, loop:_fd_watchers())
    loop:close()
    assert.are.equal(0, loop:_fd_watchers())
    assert.is_false(loop:remove_reader(r))
    H.contains("add_reader: event loop is closed",
      H.raised(loop.add_reader, loop, r, print))
    H.contains("add_writer: event loop is closed",
      H.raised(loop.add_writer, loop, w, print))
  end)

  it("a loop collected with watchers frees them", function()
    local r, w = pipe()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local loop = loom.new_event_loop()
      -- the callbacks capture the loop: it must be collectable anyway
      loop:add_reader(r, function() loop:stop() end)
      loop:add_writer(w, function() loop:stop() end)
      weak[1] = loop
    end
    collectgarbage()
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("a watcher can be added again after its loop ran once", function()
    local loop = rloop()
    local r, w = pipe()
    for _ = 1, 3 do
      core._write(w, "x")
      loop:add_reader(r, H.expect(function()
        core._read(r, 10)
        loop:remove_reader(r)
        loop:stop()
      end, 1))
      loop:run_forever()
    end
  end)
end)

describe("bad fds and bad input", function()
  it("reject what is not a non-negative integer, naming the method", function()
    local loop = H.loop()
    for _, bad in ipairs { -1, 1.5, "0", {}, math.huge } do
      H.contains("bad argument #1 to 'add_reader'",
        H.raised(function() loop:add_reader(bad, print) end))
      H.contains("bad argument #1 to 'remove_writer'",
        H.raised(function() loop:remove_writer(bad) end))
    end
    H.contains("bad argument #1 to 'add_writer' (file descriptor "
      .. "(non-negative integer) expected, got nil)",
      H.raised(function() loop:add_writer(nil, print) end))
    H.contains("got -3", H.raised(function() loop:remove_reader(-3) end))
    -- called without a name (through pcall): still named, counting self
    H.contains("bad argument #2 to 'add_reader' (file descriptor",
      H.raised(loop.add_reader, loop, -1, print))
    H.contains("bad argument #1 to '_write'", H.raised(core._write, -1, "x"))
  end)

  it("reject a callback that cannot be called", function()
    local loop = H.loop()
    local r = pipe()
    H.contains("bad argument #2 to 'add_reader' (function expected, got no value)",
      H.raised(function() loop:add_reader(r) end))
    H.contains("bad argument #2 to 'add_writer' (function expected, got number)",
      H.raised(function() loop:add_writer(r, 42) end))
    H.contains("bad argument #3 to 'add_writer' (function expected, got nil)",
      H.raised(loop.add_writer, loop, r, nil))
    assert.are.equal(0, loop:_fd_watchers())
    assert.is_false(loop:remove_reader(r))
  end)

  it("accepts a callable table", function()
    local loop = rloop()
    local _, w = pipe()
    local obj = setmetatable({}, { __call = function(self, x)
      assert.are.equal("arg", x)
      loop:remove_writer(w)
      loop:stop()
    end })
    loop:add_writer(w, obj, "arg")
    loop:run_forever()
  end)

  it("turns a closed fd into an OSError", function()
    local loop = H.loop()
    local r = pipe()
    close(r)
    local e = H.raised(loop.add_reader, loop, r, print)
    assert.are.equal("EBADF", e.code)
    H.contains("add_reader: EBADF", tostring(e))
    assert.are.equal(0, loop:_fd_watchers())
    assert.is_false(loop:remove_reader(r))
  end)

  it("turns a regular file into an OSError (EPERM)", function()
    local loop = H.loop()
    local path = os.tmpname()
    local fd = assert(core._open(path))
    opened[#opened + 1] = fd
    local e = H.raised(loop.add_writer, loop, fd, print)
    os.remove(path)
    assert.are.equal("EPERM", e.code)
    H.contains("add_writer: EPERM", tostring(e))
    assert.are.equal(0, loop:_fd_watchers())
    assert.is_false(loop:remove_writer(fd))
  end)

  it("a huge fd is an error, not a huge allocation", function()
    local loop = H.loop()
    local e = H.raised(loop.add_reader, loop, 2147483647, print)
    assert.are.equal("EBADF", e.code)
    assert.is_false(loop:remove_reader(2147483647))
  end)
end)
