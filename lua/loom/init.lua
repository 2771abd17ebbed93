-- loom: an asyncio-style event loop for Lua 5.4.
--
-- The scheduler, timers, futures and tasks are C (loom.core); this file
-- composes them into the public module and holds the policy: the default
-- exception handler, loom.run and the executable's entry points.

-- First of all: loom.core is built against Lua 5.4's API, so under another
-- Lua the require below would fail on an undefined symbol. This file is
-- kept free of 5.4-only syntax (<const>, <close>) so that the check runs
-- at all under an older Lua; the install step of scripts/run-tests.sh
-- loads it under Lua 5.3.
if _VERSION ~= "Lua 5.4" then
  error("loom needs Lua 5.4, but this is " .. tostring(_VERSION)
    .. " (run it with lua5.4, or install it with luarocks --lua-version 5.4)", 0)
end

local core = require "loom.core"
local errors = require "loom.errors"

local loom = {}

loom.version = core.version
loom._core = core

for name, cls in pairs(errors) do
  if type(cls) == "table" then loom[name] = cls end
end
core._set_errors(errors)

local LOOP = "loom.Loop"
local pack, unpack = table.pack, table.unpack

-- Error values as text: strings as they are, objects through tostring.
local function errtext(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  if type(e) == "nil" then return "nil" end
  return string.format("(error object is a %s value)", type(e))
end
loom._errtext = errtext


---------------------------------------------------------------- loops

local current_loop -- the loop set with set_event_loop

function loom.new_event_loop(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'new_event_loop' (table expected, got "
        .. type(opts) .. ")", 2)
    end
    for k in pairs(opts) do
      if k ~= "virtual_time" and k ~= "debug" then
        error(("bad argument #1 to 'new_event_loop' (unknown option '%s')")
          :format(tostring(k)), 2)
      end
    end
    local vt = opts.virtual_time
    if vt ~= nil and type(vt) ~= "boolean" and vt ~= "manual" then
      error("bad argument #1 to 'new_event_loop' (virtual_time must be "
        .. "true, false or \"manual\")", 2)
    end
  end
  return core.new_loop(opts)
end

loom.get_running_loop = core.get_running_loop

-- The running loop; else the loop set with set_event_loop, made on first
-- use when none is set (so plain scripts can call get_event_loop()).
function loom.get_event_loop()
  local loop = core._get_running_loop()
  if loop then return loop end
  if current_loop == nil or current_loop:is_closed() then
    current_loop = core.new_loop()
  end
  return current_loop
end

function loom.set_event_loop(loop)
  if loop ~= nil and not (getmetatable(loop) and tostring(loop):match("^loom%.Loop")) then
    error("bad argument #1 to 'set_event_loop' (loom.Loop expected, got "
      .. type(loop) .. ")", 2)
  end
  current_loop = loop
end

loom.sleep = core.sleep
loom.await = core.await
loom.current_task = core.current_task
loom.all_tasks = core.all_tasks

local running_loop = core._get_running_loop
local util = require "loom.util"
local callable, typename = util.callable, util.typename

-- Checked here, not by the loop's method, so that an error points at the
-- caller's line.
function loom.create_task(fn, ...)
  local loop = running_loop()
  if loop == nil then error("create_task: no running event loop", 2) end
  if not callable(fn) then
    error(("bad argument #1 to 'create_task' (function expected, got %s)")
      :format(typename(fn)), 2)
  end
  return loop:create_task(fn, ...)
end

-- Task(loop, fn, ...): a task of the loop, made without its task factory
-- (what a factory calls). Future([loop]): a future of the loop, or of the
-- running loop.
loom.Task = core.new_task

function loom.Future(loop)
  if loop == nil then
    loop = core._get_running_loop()
    if loop == nil then error("Future: no running event loop", 2) end
  elseif typename(loop) ~= "loom.Loop" then
    error(("bad argument #1 to 'Future' (loom.Loop expected, got %s)")
      :format(typename(loop)), 2)
  end
  if loop:is_closed() then error("Future: event loop is closed", 2) end
  return loop:create_future()
end

-- The composition layer: each module returns a table of public names.
for _, name in ipairs { "loom.context", "loom.sync", "loom.queues",
                        "loom.combinators", "loom.dns", "loom.signals",
                        "loom.fds", "loom.streams", "loom.introspect",
                        "loom.tracing", "loom.subprocess", "loom.fs",
                        "loom.thread", "loom.tls" } do
  for k, v in pairs(require(name)) do
    assert(loom[k] == nil, name .. " redefines loom." .. k)
    loom[k] = v
  end
end


---------------------------------------------------------------- Lua-side loop methods

-- Prints the context to stderr: its message, the other fields, the error
-- and its traceback (the dead coroutine's, for a task).
local function default_exception_handler(loop, ctx)
  if type(ctx) ~= "table" then
    error("bad argument #1 to 'default_exception_handler' (table expected, got "
      .. type(ctx) .. ")", 2)
  end
  local out = { ctx.message or "Unhandled error in event loop" }
  local keys = {}
  for k in pairs(ctx) do
    if k ~= "message" and k ~= "exception" and k ~= "traceback" then
      keys[#keys + 1] = tostring(k)
    end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = ctx[k]
    if type(v) == "table" and getmetatable(v) == nil then v = "{...}" end
    out[#out + 1] = k .. ": " .. tostring(v)
  end
  if ctx.exception ~= nil then
    out[#out + 1] = "error: " .. errtext(ctx.exception)
  end
  local tb = ctx.traceback
  if tb == nil and ctx.task ~= nil then tb = core._task_traceback(ctx.task) end
  if tb ~= nil then out[#out + 1] = tb end
  io.stderr:write(table.concat(out, "\n"), "\n")
  io.stderr:flush()
end
core.interpose(LOOP, "default_exception_handler", default_exception_handler)

-- Lua has no asynchronous generators; kept so code written against
-- asyncio's shutdown sequence runs unchanged.
core.interpose(LOOP, "shutdown_asyncgens", function() end)


---------------------------------------------------------------- run

-- Cancels every pending task of the loop and runs it until they are all
-- done; errors other than cancellation go to the exception handler.
local function cancel_all_tasks(loop)
  local tasks = core.all_tasks(loop)
  if #tasks == 0 then return end
  for _, t in ipairs(tasks) do t:cancel() end
  local left = #tasks
  local all_done = loop:create_future()
  local function one_done()
    left = left - 1
    if left == 0 then all_done:set_result() end
  end
  for _, t in ipairs(tasks) do t:add_done_callback(one_done) end
  loop:run_until_complete(all_done)
  for _, t in ipairs(tasks) do
    if not t:cancelled() then
      local e = t:exception()
      if e ~= nil then
        loop:call_exception_handler {
          message = "unhandled error during loom.run() shutdown",
          exception = e,
          task = t,
        }
      end
    end
  end
end
loom._cancel_all_tasks = cancel_all_tasks

local function finish_loop(loop)
  pcall(cancel_all_tasks, loop)
  loop:shutdown_asyncgens()
  loop:shutdown_default_executor()
  if current_loop == loop then current_loop = nil end
  loop:close()
end

-- run(fn, ...): runs fn(...) as the main task of a new loop, cancels what
-- is left, closes the loop and returns fn's results (or raises its error).
function loom.run(fn, ...)
  if core._get_running_loop() then
    error("run: cannot be called from a running event loop", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #1 to 'run' (function expected, got " .. type(fn) .. ")", 2)
  end
  local loop = core.new_loop()
  current_loop = loop
  local res = pack(pcall(loop.run_until_complete, loop, fn, ...))
  finish_loop(loop)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, res.n)
end


---------------------------------------------------------------- the executable

local function report_error(err, task)
  local msg = errtext(err)
  local tb = task and task:done() and core._task_traceback(task)
  io.stderr:write("loom: ", msg, "\n")
  if tb then io.stderr:write(tb, "\n") end
  io.stderr:flush()
end

-- _signal_dump(loop): from now on SIGUSR1 prints the loop's task tree to
-- stderr (the executable's --signal-dump).
function loom._signal_dump(loop)
  loop:add_signal_handler("SIGUSR1", function()
    io.stderr:write(("loom: tasks at loop time %.3f (SIGUSR1)\n"):format(loop:time()))
    loom.print_tasks(loop, io.stderr)
    io.stderr:flush()
  end)
end

-- _main(opts, chunk, ...): runs a script's chunk as the main task of a
-- fresh loop and returns the exit status: 0, 1 on an error (printed with
-- its traceback), 130 after Ctrl-C, which cancels the main task (a second
-- Ctrl-C stops the loop).
function loom._main(opts, chunk, ...)
  if opts and opts.trace then loom.trace.start(opts.trace) end
  local loop = core.new_loop { debug = opts and opts.debug,
                               virtual_time = opts and opts.virtual_time }
  current_loop = loop
  local main = loop:create_task(chunk, ...)
  main:set_name("main")
  if opts and opts.signal_dump then loom._signal_dump(loop) end
  local interrupts = 0
  loop:_catch_sigint(function()
    interrupts = interrupts + 1
    if interrupts == 1 then main:cancel("interrupted") else loop:stop() end
  end)
  local ok, err = pcall(loop.run_until_complete, loop, main)
  if interrupts < 2 then pcall(cancel_all_tasks, loop) end
  loop:_catch_sigint(nil)
  finish_loop(loop)
  if opts and opts.trace then loom.trace.stop() end
  if interrupts > 0 then return 130 end
  if not ok then
    report_error(err, main)
    return 1
  end
  return 0
end

local repl_loop

-- _repl_eval(fn): runs fn as a task on the prompt's loop; returns true and
-- its results, or false and the error text with its traceback.
function loom._repl_eval(fn)
  if repl_loop == nil or repl_loop:is_closed() then repl_loop = core.new_loop() end
  current_loop = repl_loop
  local task = repl_loop:create_task(fn)
  local res = pack(pcall(repl_loop.run_until_complete, repl_loop, task))
  if res[1] then return true, unpack(res, 2, res.n) end
  local msg = errtext(res[2])
  local tb = task:done() and core._task_traceback(task)
  if tb then msg = msg .. "\n" .. tb end
  return false, msg
end

-- _repl_loop(): the prompt's loop (made on first use), also the event
-- loop of loom.get_event_loop() while the prompt runs.
function loom._repl_loop(virtual_time)
  if repl_loop == nil or repl_loop:is_closed() then
    repl_loop = core.new_loop { virtual_time = virtual_time }
  end
  current_loop = repl_loop
  return repl_loop
end

function loom._repl_close()
  if repl_loop ~= nil and not repl_loop:is_closed() then
    finish_loop(repl_loop)
  end
  repl_loop = nil
end

return loom
