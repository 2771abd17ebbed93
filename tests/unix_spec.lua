-- unix_spec.lua: Unix domain socket transports, servers and streams
-- (host/tcp.c over uv_pipe_t, lua/loom/streams.lua).
local H = require "helper"
local loom = require "loom"
H.setup()

local rtloop = H.rtloop

local run = H.run_task

-- A fresh directory for socket files; removed by the returned cleanup.
local function tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 '" .. dir .. "'"))
  return dir, function() os.execute("rm -rf '" .. dir .. "'") end
end

local function exists(path)
  return os.execute("test -e '" .. path .. "'") == true
end

local function have_socat()
  return os.execute("command -v socat >/dev/null 2>&1") == true
end

-- Leaves a stale socket file at path: socat listens there, is killed
-- once the file is there (a fixed time may not even see it started on a
-- loaded machine) and is waited for: SIGKILL takes effect when the
-- process next runs, and until it is reaped its socket may still accept
-- a connection. (H.sh leaves out the ASan runtime the module run
-- preloads: socat is not ours.)
local function stale(path)
  H.sh("socat -u UNIX-LISTEN:'" .. path .. "' /dev/null >/dev/null 2>&1 & pid=$!; "
       .. "i=0; while [ ! -S '" .. path .. "' ] && [ $i -lt 600 ]; do "
       .. "sleep 0.05; i=$((i + 1)); done; kill -KILL $pid; wait $pid")
  assert(H.sh("test -S '" .. path .. "'"), "no stale socket made")
end

local function echo_factory()
  return {
    connection_made = function(self, t) self.t = t end,
    data_received = function(self, d) self.t:write(d) end,
    eof_received = function(self) self.t:close() end,
  }
end

describe("unix sockets", function()
  local dir, cleanup
  before_each(function() dir, cleanup = tmpdir() end)
  after_each(function() cleanup() end)

  it("echoes through protocols; names are paths", function()
    local loop = rtloop()
    local path = dir .. "/echo.sock"
    run(loop, function()
      local server = loop:create_unix_server(echo_factory, path, {backlog = 10})
      assert.are.same({path}, server:sockets())
      assert.is_true(exists(path))
      local p = {chunks = {}}
      local lost = loop:create_future()
      p.data_received = function(self, d) self.chunks[#self.chunks + 1] = d end
      p.connection_lost = function(self, e) lost:set_result(e) end
      local t, pr = loop:create_unix_connection(function() return p end, path)
      assert.are.equal(p, pr)
      assert.are.equal(path, t:get_extra_info("peername"))
      assert.are.equal("", t:get_extra_info("sockname"))
      t:set_nodelay(true)  -- a no-op on a Unix socket
      local data = ("0123456789"):rep(50000)
      t:write(data)
      t:write_eof()
      assert.is_nil(lost:await())
      assert.is_true(table.concat(p.chunks) == data)
      server:close()
      server:wait_closed()
      assert.are.same({}, server:sockets())
    end)
    assert.is_false(exists(path))  -- asyncio's cleanup_socket
  end)

  it("echoes through streams", function()
    local loop = rtloop()
    local path = dir .. "/streams.sock"
    run(loop, function()
      local server = loom.start_unix_server(function(r, w)
        for line in r:lines() do w:write(line:upper()) end
        w:close()
      end, path)
      local r, w = loom.open_unix_connection(path, {limit = 1024})
      w:write("hello\nworld\n")
      assert.are.equal("HELLO\n", r:readline())
      assert.are.equal("WORLD\n", r:readline())
      w:write_eof()
      assert.are.equal("", r:read())
      w:close()
      w:wait_closed()
      server:close()
      server:wait_closed()
    end)
  end)

  it("fails with ENOENT and ECONNREFUSED", function()
    local loop = rtloop()
    -- made before the loop runs: stale() blocks
    local socat = have_socat()
    if socat then stale(dir .. "/dead.sock") end
    run(loop, function()
      local ok, e = pcall(loop.create_unix_connection, loop, echo_factory,
                          dir .. "/missing.sock")
      assert.is_false(ok)
      assert.is_true(loom.OSError:is(e))
      assert.are.equal("ENOENT", e.code)
      if socat then  -- a socket file nobody listens on
        ok, e = pcall(loom.open_unix_connection, dir .. "/dead.sock")
        assert.is_false(ok)
        assert.are.equal("ECONNREFUSED", e.code)
      end
    end)
  end)

  it("replaces a stale socket file, not a regular file", function()
    local loop = rtloop()
    local path = dir .. "/stale.sock"
    if have_socat() then stale(path) end  -- before the loop runs: it blocks
    run(loop, function()
      local s2 = loom.start_unix_server(function(r, w)
        w:write(r:readline()); w:close()
      end, path)
      local r, w = loom.open_unix_connection(path)
      w:write("again\n")
      assert.are.equal("again\n", r:readline())
      w:close()
      s2:close()
      s2:wait_closed()
      local f = assert(io.open(dir .. "/plain", "w")); f:close()
      local ok, e = pcall(loop.create_unix_server, loop, echo_factory,
                          dir .. "/plain")
      assert.is_false(ok)
      assert.are.equal("EADDRINUSE", e.code)
      assert.is_true(exists(dir .. "/plain"))
    end)
  end)

  it("rejects embedded zeros and too-long paths", function()
    local loop = rtloop()
    run(loop, function()
      local ok, e = pcall(loop.create_unix_server, loop, echo_factory,
                          dir .. "/a\0b")
      assert.is_false(ok)
      assert.matches("embedded zero", e)
      ok, e = pcall(loop.create_unix_connection, loop, echo_factory, "x\0")
      assert.matches("embedded zero", e)
      ok, e = pcall(loom.open_unix_connection, dir .. "/" .. ("x"):rep(200))
      assert.is_false(ok)
      assert.matches("path too long", e)
      ok, e = pcall(loop.create_unix_server, loop, echo_factory, "")
      assert.matches("path is empty", e)
      ok, e = pcall(loop.create_unix_server, loop, echo_factory, 42)
      assert.matches("string expected", e)
    end)
    assert.is_false(exists(dir .. "/a"))  -- never truncated
  end)

  it("talks to a real peer (socat)", function()
    if not have_socat() then
      pending("socat is not installed")
      return
    end
    local loop = rtloop()
    local path = dir .. "/socat.sock"
    run(loop, function()
      local server = loom.start_unix_server(function(r, w)
        w:write("echo: " .. r:readline())
        w:close()
      end, path)
      -- socat runs in the background; its output lands in a file.
      local out = dir .. "/socat.out"
      assert(H.sh("(printf 'from socat\\n' | timeout 30 socat - "
                  .. "UNIX-CONNECT:'" .. path .. "' > '" .. out
                  .. "' 2>/dev/null; echo done >> '"
                  .. out .. "') &"))
      local got = H.wait_until(function()
        local f = io.open(out)
        local text = f and f:read("a")
        if f then f:close() end
        return text and text:find("done\n$") and text
      end, 40, "socat to finish")
      assert.are.equal("echo: from socat\ndone\n", got)
      server:close()
      server:wait_closed()
    end, 60)
  end)
end)
