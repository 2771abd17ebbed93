-- files on loom: writes a file of N MiB in 1 MiB chunks through loom.fs
-- (file:write, each a request on libuv's thread pool), then reads it back
-- in 1 MiB chunks (file:read(n)); the file lives in a new temporary
-- directory (under $TMPDIR, else /tmp) that is removed at the end. Same
-- work as scripts/bench/c/files.c with read(2) and write(2). No fsync:
-- both measure the path to the page cache, not the disk; both run sync(1)
-- before the clock starts, so writeback left by an earlier run (the
-- discards of its deleted file) is not measured. Prints one line
-- per direction: "files_write loom N seconds MiB/s" and "files_read ...".
-- usage: build/bin/loom --plain scripts/bench/files.lua [N_MIB [CHUNK_KIB]]
local n = math.tointeger(tonumber(arg[1])) or 1024
local chunk = (math.tointeger(tonumber(arg[2])) or 1024) * 1024
local total = n * 1024 * 1024

local parts = {}
for i = 1, chunk // 64 do parts[i] = ("%063d\n"):format(i) end
local block = table.concat(parts):sub(1, chunk)
assert(#block == chunk)

local fs = loom.fs
local loop = loom.new_event_loop()
local wsecs, rsecs = loop:run_until_complete(function()
  local dir = fs.mkdtemp((os.getenv("TMPDIR") or "/tmp") .. "/loom-bench-XXXXXX")
  local path = dir .. "/data"
  local ok, a, b = pcall(function()
    os.execute("sync")
    local t0 = loop:time()
    local f = fs.open(path, "wb")
    for _ = 1, total // chunk do f:write(block) end
    f:close()
    local t1 = loop:time()
    f = fs.open(path, "rb")
    local got, first = 0, nil
    while true do
      local s = f:read(chunk)
      if s == nil then break end
      first = first or s
      got = got + #s
    end
    f:close()
    local t2 = loop:time()
    assert(got == total, ("read %d bytes of %d"):format(got, total))
    assert(first == block, "the first chunk read back differs")
    return t1 - t0, t2 - t1
  end)
  pcall(fs.unlink, path)
  fs.rmdir(dir)
  if not ok then error(a, 0) end
  return a, b
end)
loop:close()
print(("files_write loom %d %.6f %.1f"):format(n, wsecs, n / wsecs))
print(("files_read loom %d %.6f %.1f"):format(n, rsecs, n / rsecs))
