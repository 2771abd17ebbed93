-- fs_spec.lua: loom.fs, files on libuv's thread pool, and loop:sendfile
-- (host/fs.c, lua/loom/fs.lua).

local H = require "helper"
local loom = require "loom"
local core = require "loom.core"
H.setup()

local fs = loom.fs
local OSError = loom.OSError

-- Temporary directories of the current test, removed after it.
local dirs = {}
after_each(function()
  for _, d in ipairs(dirs) do
    os.execute("chmod -R u+rwx '" .. d .. "' 2>/dev/null; rm -rf '" .. d .. "'")
  end
  dirs = {}
end)

-- A new temporary directory (inside a task).
local function tmpdir()
  local d = fs.mkdtemp("/tmp/loom-fs-spec-XXXXXX")
  dirs[#dirs + 1] = d
  return d
end

-- Runs fn(...) as a task on a new real-time loop, with a guard: fails
-- after secs seconds instead of hanging.
local function run(fn, secs)
  local loop = H.loop{ virtual_time = false }
  return loop:run_until_complete(function()
    return loom.wait_for(loom.create_task(fn, loop), secs or 30)
  end)
end

-- The OSError fn(...) raises, checked to be one with the given code.
local function oserror(code, fn, ...)
  local e = H.raised(fn, ...)
  assert(OSError:is(e), "expected an OSError, got " .. tostring(e))
  assert.are.equal(code, e.code)
  return e
end

-- The number of open descriptors of this process (inside a task).
local function nfds()
  local n = 0
  for _ in fs.scandir("/proc/self/fd") do n = n + 1 end
  return n
end

-- Runs a shell command without the sanitizer runtime preloaded.
local function sh(cmd)
  return os.execute("unset LD_PRELOAD; " .. cmd)
end

-- Makes a FIFO at path. A failing test may leave a read of it blocked on
-- the pool, which would keep its loop from closing: a background writer
-- ends any such read after 15 seconds.
local function mkfifo(path)
  assert.is_true(sh("mkfifo '" .. path .. "'"))
  sh("(sleep 15; [ -p '" .. path .. "' ] && head -c 1000000 /dev/zero 1<>'" .. path
    .. "') >/dev/null 2>&1 &")
end

-- n bytes of a pattern that shows misplaced bytes.
local function pattern(n)
  local t = {}
  for i = 1, n // 16 + 1 do t[i] = ("%015d\n"):format(i) end
  return table.concat(t):sub(1, n)
end

describe("fs files", function()
  it("writes and reads back, write returning the file", function()
    run(function()
      local p = tmpdir() .. "/a.txt"
      local f = fs.open(p, "w")
      assert.are.equal(f, f:write("one\n", "two", 3, " ", 4.5, "\n"))
      assert.are.equal(f, f:write())
      assert.are.equal(f, f:write(""))
      assert.is_true(f:close())
      assert.are.equal("one\ntwo3 4.5\n", fs.read_file(p))
      f = fs.open(p)  -- "r" by default
      assert.are.equal("one", f:read())
      assert.are.equal("two3 4.5\n", f:read("L"))
      assert.is_nil(f:read())
      assert.is_nil(f:read("L"))
      assert.is_nil(f:read(1))
      assert.is_nil(f:read(0))
      assert.are.equal("", f:read("a"))
      assert.are.equal("", f:read("a"))
      f:close()
    end)
  end)

  it("reads by io.read's formats", function()
    run(function()
      local p = tmpdir() .. "/f"
      fs.write_file(p, "alpha\nbeta\r\n\ngamma")
      local f <close> = fs.open(p, "rb")
      assert.are.equal("", f:read(0))
      assert.are.equal("al", f:read(2))
      assert.are.equal("pha", f:read("l"))
      assert.are.equal("beta\r\n", f:read("*L"))
      local a, b, c = f:read("l", 2, "a")
      assert.are.same({ "", "ga", "mma" }, { a, b, c })
      f:seek("set", 0)
      -- the first format that fails ends the read with nil
      local r = table.pack(f:read("a", "l", "l"))
      assert.are.equal(2, r.n)
      assert.are.equal("alpha\nbeta\r\n\ngamma", r[1])
      assert.is_nil(r[2])
      f:seek("set", 13)
      assert.are.equal("gamma", f:read("l"))  -- a last line without newline
      assert.is_nil(f:read("l"))
      f:seek("set", 3)
      assert.are.equal("ha\nbeta\r\n\ngamma", f:read(1000))  -- fewer at the end
    end)
  end)

  it("iterates lines with lines(), also with formats", function()
    run(function()
      local p = tmpdir() .. "/lines"
      local want = {}
      for i = 1, 3000 do want[i] = ("line %d %s"):format(i, ("x"):rep(i % 97)) end
      fs.write_file(p, table.concat(want, "\n") .. "\n")
      local f = fs.open(p)
      local got = {}
      for line in f:lines() do got[#got + 1] = line end
      assert.are.same(want, got)
      assert.is_nil(f:read())      -- still open, at the end
      f:seek("set", 0)
      local chunks = {}
      for c in f:lines(4096) do chunks[#chunks + 1] = c end
      assert.are.equal(table.concat(want, "\n") .. "\n", table.concat(chunks))
      assert.are.equal(4096, #chunks[1])
      f:seek("set", 0)
      for a, b in f:lines("l", "L") do
        assert.are.equal("line 1 x", a)
        assert.are.equal("line 2 xx\n", b)
        break
      end
      f:close()
      H.contains("attempt to use a closed file", H.raised(f.lines, f))
      H.contains("loom.File expected", H.raised(f.lines, {}))
    end)
  end)

  it("reads lines longer than the buffer, and the whole of a large file", function()
    run(function()
      local p = tmpdir() .. "/long"
      local l1, l2 = ("a"):rep(300000), ("b"):rep(70000)
      fs.write_file(p, l1 .. "\n" .. l2 .. "\n" .. "tail")
      local f = fs.open(p)
      assert.are.equal(l1, f:read("l"))
      assert.are.equal(l2 .. "\n", f:read("L"))
      assert.are.equal("tail", f:read("l"))
      f:seek("set", 0)
      assert.are.equal(l1 .. "\n" .. l2 .. "\ntail", f:read("a"))
      f:close()
      local big = pattern(5 * 1024 * 1024 + 7)
      fs.write_file(p, big)
      assert.is_true(fs.read_file(p) == big)
      f = fs.open(p)
      local parts = {}
      while true do
        local s = f:read(1024 * 1024)
        if not s then break end
        parts[#parts + 1] = s
      end
      f:close()
      assert.are.equal(6, #parts)
      assert.is_true(table.concat(parts) == big)
      f = fs.open(p)
      assert.is_true(f:read(math.maxinteger) == big)  -- allocates no maxinteger
      assert.is_nil(f:read(math.maxinteger))
      f:close()
    end)
  end)

  it("seeks as io does", function()
    run(function()
      local p = tmpdir() .. "/s"
      fs.write_file(p, "0123456789")
      local f = fs.open(p, "r+")
      assert.are.equal(0, f:seek())
      assert.are.equal("012", f:read(3))
      assert.are.equal(3, f:seek())
      assert.are.equal(10, f:seek("end"))
      assert.are.equal(8, f:seek("end", -2))
      assert.are.equal("89", f:read("a"))
      assert.are.equal(5, f:seek("set", 5))
      assert.are.equal(7, f:seek("cur", 2))
      assert.are.equal("7", f:read(1))
      assert.are.equal(20, f:seek("set", 20))  -- past the end: allowed
      assert.is_nil(f:read(1))
      local e = oserror("EINVAL", f.seek, f, "set", -1)
      H.contains("seek: EINVAL", tostring(e))
      oserror("EINVAL", f.seek, f, "cur", -100)
      assert.are.equal(20, f:seek())  -- unchanged by the failures
      H.contains("bad argument #1 to 'seek' (invalid option 'middle')",
        H.raised(function() return f:seek("middle") end))
      H.contains("bad argument #1 to 'seek' (whence contains a zero byte)",
        H.raised(function() return f:seek("set\0x", 0) end))
      -- a write after reads starts where the reads stopped
      f:seek("set", 0)
      assert.are.equal("01", f:read(2))
      f:write("ab")
      assert.are.equal(4, f:seek())
      assert.are.equal("45", f:read(2))
      f:seek("set", 12)
      f:write("Z")   -- a hole before it
      f:close()
      assert.are.equal("01ab456789\0\0Z", fs.read_file(p))
    end)
  end)

  it("modes w, w+, a, a+, x and r+ behave as io.open's", function()
    run(function()
      local d = tmpdir()
      local p = d .. "/m"
      fs.write_file(p, "old content")
      local f = fs.open(p, "w+")   -- truncates, reads too
      f:write("new")
      f:seek("set", 0)
      assert.are.equal("new", f:read("a"))
      f:close()
      f = fs.open(p, "a")
      f:write("+1")
      f:seek("set", 0)
      f:write("+2")                -- appends, whatever the position
      assert.are.equal(7, f:seek())
      oserror("EBADF", f.read, f, 1)  -- write only
      f:close()
      assert.are.equal("new+1+2", fs.read_file(p))
      f = fs.open(p, "a+")
      assert.are.equal("new", f:read(3))  -- reads from the start
      f:write("!")
      assert.are.equal(8, f:seek("cur"))
      assert.is_nil(f:read(1))
      f:seek("set", 0)
      assert.are.equal("new+1+2!", f:read("a"))
      f:close()
      f = fs.open(p, "rb")
      oserror("EBADF", f.write, f, "x")  -- read only
      f:close()
      oserror("EEXIST", fs.open, p, "wx")
      f = fs.open(d .. "/fresh", "wbx")
      f:close()
      f = fs.open(d .. "/fresh", "r+b")
      f:write("xy")
      f:close()
      assert.are.equal("xy", fs.read_file(d .. "/fresh"))
      for _, bad in ipairs { "", "rw", "r++", "q", "+r", "rx", "r+bz", "r\0" } do
        H.contains("bad argument #2 to 'open' (invalid mode)",
          H.raised(function() return fs.open(p, bad) end))
      end
    end)
  end)

  it("creates files with opts.mode", function()
    run(function()
      local d = tmpdir()
      local f = fs.open(d .. "/m1", "w", { mode = "600" })
      f:close()
      assert.are.equal(tonumber("600", 8), fs.stat(d .. "/m1").perm)
      fs.write_file(d .. "/m2", "x", { mode = tonumber("640", 8) })
      assert.are.equal(tonumber("640", 8), fs.stat(d .. "/m2").perm)
      H.contains("unknown option 'perm'",
        H.raised(function() return fs.open(d .. "/m3", "w", { perm = 1 }) end))
      H.contains("mode must be an integer 0..4095",
        H.raised(function() return fs.open(d .. "/m3", "w", { mode = "9" }) end))
      H.contains("bad argument #3 to 'write_file' (mode must be",
        H.raised(function() return fs.write_file(d .. "/m3", "", { mode = 5000 }) end))
    end)
  end)

  it("sync, flush, stat and fileno of a file", function()
    run(function()
      local p = tmpdir() .. "/s"
      local f = fs.open(p, "w")
      f:write(("x"):rep(1000))
      assert.are.equal(f, f:sync())
      assert.are.equal(f, f:flush())
      local st = f:stat()
      assert.are.equal("file", st.type)
      assert.are.equal(1000, st.size)
      assert.are.equal("integer", math.type(f:fileno()))
      assert.is_true(f:fileno() > 2)
      H.contains("loom.File (" .. p .. ")", tostring(f))
      f:close()
      H.contains("loom.File (closed)", tostring(f))
    end)
  end)
end)

describe("fs on a virtual-time loop", function()
  it("waits for the pool in real time", function()
    local loop = H.loop()  -- virtual time
    local got = loop:run_until_complete(function()
      local d = tmpdir()
      fs.write_file(d .. "/v", "virtual")
      loom.sleep(100)  -- the clock jumps: nothing is in flight
      return fs.read_file(d .. "/v")
    end)
    assert.are.equal("virtual", got)
  end)
end)

describe("fs whole files and directories", function()
  it("read_file and write_file", function()
    run(function()
      local d = tmpdir()
      assert.is_true(fs.write_file(d .. "/w", "abc\0def"))
      assert.are.equal("abc\0def", fs.read_file(d .. "/w"))
      fs.write_file(d .. "/w", "")
      assert.are.equal("", fs.read_file(d .. "/w"))
      fs.write_file(d .. "/w", 12)
      assert.are.equal("12", fs.read_file(d .. "/w"))
      local e = oserror("ENOENT", fs.read_file, d .. "/none")
      assert.are.equal(d .. "/none", e.filename)
      oserror("ENOENT", fs.write_file, d .. "/no/such/dir", "x")
      H.contains("bad argument #2 to 'write_file' (string expected, got table)",
        H.raised(function() return fs.write_file(d .. "/w", {}) end))
      H.contains("unknown option 'atomik'",
        H.raised(function() return fs.write_file(d .. "/w", "", { atomik = true }) end))
    end)
  end)

  it("an atomic write_file never shows a part of the file", function()
    run(function(loop)
      local d = tmpdir()
      local p = d .. "/target"
      local size = 256 * 1024
      fs.write_file(p, ("@"):rep(size))
      local writing, reads, olds = true, 0, 0
      local reader = loop:create_task(function()
        while writing do
          local s = fs.read_file(p)
          assert.are.equal(size, #s)
          local c = s:sub(1, 1)
          assert.is_nil(s:find("[^" .. c .. "]"), "a torn read")
          reads = reads + 1
          if c == "@" then olds = olds + 1 end
        end
      end)
      for i = 1, 30 do
        fs.write_file(p, string.char(64 + i % 26 + 1):rep(size), { atomic = true })
      end
      writing = false
      reader:await()
      assert.is_true(reads > 0)
      assert.are.equal(string.char(64 + 30 % 26 + 1):rep(size), fs.read_file(p))
      local names = {}
      for name in fs.scandir(d) do names[#names + 1] = name end
      assert.are.same({ "target" }, names)  -- no temporary file left
    end)
  end)

  it("an atomic write keeps the permissions of the file it replaces", function()
    run(function()
      local d = tmpdir()
      fs.write_file(d .. "/secret", "a")
      fs.chmod(d .. "/secret", "600")
      fs.write_file(d .. "/secret", "b", { atomic = true })
      assert.are.equal(tonumber("600", 8), fs.stat(d .. "/secret").perm)
      assert.are.equal("b", fs.read_file(d .. "/secret"))
      fs.write_file(d .. "/new", "c", { atomic = true, mode = "640" })
      assert.are.equal(tonumber("640", 8), fs.stat(d .. "/new").perm)
      fs.write_file("rel-" .. d:match("[^/]+$"), "r", { atomic = true })
      assert.are.equal("r", fs.read_file("rel-" .. d:match("[^/]+$")))
      fs.unlink("rel-" .. d:match("[^/]+$"))
      -- a failure leaves nothing behind
      oserror("ENOENT", fs.write_file, d .. "/missing/x", "d", { atomic = true })
      fs.mkdir(d .. "/isdir")
      oserror("EISDIR", fs.write_file, d .. "/isdir", "d", { atomic = true })
      local names = {}
      for name in fs.scandir(d) do names[#names + 1] = name end
      assert.are.same({ "isdir", "new", "secret" }, names)
    end)
  end)

  it("stat, lstat, readlink and realpath", function()
    run(function()
      local d = tmpdir()
      fs.write_file(d .. "/f", "12345")
      assert.is_true(sh("ln -s f '" .. d .. "/l'"))
      local st = fs.stat(d .. "/f")
      assert.are.equal("file", st.type)
      assert.are.equal(5, st.size)
      assert.are.equal(1, st.nlink)
      for _, k in ipairs { "mode", "perm", "ino", "dev", "uid", "gid", "nlink", "size" } do
        assert.are.equal("integer", math.type(st[k]), k)
      end
      for _, k in ipairs { "atime", "mtime", "ctime" } do
        assert.are.equal("float", math.type(st[k]), k)
        assert.is_true(math.abs(st[k] - os.time()) < 3600, k)
      end
      assert.are.equal(st.mode & 4095, st.perm)
      assert.are.equal(st.ino, fs.stat(d .. "/l").ino)  -- follows the link
      local lst = fs.lstat(d .. "/l")
      assert.are.equal("link", lst.type)
      assert.are_not.equal(st.ino, lst.ino)
      assert.are.equal("directory", fs.stat(d).type)
      assert.are.equal("char", fs.stat("/dev/null").type)
      assert.are.equal("f", fs.readlink(d .. "/l"))
      assert.are.equal(fs.realpath(d) .. "/f", fs.realpath(d .. "/l"))
      assert.are.equal(fs.realpath(d), fs.realpath(d .. "/./../" .. d:match("[^/]+$")))
      oserror("EINVAL", fs.readlink, d .. "/f")
      local e = oserror("ENOENT", fs.lstat, d .. "/none")
      assert.are.equal(d .. "/none", e.filename)
      assert.are.equal("lstat: ENOENT: no such file or directory: " .. d .. "/none", e.message)
      oserror("ENOENT", fs.realpath, d .. "/none")
    end)
  end)

  it("mkdir, with parents and mode; rmdir", function()
    run(function()
      local d = tmpdir()
      assert.is_true(fs.mkdir(d .. "/a"))
      oserror("EEXIST", fs.mkdir, d .. "/a")
      local e = oserror("ENOENT", fs.mkdir, d .. "/b/c")
      assert.are.equal("mkdir: ENOENT: no such file or directory: " .. d .. "/b/c", e.message)
      assert.is_true(fs.mkdir(d .. "/b/c/d/", { parents = true, mode = "700" }))
      assert.are.equal("directory", fs.stat(d .. "/b/c/d").type)
      assert.are.equal(tonumber("700", 8), fs.stat(d .. "/b/c/d").perm)
      assert.is_true(fs.mkdir(d .. "/b/c", { parents = true }))  -- exists: fine
      assert.is_true(fs.mkdir(d .. "//b//c//e", { parents = true }))
      assert.are.equal("directory", fs.stat(d .. "/b/c/e").type)
      fs.write_file(d .. "/file", "")
      oserror("EEXIST", fs.mkdir, d .. "/file", { parents = true })
      oserror("ENOTDIR", fs.mkdir, d .. "/file/x/y", { parents = true })
      assert.is_true(fs.mkdir(d .. "/m", { mode = 448 }))
      assert.are.equal(448, fs.stat(d .. "/m").perm)
      oserror("ENOTEMPTY", fs.rmdir, d .. "/b")
      assert.is_true(fs.rmdir(d .. "/m"))
      oserror("ENOENT", fs.stat, d .. "/m")
      oserror("ENOTDIR", fs.rmdir, d .. "/file")
      H.contains("parents must be a boolean",
        H.raised(function() return fs.mkdir(d .. "/z", { parents = 1 }) end))
      H.contains("unknown option 'parent'",
        H.raised(function() return fs.mkdir(d .. "/z", { parent = true }) end))
      H.contains("bad argument #2 to 'mkdir' (table expected, got string)",
        H.raised(function() return fs.mkdir(d .. "/z", "755") end))
      -- raised at the caller's line, without parents too
      local err = H.raised
      local here = "^[^:]*fs_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #1 to 'mkdir' %(path contains a NUL byte%)",
        err(function() fs.mkdir(d .. "/z\0y") end))
      assert.matches(here .. "bad argument #2 to 'mkdir' %(unknown option 'bogus'%)",
        err(function() fs.mkdir(d .. "/z", { bogus = 1 }) end))
      assert.matches(here .. "bad argument #1 to 'scandir' %(string expected, got nil%)",
        err(function() fs.scandir(nil) end))
    end)
  end)

  it("unlink, rename, copyfile and chmod", function()
    run(function()
      local d = tmpdir()
      fs.write_file(d .. "/a", "A")
      fs.write_file(d .. "/b", "B")
      assert.is_true(fs.rename(d .. "/a", d .. "/b"))  -- replaces b
      assert.are.equal("A", fs.read_file(d .. "/b"))
      local e = oserror("ENOENT", fs.rename, d .. "/a", d .. "/c")
      assert.are.equal(d .. "/a", e.filename)
      assert.are.equal(d .. "/c", e.filename2)
      assert.are.equal("rename: ENOENT: no such file or directory: " .. d .. "/a -> "
        .. d .. "/c", e.message)
      assert.is_true(fs.copyfile(d .. "/b", d .. "/c"))
      assert.are.equal("A", fs.read_file(d .. "/c"))
      e = oserror("EEXIST", fs.copyfile, d .. "/b", d .. "/c", { exclusive = true })
      assert.are.equal(d .. "/c", e.filename2)
      assert.is_true(fs.copyfile(d .. "/b", d .. "/e", { exclusive = true, ficlone = true }))
      assert.is_true(fs.chmod(d .. "/c", "751"))
      assert.are.equal(tonumber("751", 8), fs.stat(d .. "/c").perm)
      assert.is_true(fs.chmod(d .. "/c", 420))
      assert.are.equal(420, fs.stat(d .. "/c").perm)
      H.contains("bad argument #2 to 'chmod' (mode must be",
        H.raised(function() return fs.chmod(d .. "/c", "rwx") end))
      H.contains("bad argument #2 to 'chmod'",
        H.raised(function() return fs.chmod(d .. "/c") end))
      assert.is_true(fs.unlink(d .. "/c"))
      oserror("ENOENT", fs.unlink, d .. "/c")
      oserror("EISDIR", fs.unlink, d)
      H.contains("unknown option 'force'",
        H.raised(function() return fs.copyfile(d .. "/b", d .. "/f", { force = true }) end))
    end)
  end)

  it("scandir iterates names and types, sorted", function()
    run(function()
      local d = tmpdir()
      fs.write_file(d .. "/b", "")
      fs.mkdir(d .. "/a")
      fs.write_file(d .. "/C", "")
      assert.is_true(sh("ln -s b '" .. d .. "/link'"))
      assert.is_true(sh("mkfifo '" .. d .. "/pipe'"))
      local got = {}
      for name, type in fs.scandir(d) do got[#got + 1] = name .. ":" .. type end
      assert.are.same({ "C:file", "a:directory", "b:file", "link:link", "pipe:fifo" }, got)
      local n = 0
      for _ in fs.scandir(d .. "/a") do n = n + 1 end
      assert.are.equal(0, n)
      oserror("ENOENT", fs.scandir, d .. "/none")
      oserror("ENOTDIR", fs.scandir, d .. "/b")
    end)
  end)

  it("mkdtemp makes a fresh directory from a template", function()
    run(function()
      local d = tmpdir()
      local a = fs.mkdtemp(d .. "/t-XXXXXX")
      local b = fs.mkdtemp(d .. "/t-XXXXXX")
      assert.are_not.equal(a, b)
      assert.is_truthy(a:match("^" .. d:gsub("%p", "%%%0") .. "/t%-%w%w%w%w%w%w$"))
      assert.are.equal("directory", fs.stat(a).type)
      assert.are.equal(tonumber("700", 8), fs.stat(a).perm)
      for _, bad in ipairs { "", "XXXXX", d .. "/tXXXXXy", d .. "/XXXXXXX\0" } do
        local e = H.raised(function() return fs.mkdtemp(bad) end)
        assert.is_string(e)
        H.contains("bad argument #1 to 'mkdtemp'", e)
      end
      oserror("ENOENT", fs.mkdtemp, d .. "/none/t-XXXXXX")
    end)
  end)
end)

-- A connected TCP pair on loop (inside a task): the sending transport and
-- its protocol, and the receiving protocol, which collects what arrives
-- (rp.chunks; rp.done completes on EOF or loss). With paused, the
-- receiver does not read until rp.t:resume_reading().
local function tcp_pair(loop, paused)
  local rp = { chunks = {}, done = loop:create_future(), made = loop:create_future() }
  function rp.connection_made(self, t)
    self.t = t
    if paused then t:pause_reading() end
    self.made:set_result()
  end
  function rp.data_received(self, d) self.chunks[#self.chunks + 1] = d end
  function rp.eof_received(self) if not self.done:done() then self.done:set_result() end end
  function rp.connection_lost(self, e)
    self.err = e
    if not self.done:done() then self.done:set_result() end
  end
  local server = loop:create_server(function() return rp end, "127.0.0.1", 0)
  local sp = { lost = loop:create_future() }
  function sp.connection_lost(self, e)
    self.err = e
    self.lost:set_result()
  end
  local t = loop:create_connection(function() return sp end, "127.0.0.1",
    server:sockets()[1].port)
  rp.made:await()
  server:close()
  return t, sp, rp
end

describe("loop:sendfile", function()
  it("sends MiBs over TCP byte for byte, after the queued writes, with offset and count", function()
    run(function(loop)
      local p = tmpdir() .. "/big"
      local N = 16 * 1024 * 1024 + 12345
      local data = pattern(N)
      fs.write_file(p, data)
      local t, _, rp = tcp_pair(loop, true)
      local f = fs.open(p)
      t:write("HEAD")
      t:write(("h"):rep(300000))  -- more than the socket takes at once
      local sending = loop:create_task(function()
        return loop:sendfile(t, f, 1000, 12 * 1024 * 1024)
      end)
      loom.sleep(0.05)
      -- the peer does not read: the transfer waits for the socket
      assert.is_false(sending:done())
      H.contains("write: sendfile is in progress", H.raised(t.write, t, "x"))
      H.contains("writelines: sendfile is in progress", H.raised(t.writelines, t, { "x" }))
      H.contains("write_eof: sendfile is in progress", H.raised(t.write_eof, t))
      H.contains("read: the file is busy", H.raised(f.read, f, 1))
      local f2 <close> = fs.open(p)
      H.contains("another sendfile", H.raised(loop.sendfile, loop, t, f2))
      rp.t:resume_reading()
      assert.are.equal(12 * 1024 * 1024, sending:await())
      assert.are.equal(1000 + 12 * 1024 * 1024, f:seek())
      -- the rest, to the end of the file (count nil)
      assert.are.equal(N - 1000 - 12 * 1024 * 1024, loop:sendfile(t, f, 1000 + 12 * 1024 * 1024))
      assert.are.equal(N, f:seek())
      assert.are.equal(0, loop:sendfile(t, f, N))  -- at the end: nothing
      assert.are.equal(0, loop:sendfile(t, f, N + 5, 10))
      -- a bare descriptor, whose own offset stays
      assert.are.equal(10, loop:sendfile(t, f:fileno(), 0, 10))
      assert.are.equal(N + 5, f:seek())
      t:write("TAIL")
      t:write_eof()
      rp.done:await()
      f:close()
      local got = table.concat(rp.chunks)
      local want = "HEAD" .. ("h"):rep(300000) .. data:sub(1001) .. data:sub(1, 10) .. "TAIL"
      assert.are.equal(#want, #got)
      assert.is_true(got == want)
      t:close()
    end, 60)
  end)

  it("waits until the transport's queued writes are out, then sends after them", function()
    run(function(loop)
      local p = tmpdir() .. "/f"
      local data = pattern(2 * 1024 * 1024 + 9)
      fs.write_file(p, data)
      local t, _, rp = tcp_pair(loop, true)
      local queued = ("q"):rep(16 * 1024 * 1024)  -- more than the sockets hold
      t:write(queued)
      assert.is_true(t:get_write_buffer_size() > 0)
      local f <close> = fs.open(p)
      local sending = loop:create_task(function() return loop:sendfile(t, f) end)
      loom.sleep(0.05)
      assert.is_false(sending:done())
      assert.is_true(t:get_write_buffer_size() > 0)
      t:write("w")  -- before the send begins: goes out before the file
      rp.t:resume_reading()
      assert.are.equal(#data, sending:await())
      t:write_eof()
      rp.done:await()
      local got = table.concat(rp.chunks)
      assert.are.equal(#queued + 1 + #data, #got)
      assert.is_true(got == queued .. "w" .. data)
      t:close()
    end)
  end)

  it("over a Unix socket, and with the default offset", function()
    run(function(loop)
      local d = tmpdir()
      local data = pattern(3 * 1024 * 1024 + 1)
      fs.write_file(d .. "/f", data)
      local got, done = {}, loop:create_future()
      local server = loop:create_unix_server(function()
        return { data_received = function(_, s) got[#got + 1] = s end,
                 eof_received = function() done:set_result() end }
      end, d .. "/sock")
      local t = loop:create_unix_connection(function() return {} end, d .. "/sock")
      local f <close> = fs.open(d .. "/f")
      f:read(100)  -- the file's position does not matter: offset is 0
      assert.are.equal(#data, loop:sendfile(t, f))
      t:write_eof()
      done:await()
      assert.is_true(table.concat(got) == data)
      t:close()
      server:close()
    end)
  end)

  it("falls back to reads and writes for a pipe, unless told not to", function()
    run(function(loop)
      local d = tmpdir()
      mkfifo(d .. "/p")
      local t, _, rp = tcp_pair(loop)
      local rf = fs.open(d .. "/p", "r+")  -- O_RDWR: does not wait for a writer
      local wf = fs.open(d .. "/p", "w")
      local N = 1024 * 1024 + 3
      local data = pattern(N)
      local writer = loop:create_task(function() wf:write(data) end)
      local e = H.raised(loop.sendfile, loop, t, rf, 0, N, { fallback = false })
      assert.is_true(loom.SendfileNotAvailableError:is(e))
      t:set_write_buffer_limits(64 * 1024)
      assert.are.equal(N, loop:sendfile(t, rf, 0, N))
      writer:await()
      oserror("ESPIPE", loop.sendfile, loop, t, rf, 5, 1)
      oserror("ESPIPE", rf.seek, rf, "set", 0)
      t:write("!")
      t:write_eof()
      rp.done:await()
      assert.is_true(table.concat(rp.chunks) == data .. "!")
      rf:close()
      wf:close()
    end)
  end)

  it("raises when the peer resets the connection during the transfer", function()
    run(function(loop)
      local p = tmpdir() .. "/big"
      fs.write_file(p, pattern(24 * 1024 * 1024))
      local t, sp, rp = tcp_pair(loop, true)
      local f <close> = fs.open(p)
      local sending = loop:create_task(function() return loop:sendfile(t, f) end)
      loom.sleep(0.05)
      rp.t:abort()  -- unread data pending: the kernel sends a reset
      local e = H.raised(loom.await, sending)
      assert.is_true(OSError:is(e), tostring(e))
      assert.is_truthy(({ EPIPE = true, ECONNRESET = true })[e.code], e.code)
      H.contains("sendfile: " .. e.code, tostring(e))
      sp.lost:await()
      local pos = f:seek()
      assert.is_true(pos > 0 and pos < 24 * 1024 * 1024)
      assert.is_true(t:is_closing())
      H.contains("sendfile: the transport is closing", H.raised(loop.sendfile, loop, t, f))
    end)
  end)

  it("raises EPIPE when the transport is aborted during the transfer", function()
    run(function(loop)
      local p = tmpdir() .. "/big"
      fs.write_file(p, pattern(24 * 1024 * 1024))
      local t, _, rp = tcp_pair(loop, true)
      local f <close> = fs.open(p)
      local sending = loop:create_task(function() return loop:sendfile(t, f) end)
      loom.sleep(0.05)
      t:abort()
      oserror("EPIPE", loom.await, sending)
      rp.t:resume_reading()
      rp.done:await()  -- the peer sees the close
      assert.are.equal(0, core.fs._pending(loop))
    end)
  end)

  it("cancelled, gives the transport back and leaves the file where the bytes end", function()
    run(function(loop)
      local p = tmpdir() .. "/big"
      local data = pattern(20 * 1024 * 1024)
      fs.write_file(p, data)
      local t, _, rp = tcp_pair(loop, true)
      local f <close> = fs.open(p)
      local sending = loop:create_task(function() return loop:sendfile(t, f, 0) end)
      loom.sleep(0.05)
      sending:cancel()
      assert.is_true(loom.CancelledError:is(H.raised(loom.await, sending)))
      t:write("END")  -- allowed again at once
      local pos = f:seek()
      assert.is_true(pos > 0 and pos < #data)
      rp.t:resume_reading()
      t:write_eof()
      rp.done:await()
      local got = table.concat(rp.chunks)
      assert.are.equal(pos + 3, #got)
      assert.is_true(got == data:sub(1, pos) .. "END")
      t:close()
    end)
  end)

  it("checks its arguments", function()
    run(function(loop)
      local p = tmpdir() .. "/f"
      fs.write_file(p, "x")
      local t = tcp_pair(loop)
      local f <close> = fs.open(p)
      local function err(...)
        return H.raised(loop.sendfile, loop, ...)
      end
      H.contains("bad argument #1 to 'sendfile' (stream transport expected, got table)",
        err({}, f))
      local u = loop:create_datagram_endpoint(function() return {} end,
        { local_addr = { host = "127.0.0.1", port = 0 } })
      H.contains("stream transport expected, got loom.DatagramTransport", err(u, f))
      u:close()
      H.contains("bad argument #2 to 'sendfile' (loom.File or file descriptor expected, got -1)",
        err(t, -1))
      H.contains("got string", err(t, "f"))
      H.contains("bad argument #2 to 'sendfile' (loom.File or file descriptor expected, got "
        .. math.maxinteger .. ")", err(t, math.maxinteger))
      H.contains("bad argument #3 to 'sendfile' (offset must be an integer >= 0)", err(t, f, -1))
      H.contains("offset must be", err(t, f, 1.5))
      H.contains("bad argument #4 to 'sendfile' (count must be an integer > 0)", err(t, f, 0, 0))
      H.contains("unknown option 'fall'", err(t, f, 0, 1, { fall = true }))
      H.contains("unknown option", err(t, f, { nope = 1 }))  -- opts in place of offset
      assert.are.equal(1, loop:sendfile(t, f, { fallback = false }))
      local other = H.loop()
      H.contains("sendfile: not inside a task of this event loop",
        H.raised(other.sendfile, other, t, f))
      f:close()
      H.contains("attempt to use a closed file", err(t, f))
      t:close()
      H.contains("sendfile: the transport is closing", err(t, 0))
    end)
  end)
end)

describe("fs faults", function()
  it("rejects paths with an embedded NUL byte, never cutting them short", function()
    run(function(loop)
      local d = tmpdir()
      fs.write_file(d .. "/a", "x")
      local bad = d .. "/a\0.txt"
      local function check(name, argn, fn, ...)
        local e = H.raised(fn, ...)
        assert.is_string(e)
        H.contains(("bad argument #%d to '%s' (path contains a NUL byte)"):format(argn, name), e)
      end
      check("open", 1, function() local r = fs.open(bad) return r end)
      check("open", 1, function() local r = fs.open(bad, "w") return r end)
      check("stat", 1, function() local r = fs.stat(bad) return r end)
      check("lstat", 1, function() local r = fs.lstat(bad) return r end)
      check("mkdir", 1, function() local r = fs.mkdir(bad) return r end)
      check("mkdir", 1, function() local r = fs.mkdir(bad, { parents = true }) return r end)
      check("rmdir", 1, function() local r = fs.rmdir(bad) return r end)
      check("unlink", 1, function() local r = fs.unlink(bad) return r end)
      check("rename", 1, function() local r = fs.rename(bad, d .. "/b") return r end)
      check("rename", 2, function() local r = fs.rename(d .. "/a", bad) return r end)
      check("scandir", 1, function() local r = fs.scandir(d .. "\0") return r end)
      check("mkdtemp", 1, function() local r = fs.mkdtemp(d .. "/\0XXXXXX") return r end)
      check("copyfile", 1, function() local r = fs.copyfile(bad, d .. "/c") return r end)
      check("copyfile", 2, function() local r = fs.copyfile(d .. "/a", bad) return r end)
      check("readlink", 1, function() local r = fs.readlink(bad) return r end)
      check("realpath", 1, function() local r = fs.realpath(bad) return r end)
      check("chmod", 1, function() local r = fs.chmod(bad, "644") return r end)
      check("read_file", 1, function() local r = fs.read_file(bad) return r end)
      check("write_file", 1, function() local r = fs.write_file(bad, "x") return r end)
      check("write_file", 1, function()
        local r = fs.write_file(bad, "x", { atomic = true }) return r end)
      -- nothing was made under the cut-short name
      local names = {}
      for name in fs.scandir(d) do names[#names + 1] = name end
      assert.are.same({ "a" }, names)
      assert.are.equal(0, core.fs._pending(loop))
      H.contains("bad argument #1 to 'open' (string expected, got table)",
        H.raised(function() local r = fs.open({}) return r end))
      H.contains("bad argument #1 to 'read_file' (string expected, got nil)",
        H.raised(function() local r = fs.read_file() return r end))
    end)
  end)

  it("a path that does not exist: ENOENT with the path", function()
    run(function()
      local e = oserror("ENOENT", fs.open, "/x/y")
      assert.are.equal("open: ENOENT: no such file or directory: /x/y", e.message)
      assert.are.equal("OSError: open: ENOENT: no such file or directory: /x/y", tostring(e))
      assert.are.equal("/x/y", e.filename)
      assert.is_nil(e.filename2)
      assert.are.equal("integer", math.type(e.errno))
      assert.is_true(e.errno < 0)
      assert.is_true(loom.Error:is(e))
      oserror("ENOENT", fs.stat, "")
      oserror("ENOENT", fs.open, "/x/y", "w")
    end)
  end)

  it("a directory: opens for reading, reading it raises EISDIR", function()
    run(function()
      local d = tmpdir()
      local f = fs.open(d)
      local e = oserror("EISDIR", f.read, f, "a")
      assert.are.equal("read: EISDIR: illegal operation on a directory: " .. d, e.message)
      assert.are.equal(d, e.filename)
      oserror("EISDIR", f.read, f, "l")
      assert.are.equal("directory", f:stat().type)
      f:close()
      oserror("EISDIR", fs.open, d, "w")
      oserror("EISDIR", fs.open, d, "r+")
      oserror("EISDIR", fs.read_file, d)
    end)
  end)

  local has_setpriv = os.execute("command -v setpriv >/dev/null 2>&1")
  it("permission denied: EACCES on a mode 000 file and a read-only directory (as root, which bypasses both, checked in a child process running as nobody)", function()
    local out = run(function()
      local d = tmpdir()
      fs.chmod(d, "755")
      fs.write_file(d .. "/secret", "s")
      fs.chmod(d .. "/secret", "000")
      fs.mkdir(d .. "/ro", { mode = "555" })
      fs.chmod(d .. "/ro", "555")
      if fs.stat("/proc/self").uid ~= 0 then
        local e = oserror("EACCES", fs.open, d .. "/secret")
        assert.are.equal("open: EACCES: permission denied: " .. d .. "/secret", e.message)
        oserror("EACCES", fs.read_file, d .. "/secret")
        oserror("EACCES", fs.mkdir, d .. "/ro/sub")
        oserror("EACCES", fs.write_file, d .. "/ro/f", "x", { atomic = true })
        return "in process"
      end
      if not has_setpriv then return nil end
      fs.write_file(d .. "/child.lua", [[
        local fs = loom.fs
        local ok, e = pcall(fs.open, arg[1] .. "/secret")
        print(ok, e.code, e.message)
        ok, e = pcall(fs.mkdir, arg[1] .. "/ro/sub")
        print(ok, e.code, e.filename)
        ok, e = pcall(fs.write_file, arg[1] .. "/ro/f", "x", { atomic = true })
        print(ok, e.code)
      ]])
      local exe = os.getenv("LOOM_EXE") or "build/bin/loom"
      local p = io.popen("unset LD_PRELOAD; timeout -s KILL 20 setpriv --reuid=65534 "
        .. "--regid=65534 --clear-groups '" .. exe .. "' '" .. d .. "/child.lua' '"
        .. d .. "' 2>&1")
      local text = p:read("a")
      p:close()
      assert.are.equal(("false\tEACCES\topen: EACCES: permission denied: %s/secret\n"
        .. "false\tEACCES\t%s/ro/sub\nfalse\tEACCES\n"):format(d, d), text)
      return "in a child as nobody"
    end)
    if out == nil then
      pending("running as root without setpriv: cannot drop to an unprivileged user")
    end
  end)

  it("a closed file raises on every use but close, which may be repeated", function()
    run(function()
      local p = tmpdir() .. "/c"
      fs.write_file(p, "abc\n")
      local f = fs.open(p, "r+")
      assert.is_true(f:close())
      assert.is_true(f:close())
      for _, call in ipairs {
        function() return f:read() end, function() return f:read("a") end,
        function() return f:write("x") end, function() return f:seek() end,
        function() return f:sync() end, function() return f:flush() end,
        function() return f:stat() end, function() return f:fileno() end,
        function() return f:lines() end,
      } do
        H.contains("attempt to use a closed file", H.raised(call))
      end
      -- an iterator made before the close raises at its next step
      f = fs.open(p)
      local it = f:lines()
      assert.are.equal("abc", it())
      f:close()
      H.contains("attempt to use a closed file", H.raised(it))
      -- <close>, then close again
      do
        local g <close> = fs.open(p)
        f = g
      end
      H.contains("loom.File (closed)", tostring(f))
      assert.is_true(f:close())
    end)
  end)

  it("close outside a task closes without waiting", function()
    local loop = H.loop{ virtual_time = false }
    local p = loop:run_until_complete(function() return tmpdir() .. "/o" end)
    local f = loop:run_until_complete(function()
      fs.write_file(p, "o")
      return fs.open(p)
    end)
    local fd = f:fileno()
    assert.is_true(f:close())  -- no loop running: closed at once
    assert.is_nil(io.open("/proc/self/fd/" .. fd))
    f = loop:run_until_complete(function() return fs.open(p) end)
    local got
    loop:run_until_complete(function()
      local done = loop:create_future()
      loop:call_soon(function()  -- a plain callback: no task to wait in
        got = f:close()
        done:set_result()
      end)
      done:await()
      for _ = 1, 100 do
        if core.fs._pending(loop) == 0 then break end
        loom.sleep(0.01)
      end
    end)
    assert.is_true(got)
    H.contains("closed", tostring(f))
  end)

  it("collected open files are closed without leaking descriptors", function()
    run(function()
      local d = tmpdir()
      fs.write_file(d .. "/f", "x")
      collectgarbage()
      collectgarbage()
      local base = nfds()
      for _ = 1, 50 do fs.open(d .. "/f") end
      do
        local keep = {}
        for i = 1, 20 do
          keep[i] = fs.open(d .. "/f")
          keep[i]:read(1)  -- with a buffer
        end
        assert.is_true(nfds() >= base + 70)
      end
      collectgarbage()
      collectgarbage()
      for _ = 1, 200 do  -- the closes run on the pool
        if nfds() == base then break end
        loom.sleep(0.01)
      end
      assert.are.equal(base, nfds())
    end)
  end)

  it("a loop dropped without close() while a task awaits a request is collected", function()
    local d = H.loop{ virtual_time = false }:run_until_complete(tmpdir)
    H.drop_loop(function(_, keep)
      keep[loom.create_task(function() return fs.stat(d) end)] = "task"
      loom.sleep(0)   -- the task has submitted its request
    end)
  end)

  it("a file collected after its loop closed is closed at once", function()
    local loop = H.loop{ virtual_time = false }
    local d = loop:run_until_complete(function() return tmpdir() end)
    local f = loop:run_until_complete(function()
      fs.write_file(d .. "/f", "x")
      return fs.open(d .. "/f")
    end)
    local fd = f:fileno()
    assert.is_not_nil(io.open("/proc/self/fd/" .. fd))
    loop:close()
    f = nil
    collectgarbage()
    collectgarbage()
    assert.is_nil(io.open("/proc/self/fd/" .. fd))
  end)

  it("a cancelled read keeps its bytes; the file is busy until its request ends", function()
    run(function(loop)
      local d = tmpdir()
      mkfifo(d .. "/p")
      local rf = fs.open(d .. "/p", "r+")
      local wf = fs.open(d .. "/p", "w")
      local reader = loop:create_task(function() return rf:read("l") end)
      loom.sleep(0.05)
      reader:cancel()
      assert.is_true(loom.CancelledError:is(H.raised(loom.await, reader)))
      H.contains("read: the file is busy (a request on it is in flight)",
        H.raised(rf.read, rf))
      H.contains("write: the file is busy", H.raised(rf.write, rf, "x"))
      H.contains("seek: the file is busy", H.raised(rf.seek, rf))
      wf:write("hello\nworld\n")
      local ok
      for _ = 1, 200 do
        ok = pcall(rf.read, rf, 0)
        if ok then break end
        loom.sleep(0.01)
      end
      assert.is_true(ok)
      assert.are.equal("hello", rf:read("l"))
      assert.are.equal("world", rf:read("l"))
      oserror("ESPIPE", rf.seek, rf, "cur")
      rf:close()
      wf:close()
    end)
  end)

  it("a file closed or collected while its request is in flight closes when it ends", function()
    run(function(loop)
      local d = tmpdir()
      mkfifo(d .. "/p")
      collectgarbage()
      collectgarbage()
      local base = nfds()
      local wf = fs.open(d .. "/p", "r+")
      local a = fs.open(d .. "/p", "r+")
      local ta = loop:create_task(function() return a:read(5) end)
      local tb = loop:create_task(function()
        local b = fs.open(d .. "/p", "r+")
        return b:read(5)
      end)
      loom.sleep(0.05)
      assert.is_true(a:close())   -- busy: closes when the read ends
      tb:cancel()                 -- b is dropped with its read in flight
      assert.is_true(loom.CancelledError:is(H.raised(loom.await, tb)))
      collectgarbage()
      collectgarbage()
      assert.are.equal(base + 3, nfds())
      -- each read takes what the FIFO holds: two writes end both
      wf:write(("z"):rep(10))
      loom.sleep(0.05)
      wf:write(("z"):rep(10))
      H.contains("attempt to use a closed file", H.raised(loom.await, ta))
      for _ = 1, 200 do
        if nfds() == base + 1 then break end
        loom.sleep(0.01)
      end
      assert.are.equal(base + 1, nfds())
      wf:close()
      assert.are.equal(base, nfds())
    end)
  end)

  it("closing the loop with requests in flight frees them without calling Lua", function()
    local d, base
    local aux = H.loop{ virtual_time = false }  -- counts the descriptors
    aux:run_until_complete(function()
      d = tmpdir()
      mkfifo(d .. "/p")
      fs.write_file(d .. "/src", pattern(24 * 1024 * 1024))
      collectgarbage()
      collectgarbage()
      base = nfds()
    end)
    local loop = H.loop{ virtual_time = false }
    local got = H.capture(loop)
    local called = 0
    local tasks = loop:run_until_complete(function()
      local ts = {}
      local function spawn(fn)
        local t = loop:create_task(fn)
        t:add_done_callback(function() called = called + 1 end)
        ts[#ts + 1] = t
      end
      local w = fs.open(d .. "/out", "w")
      local big = ("w"):rep(64 * 1024 * 1024)
      local t, _, rp = tcp_pair(loop, true)
      local src = fs.open(d .. "/src")
      spawn(function() return loop:sendfile(t, src) end)
      spawn(function() return w:write(big) end)
      spawn(function() return fs.open(d .. "/p") end)  -- waits for a writer
      for _ = 1, 40 do spawn(function() return fs.stat(d) end) end
      spawn(function() return fs.read_file(d .. "/src") end)
      loom.sleep(0)  -- each task has started its request, none is done
      assert.is_not_nil(rp)
      -- a writer opens the FIFO once the loop is closing: that open runs
      -- on the pool all the while
      assert.is_true(sh("(sleep 0.3; exec 3>'" .. d .. "/p'; sleep 0.1) >/dev/null 2>&1 &"))
      loop:stop()
      return ts
    end)
    assert.is_true(core.fs._pending(loop) > 0)
    loop:close()
    assert.are.equal(0, core.fs._pending(loop))
    for _, t in ipairs(tasks) do assert.is_false(t:done()) end
    tasks = nil
    collectgarbage()
    collectgarbage()
    assert.are.equal(0, called)
    assert.are.equal(0, #H.reports(got, "Exception in callback"))
    aux:run_until_complete(function()
      for _ = 1, 200 do
        if nfds() == base then break end
        loom.sleep(0.01)
      end
      assert.are.equal(base, nfds())
    end)
  end)

  it("raises at once outside a task", function()
    H.contains("open: no running event loop",
      H.raised(function() local r = fs.open("/") return r end))
    H.contains("read_file: no running event loop",
      H.raised(function() local r = fs.read_file("/") return r end))
    H.contains("write_file: no running event loop",
      H.raised(function() local r = fs.write_file("/x", "") return r end))
    H.contains("mkdir: no running event loop",
      H.raised(function() local r = fs.mkdir("/x", { parents = true }) return r end))

    local loop = H.loop()
    local errs = {}
    loop:run_until_complete(function()
      local done = loop:create_future()
      loop:call_soon(function()
        errs[1] = H.raised(fs.stat, "/")
        done:set_result()
      end)
      done:await()
      local co = coroutine.wrap(function() return fs.stat("/") end)
      errs[2] = H.raised(co)
    end)
    H.contains("stat: not inside a task", errs[1])
    H.contains("stat: called from a coroutine that is not a task", errs[2])
  end)

  it("checks the arguments of read", function()
    run(function()
      local p = tmpdir() .. "/r"
      fs.write_file(p, "x")
      local f <close> = fs.open(p)
      H.contains("bad argument #1 to 'read' (invalid format)",
        H.raised(function() local r = f:read("x") return r end))
      H.contains("bad argument #2 to 'read' (format 'n' is not supported)",
        H.raised(function() local r = f:read("l", "n") return r end))
      H.contains("bad argument #1 to 'read' (count must be >= 0)",
        H.raised(function() local r = f:read(-1) return r end))
      H.contains("number has no integer representation",
        H.raised(function() local r = f:read(1.5) return r end))
      H.contains("bad argument #1 to 'read' (string expected, got table)",
        H.raised(function() local r = f:read({}) return r end))
      H.contains("bad argument #2 to 'write' (string expected, got table)",
        H.raised(function() local r = f:write("a", {}) return r end))
      H.contains("loom.File expected", H.raised(f.read, {}))
      assert.are.equal("x", f:read("a"))  -- nothing was consumed
    end)
  end)
end)
