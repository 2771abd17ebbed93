-- loom.streams: the waiting half of StreamReader, after asyncio's
-- streams.py.
--
-- The buffer and every rule about what a read returns live in C
-- (host/streambuf.c): each _try_* method answers at once with the result,
-- raises, or returns nil when the buffer cannot answer yet. The methods
-- here loop on a try-read and, between tries, await the reader's one
-- waiter future, which feed_data, feed_eof and set_exception complete.
-- A try-read consumes nothing unless it succeeds, so a read cancelled
-- while it waits leaves the buffer as it was.

local core = require "loom.core"

local type, error, pcall, getmetatable = type, error, pcall, getmetatable
local concat = table.concat
local typename = require("loom.util").typename

local await = core.await
local running_loop = core._get_running_loop

local M = {}

-- The metatable of the C type (nil until loom.core opens it).
local MT = core._StreamReader and getmetatable(core._StreamReader())

-- Raises the bad-self error of method fname at its caller.
local function checkself(self, fname)
  if getmetatable(self) ~= MT then
    error(("bad argument #1 to '%s' (loom.StreamReader expected, got %s)")
      :format(fname, typename(self)), 3)
  end
end

-- Awaits the next feed_data, feed_eof or set_exception on self. Raises
-- (at the caller of the read method) when another read waits already or
-- when no loop runs.
local function wait(self, fname)
  local loop = running_loop()
  if loop == nil then error(fname .. ": no running event loop", 3) end
  local fut = loop:create_future()
  self:_set_waiter(fut, fname)
  local ok, err = pcall(await, fut)
  self:_clear_waiter(fut)
  if not ok then error(err, 0) end
end

-- read([n]): up to n bytes (n > 0), as soon as any are buffered; "" at
-- EOF. n = -1 or none: everything until EOF, read in blocks of limit
-- bytes as asyncio does, so that a paused transport is resumed.
local function read(self, n)
  checkself(self, "read")
  if n == nil or n == -1 then
    local blocks, lim = {}, self:_limit()
    local s = self:_try_read(0)               -- checks self, raises a set
    repeat                                    -- exception
      s = read(self, lim)
      blocks[#blocks + 1] = s
    until s == ""
    return concat(blocks)
  end
  local s = self:_try_read(n)
  while s == nil do
    wait(self, "read")
    s = self:_try_read(n)
  end
  return s
end

-- readexactly(n): exactly n bytes; IncompleteReadError at EOF.
local function readexactly(self, n)
  checkself(self, "readexactly")
  local s = self:_try_readexactly(n)
  while s == nil do
    wait(self, "readexactly")
    s = self:_try_readexactly(n)
  end
  return s
end

-- readuntil([sep]): the data up to and including sep ("\n" by default).
local function readuntil(self, sep)
  checkself(self, "readuntil")
  if sep == nil then sep = "\n" end
  local s, pos = self:_try_readuntil(sep)
  while s == nil do
    wait(self, "readuntil")
    s, pos = self:_try_readuntil(sep, pos)
  end
  return s
end

-- readline(): a line with its "\n"; at EOF the last partial line, then "".
local function readline(self)
  checkself(self, "readline")
  local s, pos = self:_try_readline()
  while s == nil do
    wait(self, "readline")
    s, pos = self:_try_readline(pos)
  end
  return s
end

-- lines(): an iterator for `for line in reader:lines() do`; each line
-- keeps its "\n" (asyncio's async iteration), and the loop ends at EOF.
local function lines(self)
  checkself(self, "lines")
  return function()
    local s = readline(self)
    if s ~= "" then return s end
    return nil
  end
end

local methods = {
  read = read, readexactly = readexactly, readuntil = readuntil,
  readline = readline, lines = lines,
}

if core._StreamReader ~= nil then
  for name, fn in pairs(methods) do
    core.interpose("loom.StreamReader", name, fn)
  end
end

-- StreamReader([opts]): a new reader; opts.limit (default 64 KiB) bounds
-- what readuntil and readline look through, and sets the flow-control
-- marks (pause past 2 * limit, resume at limit).
function M.StreamReader(opts)
  local limit
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'StreamReader' (table expected, got "
        .. type(opts) .. ")", 2)
    end
    limit = opts.limit
  end
  return core._StreamReader(limit)
end

return M
