-- loom.fds: awaiting a file descriptor (the watchers themselves are the
-- loop methods add_reader / add_writer of host/poll.c).

local core = require "loom.core"

local M = {}

local await = core.await
local mtype = math.type

local function wake(fut)
  if not fut:done() then fut:set_result() end
end

-- Suspends the running task until fd is ready, through a one-shot watcher
-- that is removed when the wait ends, however it ends (cancellation
-- included). Like asyncio's sock_recv, it removes the watcher only when it
-- is still its own: a reader installed over it in the meantime stays.
local function waiter(name, add, remove)
  return function(fd)
    local ifd = mtype(fd) == "float" and math.tointeger(fd) or fd
    if mtype(ifd) ~= "integer" or ifd < 0 or ifd > 0x7fffffff then
      error(("bad argument #1 to '%s' (file descriptor (non-negative integer) "
        .. "expected, got %s)"):format(name, type(fd) == "number"
          and tostring(fd) or type(fd)), 2)
    end
    local loop = core._get_running_loop()
    if loop == nil then error(name .. ": no running event loop", 2) end
    if core.current_task() == nil then
      error(name .. ": not called from a task", 2)
    end
    local fut = loop:create_future()
    local h = add(loop, ifd, wake, fut)
    local ok, err = pcall(await, fut)
    if not h:cancelled() then remove(loop, ifd) end
    if not ok then error(err, 0) end
  end
end

-- wait_readable(fd) / wait_writable(fd): suspend the running task until fd
-- is readable / writable.
M.wait_readable = waiter("wait_readable",
  function(loop, ...) return loop:_add_reader(...) end,
  function(loop, fd) return loop:remove_reader(fd) end)
M.wait_writable = waiter("wait_writable",
  function(loop, ...) return loop:_add_writer(...) end,
  function(loop, fd) return loop:remove_writer(fd) end)

return M
