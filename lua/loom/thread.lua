-- loom.thread: the Lua side of threads (host/thread.c, host/channel.c):
-- thread.start, the entry point a started thread runs, and the loop's
-- shutdown_default_executor.

local core = require "loom.core"

local pack, unpack = table.pack, table.unpack

local M = {}

M.to_thread = core.to_thread
M.ThreadPoolExecutor = core.ThreadPoolExecutor
M.wrap_future = core.wrap_future
M.run_coroutine_threadsafe = core.run_coroutine_threadsafe
M.channel = core.channel

-- thread.start(fn, ...): fn(...) runs as the main task of a new loop in a
-- new OS thread, with its own Lua state; join() returns its results.
-- thread.cpu_count(): how many CPUs the process may use.
M.thread = { start = core._thread_start, cpu_count = core._cpu_count }

-- What a started thread runs in its own state: fn(...) as the main task
-- of a new loop, then what loom.run does to finish (cancel what is left,
-- shut the default executor down, close). Returns true and fn's results,
-- or false, the error and its traceback.
function M._thread_main(fn, ...)
  local loom = require "loom"
  local loop = loom.new_event_loop()
  loom.set_event_loop(loop)
  local task = loop:create_task(fn, ...)
  local res = pack(pcall(loop.run_until_complete, loop, task))
  local tb = not res[1] and task:done() and core._task_traceback(task) or nil
  pcall(loom._cancel_all_tasks, loop)
  loop:shutdown_default_executor()
  loom.set_event_loop(nil)
  loop:close()
  if res[1] then return true, unpack(res, 2, res.n) end
  return false, res[2], tb
end

-- loop:shutdown_default_executor(): no new job for the default executor;
-- waits for the running ones and joins its threads (inside a task it
-- awaits, outside a running loop it blocks). Later run_in_executor(nil)
-- calls are refused, as in asyncio.
core.interpose("loom.Loop", "shutdown_default_executor", function(loop)
  if getmetatable(loop) ~= debug.getregistry()["loom.Loop"] then
    error(("bad argument #1 to 'shutdown_default_executor' (loom.Loop "
      .. "expected, got %s)"):format(type(loop)), 2)
  end
  local ex = core._default_executor(loop)
  core._forget_default_executor(loop)
  if ex ~= nil then ex:shutdown(true) end
end)

return M
