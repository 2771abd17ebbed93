-- loom.fs: files on libuv's thread pool, and loop:sendfile.
--
-- The requests, the File type and its read buffer are C (host/fs.c,
-- core.fs); this module composes them: file:lines, read_file, write_file
-- (atomic too), mkdir's parents, scandir's iterator, and loop:sendfile
-- with its fallback of reads and writes. It returns {fs = <the table>},
-- which init.lua merges into the module as loom.fs. See docs/fs.md.

local core = require "loom.core"
local errors = require "loom.errors"
local util = require "loom.util"

local C = core.fs
local OSError, CancelledError = errors.OSError, errors.CancelledError
local SendfileNotAvailableError = errors.SendfileNotAvailableError
local typename = util.typename
local mtype, select, type = math.type, select, type
local pack, unpack = table.pack, table.unpack

local fs = {}

for _, name in ipairs { "open", "stat", "lstat", "rmdir", "unlink", "rename",
                        "mkdtemp", "copyfile", "readlink", "realpath",
                        "chmod" } do
  fs[name] = C[name]
end

local function argerror(fname, i, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(i, fname, msg), level + 1)
end

-- The path argument i of fname: a string with no NUL byte.
local function checkpath(fname, i, p)
  if type(p) ~= "string" then
    argerror(fname, i, "string expected, got " .. typename(p), 3)
  end
  if p:find("\0", 1, true) then
    argerror(fname, i, "path contains a NUL byte", 3)
  end
  return p
end

-- An options table (or nil) with only the given keys.
local function checkopts(fname, i, opts, keys)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(fname, i, "table expected, got " .. typename(opts), 3)
  end
  for k in pairs(opts) do
    if not keys[k] then
      argerror(fname, i, ("unknown option '%s'"):format(tostring(k)), 3)
    end
  end
  return opts
end

-- A permission mode: an integer 0..4095 or a string of octal digits.
local function checkperm(fname, i, m)
  if (mtype(m) == "integer" and m >= 0 and m <= 4095)
      or (type(m) == "string" and #m >= 1 and #m <= 5 and not m:find("[^0-7]")
          and tonumber(m, 8) <= 4095) then
    return m
  end
  argerror(fname, i, "mode must be an integer 0..4095 or a string of octal "
    .. 'digits ("755")', 3)
end

-- Raises at the caller of fname when no loop runs (the calls inside
-- would name themselves instead).
local function checkloop(fname)
  if core._get_running_loop() == nil then
    error(fname .. ": no running event loop", 3)
  end
end

-- Raises e again when it is not an OSError (a cancellation above all):
-- what the pcalls below may swallow is the system's refusal, nothing else.
local function only_oserror(e)
  if not OSError:is(e) then error(e, 0) end
  return e
end


---------------------------------------------------------------- files

-- file:lines(...): an iterator that calls file:read(...) ("l" by
-- default) each time, for `for line in f:lines() do`. As io's file:lines,
-- it leaves the file open at the end.
core.interpose("loom.File", "lines", function(f, ...)
  if typename(f) ~= "loom.File" then
    argerror("lines", 1, "loom.File expected, got " .. typename(f), 2)
  end
  f:fileno()  -- raises on a closed file, as io's lines does
  if select("#", ...) == 0 then
    return function() return f:read("l") end
  end
  local fmts = pack(...)
  return function() return f:read(unpack(fmts, 1, fmts.n)) end
end)


---------------------------------------------------------------- whole files

-- read_file(path) -> string: the whole file.
function fs.read_file(path)
  checkpath("read_file", 1, path)
  checkloop("read_file")
  local f <close> = C.open(path, "rb")
  local data = f:read("a")
  return data
end

-- Splits a path into its directory ("." for none) and its last name.
local function split(path)
  local dir, base = path:match("^(.*)/([^/]*)$")
  if dir == nil then return ".", path end
  if dir == "" then dir = "/" end
  return dir, base
end

local tmpchars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

local function tmpname(dir, base)
  local t = {}
  for i = 1, 8 do
    local k = math.random(#tmpchars)
    t[i] = tmpchars:sub(k, k)
  end
  return ("%s/.%s.%s.tmp"):format(dir, base, table.concat(t))
end

-- The atomic write: a new file in the same directory, written, synced,
-- closed, then renamed over path (rename(2) replaces it in one step), so
-- a reader sees the old file or the new one, never a part. The new file
-- gets opts.mode, else the permissions of the file it replaces, else the
-- default of open (0666 less the umask).
local function write_atomic(path, data, mode)
  local dir, base = split(path)
  local tmp, f
  for _ = 1, 100 do
    tmp = tmpname(dir, base)
    local ok, r = pcall(C.open, tmp, "wx", mode and { mode = mode } or nil)
    if ok then f = r break end
    if only_oserror(r).code ~= "EEXIST" then error(r, 0) end
  end
  if f == nil then
    error(OSError("write_file: EEXIST: no free temporary name: " .. tmp,
      { code = "EEXIST", filename = tmp }), 0)
  end
  local ok, err = pcall(function()
    if mode == nil then
      local okst, st = pcall(C.stat, path)
      if okst then C.chmod(tmp, st.perm) else only_oserror(st) end
    end
    f:write(data)
    f:sync()
    f:close()
    C.rename(tmp, path)
  end)
  if not ok then
    f:close()
    local okrm, e = pcall(C.unlink, tmp)
    if not okrm and not OSError:is(e) then error(e, 0) end
    error(err, 0)
  end
  -- the rename itself survives a crash once the directory is synced;
  -- some file systems cannot sync a directory: that is no failure
  local okd, e = pcall(function()
    local d <close> = C.open(dir, "r")
    d:sync()
  end)
  if not okd then only_oserror(e) end
end

-- write_file(path, data, [opts]) -> true: opts.atomic (see above),
-- opts.mode (the permissions of a file it creates).
function fs.write_file(path, data, opts)
  checkpath("write_file", 1, path)
  if type(data) ~= "string" and type(data) ~= "number" then
    argerror("write_file", 2, "string expected, got " .. typename(data), 2)
  end
  opts = checkopts("write_file", 3, opts, { atomic = true, mode = true })
  local mode = opts.mode
  if mode ~= nil then checkperm("write_file", 3, mode) end
  checkloop("write_file")
  if opts.atomic then
    write_atomic(path, data, mode)
  else
    local f <close> = C.open(path, "wb", mode and { mode = mode } or nil)
    f:write(data)
  end
  return true
end


---------------------------------------------------------------- directories

-- The directory that holds path, or nil for "/", "." and a bare name.
local function parent(path)
  local p = path:gsub("/+$", "")
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return nil end
  d = d:gsub("/+$", "")
  if d == "" then return p ~= "" and "/" or nil end
  return d
end

local function isdir(path)
  local ok, st = pcall(C.stat, path)
  if not ok then only_oserror(st) end
  return ok and st.type == "directory"
end

-- mkdir -p: makes the missing parents (with the default mode), then path
-- (with mode); a directory that exists already is no error.
local function makedirs(path, mode)
  local ok, e = pcall(C.mkdir, path, mode and { mode = mode } or nil)
  if ok then return end
  local code = only_oserror(e).code
  if code == "ENOENT" then
    local up = parent(path)
    if up == nil then error(e, 0) end
    makedirs(up, nil)
    ok, e = pcall(C.mkdir, path, mode and { mode = mode } or nil)
    if ok then return end
    code = only_oserror(e).code
  end
  if code == "EEXIST" and isdir(path) then return end
  error(e, 0)
end

-- mkdir(path, [opts]) -> true: opts.mode (default 0777 less the umask),
-- opts.parents (as mkdir -p).
function fs.mkdir(path, opts)
  checkpath("mkdir", 1, path)
  opts = checkopts("mkdir", 2, opts, { mode = true, parents = true })
  if opts.mode ~= nil then checkperm("mkdir", 2, opts.mode) end
  if opts.parents ~= nil and type(opts.parents) ~= "boolean" then
    argerror("mkdir", 2, "parents must be a boolean, got " .. typename(opts.parents), 2)
  end
  if not opts.parents then
    local r = C.mkdir(path, opts)
    return r
  end
  checkloop("mkdir")
  makedirs(path, opts.mode)
  return true
end

-- scandir(path) -> iterator of name, type: the entries of the directory
-- (without "." and ".."), sorted by name, read in one request.
function fs.scandir(path)
  checkpath("scandir", 1, path)
  local names, types = C.scandir(path)
  local i = 0
  return function()
    i = i + 1
    local name = names[i]
    if name ~= nil then return name, types[i] end
  end
end


---------------------------------------------------------------- sendfile

local FALLBACK_CHUNK = 256 * 1024

local function closed_error()
  return OSError("sendfile: EPIPE: broken pipe (the transport closed)",
    { code = "EPIPE", errno = -32 })
end

-- asyncio's fallback: reads of the file written to the transport, waiting
-- while its write buffer is above the high-water mark. The file's
-- position ends after the bytes sent, as with the native path.
local function send_by_writes(transport, file, offset, count)
  local f = file
  if mtype(file) == "integer" then f = C._fdfile(file) end
  local okseek, e = pcall(f.seek, f, "set", offset)
  if not okseek and not (offset == 0 and OSError:is(e) and e.code == "ESPIPE") then
    error(e, 0)  -- a pipe is read from where it is, as asyncio does
  end
  local sent = 0
  local ok, err = pcall(function()
    while count == nil or sent < count do
      local want = FALLBACK_CHUNK
      if count ~= nil and count - sent < want then want = count - sent end
      local data = f:read(want)
      if data == nil then break end
      local low, high = transport:get_write_buffer_limits()
      while transport:get_write_buffer_size() > high and not transport:is_closing() do
        transport:_drained(low):await()
      end
      if transport:is_closing() then error(closed_error(), 0) end
      transport:write(data)
      sent = sent + #data
    end
  end)
  if f == file then pcall(f.seek, f, "set", offset + sent) end
  if not ok then error(err, 0) end
  return sent
end

-- loop:sendfile(transport, file, [offset, [count]], [opts]) -> bytes
-- sent: as asyncio's loop.sendfile. file is a loom.fs File or a file
-- descriptor; offset defaults to 0, count to the rest of the file.
-- sendfile(2) first, on the thread pool, once the transport's queued
-- writes are out; when it cannot send this file, the fallback (unless
-- opts.fallback == false).
local function sendfile(loop, transport, file, offset, count, opts)
  if typename(transport) ~= "loom.TCPTransport" then
    argerror("sendfile", 1, "stream transport expected, got " .. typename(transport), 2)
  end
  if typename(file) ~= "loom.File"
      and not (mtype(file) == "integer" and file >= 0 and file <= 0x7fffffff) then
    argerror("sendfile", 2, "loom.File or file descriptor expected, got "
      .. (type(file) == "number" and tostring(file) or typename(file)), 2)
  end
  if type(offset) == "table" and count == nil and opts == nil then
    offset, opts = nil, offset
  elseif type(count) == "table" and opts == nil then
    count, opts = nil, count
  end
  if offset == nil then offset = 0 end
  if mtype(offset) ~= "integer" or offset < 0 then
    argerror("sendfile", 3, "offset must be an integer >= 0", 2)
  end
  if count ~= nil and (mtype(count) ~= "integer" or count <= 0) then
    argerror("sendfile", 4, "count must be an integer > 0", 2)
  end
  opts = checkopts("sendfile", 5, opts, { fallback = true })
  if core._get_running_loop() ~= loop or core.current_task() == nil then
    error("sendfile: not inside a task of this event loop", 2)
  end
  if transport:is_closing() then error("sendfile: the transport is closing", 2) end
  while true do
    local ok, r = pcall(C._sendfile, transport, file, offset, count)
    if ok and r ~= false then return r end
    if ok then  -- writes still queued: they go out first
      transport:_drained(0):await()
      if transport:is_closing() then error(closed_error(), 0) end
    elseif SendfileNotAvailableError:is(r) and opts.fallback ~= false then
      break
    else
      if CancelledError:is(r) then
        -- give the transport back before raising, as asyncio does: wait
        -- for the pool's job in flight (a second cancel stops waiting)
        local w = C._sendfile_wait(transport)
        if w then pcall(w.await, w) end
      end
      error(r, 0)
    end
  end
  return send_by_writes(transport, file, offset, count)
end
core.interpose("loom.Loop", "sendfile", sendfile)

return { fs = fs }
