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
