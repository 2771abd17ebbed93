-- loom.combinators: the high-level task API of asyncio's tasks.py,
-- timeouts.py and taskgroups.py (3.12): gather, wait, as_completed,
-- shield, wait_for, timeout/timeout_at and task groups. Each follows
-- asyncio's code path; where loom differs (everything here awaits rather
-- than returning a future), docs/combinators.md says so.
--
-- All of it runs inside a task. Futures are the core's; an awaitable is a
-- loom Future or Task, and a plain function stands for a coroutine: it
-- becomes a task of the running loop where asyncio would wrap one.

local core = require "loom.core"
local iscallable = require("loom.util").callable
local typename = require("loom.util").typename
local errors = require "loom.errors"

local CancelledError = errors.CancelledError
local TimeoutError = errors.TimeoutError
local ExceptionGroup = errors.ExceptionGroup

local await = core.await
local pack, unpack = table.pack, table.unpack
local type, select, pcall, error, getmetatable, setmetatable =
  type, select, pcall, error, getmetatable, setmetatable

local M = {}

-- The metatables of the core's futures and tasks (a future that holds an
-- error has a twin metatable with a finalizer), by the names the core
-- registers them under: an awaitable is recognised with one lookup.
local reg = debug.getregistry()
local FUTURE_MTS = {
  [reg["loom.Future"]] = true,
  [reg["loom.Future.gc"]] = true,
  [reg["loom.Task"]] = true,
}
reg = nil

local function isfuture(x)
  return FUTURE_MTS[getmetatable(x)] == true
end


---------------------------------------------------------------- helpers

-- The running loop and task; raises "<fname>: not inside a task" at the
-- caller of the public function (level counts from that function).
local function intask(fname, level)
  local loop = core._get_running_loop()
  local task = loop and core.current_task(loop)
  if task == nil then
    error(fname .. ": not inside a task", level + 1)
  end
  return loop, task
end

local function argerror(fname, n, msg, level)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), level + 1)
end

-- opts (a table) holds only the keys of allowed; level as argerror's,
-- for the function that calls this one.
local function checkkeys(fname, n, opts, allowed, level)
  for k in pairs(opts) do
    if not allowed[k] then
      argerror(fname, n, ("unknown option '%s'"):format(tostring(k)),
               level + 1)
    end
  end
end

-- A plain table: a list or an options table (no metatable).
local function isplain(x)
  return type(x) == "table" and getmetatable(x) == nil
end


-- A delay or timeout: nil, or a number that is neither NaN nor negative.
local function checkdelay(fname, n, what, d, level)
  if d == nil then return nil end
  if type(d) ~= "number" then
    argerror(fname, n, ("%s: number expected, got %s"):format(what, type(d)),
      level + 1)
  end
  if d ~= d then argerror(fname, n, what .. " is NaN", level + 1) end
  if d < 0 then argerror(fname, n, what .. " is negative", level + 1) end
  return d
end

-- An absolute loop time: nil, or a number that is not NaN.
local function checkwhen(fname, n, when, level)
  if when == nil then return nil end
  if type(when) ~= "number" then
    argerror(fname, n, "number expected, got " .. type(when), level + 1)
  end
  if when ~= when then argerror(fname, n, "deadline is NaN", level + 1) end
  return when
end

-- Checks that x is an awaitable of the loop (a future or task of it, or,
-- when fnok, a function); item, when given, is its index in a list.
local future_loop = core._future_loop

local function checkaw(fname, n, item, x, loop, fnok, level)
  local xloop = future_loop(x)
  if xloop ~= nil then
    if xloop ~= loop then
      argerror(fname, n, (item and "item " .. item .. ": " or "")
        .. "the future belongs to a different event loop", level + 1)
    end
  elseif not (fnok and type(x) == "function") then
    argerror(fname, n, ("%sloom.Future or loom.Task%s expected, got %s")
      :format(item and "item " .. item .. ": " or "",
              fnok and " or function" or "", type(x)), level + 1)
  end
end

-- The future for a checked awaitable: itself, or a new task running the
-- function (asyncio's ensure_future).
local function ensure(x, loop)
  if type(x) == "function" then return loop:create_task(x) end
  return x
end

-- The CancelledError a cancelled future raises (a task keeps the one it
-- ended with; a future makes one with its cancel message).
local function cancelled_error(fut)
  local _, e = pcall(fut.exception, fut)
  return e
end

-- Wakes a task waiting on the waiter future (asyncio's _release_waiter).
local function release(waiter)
  if not waiter:done() then waiter:set_result() end
end

-- Reads the items of a list argument: fs must be a plain table (a future
-- is refused, as asyncio refuses one); returns the awaitables, checked, in
-- their order, a future given twice once, and their number. A function
-- is not a coroutine object: each occurrence stays.
local function uniq_list(fname, fs, loop, fnok, level)
  if not isplain(fs) then
    argerror(fname, 1, "list of futures expected, got "
      .. (isfuture(fs) and "a single future" or type(fs)), level + 1)
  end
  local n = #fs
  local list, seen, m = {}, {}, 0
  for i = 1, n do
    local x = fs[i]
    checkaw(fname, 1, i, x, loop, fnok, level + 1)
    if not seen[x] then
      if type(x) ~= "function" then seen[x] = true end
      m = m + 1
      list[m] = x
    end
  end
  return list, m
end


---------------------------------------------------------------- gather

-- Runs asyncio's gather over args[1..n] (checked awaitables) and awaits
-- the gathering; returns the list of results (one per argument, first
-- value of each, with .n), or raises the first error.
--
-- The counting is the core's (_gather): the gathering is the done
-- callback of every child and completes a waiter future when the outcome
-- is known. A task cancelled while it waits has its waiter cancelled by
-- the core: the loop below then does what _GatheringFuture.cancel()
-- does, cancelling the children, and waits on with a new waiter.
local function gather_impl(loop, args, n, return_exceptions)
  local futs = args
  for i = 1, n do
    if type(args[i]) == "function" then
      if futs == args then futs = table.move(args, 1, n, 1, {}) end
      futs[i] = loop:create_task(args[i])
    end
  end
  local waiter = loop:create_future()
  local g = core._gather(futs, n, return_exceptions, waiter)
  local cancel_requested, cancel_msg, must_raise = false, nil, nil
  local finished, failed, outcome = g:outcome()
  while not finished do
    local ok, e = pcall(await, waiter)
    finished, failed, outcome = g:outcome()
    if not ok then
      if not waiter:cancelled() or finished then
        -- cancelled once the gathering was done (asyncio: the gathering
        -- future refuses the cancel, the task raises at its wakeup)
        error(e, 0)
      end
      local msg = CancelledError:is(e) and e.message or nil
      if g:cancel_children(msg) then
        cancel_requested, cancel_msg = true, msg
      else
        must_raise = e
      end
      waiter = loop:create_future()
      g:set_waiter(waiter)
    end
  end
  if must_raise ~= nil then error(must_raise, 0) end
  if failed then error(outcome, 0) end
  -- the gathering was cancelled: that wins over return_exceptions
  if cancel_requested then error(CancelledError(cancel_msg), 0) end
  return outcome
end

-- gather(aw, ..., [opts]) -> one value per awaitable;
-- gather({aw, ...}, [opts]) -> the list of those values (with .n).
function M.gather(...)
  local nargs = select("#", ...)
  local first = ...
  local args, n, opts, aslist
  if isplain(first) and (first[1] ~= nil or nargs == 2) then
    -- the list form: gather(list [, opts])
    if nargs > 2 then
      argerror("gather", 3, "no value expected after the list and options", 2)
    end
    aslist = true
    args, n = first, #first
    opts = select(2, ...)
    if opts ~= nil and not isplain(opts) then
      argerror("gather", 2, "options table expected, got " .. type(opts), 2)
    end
  else
    args = pack(...)
    n = args.n
    if n > 0 and isplain(args[n]) then
      opts = args[n]
      n = n - 1
    end
  end
  if opts ~= nil then
    checkkeys("gather", aslist and 2 or n + 1, opts,
              { return_exceptions = true }, 2)
  end
  local return_exceptions = opts ~= nil and opts.return_exceptions and true
    or false
  local loop = intask("gather", 2)
  for i = 1, n do
    if aslist then
      checkaw("gather", 1, i, args[i], loop, true, 2)
    else
      checkaw("gather", i, nil, args[i], loop, true, 2)
    end
  end
  if n == 0 then
    if aslist then return { n = 0 } end
    return
  end
  local results = gather_impl(loop, args, n, return_exceptions)
  if aslist then return results end
  return unpack(results, 1, n)
end


---------------------------------------------------------------- wait

M.FIRST_COMPLETED = "FIRST_COMPLETED"
M.FIRST_EXCEPTION = "FIRST_EXCEPTION"
M.ALL_COMPLETED = "ALL_COMPLETED"

local RETURN_WHEN = {
  FIRST_COMPLETED = true, FIRST_EXCEPTION = true, ALL_COMPLETED = true,
}

-- wait(list, [{timeout =, return_when =}]) -> done, pending (lists, in
-- input order). Does not cancel anything on timeout.
function M.wait(fs, opts)
  if opts ~= nil and not isplain(opts) then
    argerror("wait", 2, "options table expected, got " .. type(opts), 2)
  end
  opts = opts or {}
  checkkeys("wait", 2, opts, { timeout = true, return_when = true }, 2)
  local timeout = checkdelay("wait", 2, "timeout", opts.timeout, 2)
  local return_when = opts.return_when
  if return_when == nil then return_when = "ALL_COMPLETED" end
  if not RETURN_WHEN[return_when] then
    argerror("wait", 2, "invalid return_when value: " .. tostring(return_when), 2)
  end
  local loop = intask("wait", 2)
  if isplain(fs) then
    for i = 1, #fs do
      if type(fs[i]) == "function" then
        argerror("wait", 1, "item " .. i .. " is a function: passing functions "
          .. "is forbidden, make tasks explicitly", 2)
      end
    end
  end
  local list, n = uniq_list("wait", fs, loop, false, 2)
  if n == 0 then argerror("wait", 1, "the list of futures is empty", 2) end

  -- asyncio's _wait
  local waiter = loop:create_future()
  local handle
  if timeout ~= nil then handle = loop:call_later(timeout, release, waiter) end
  local counter = n
  local function on_completion(f)
    counter = counter - 1
    if counter <= 0 or return_when == "FIRST_COMPLETED"
       or (return_when == "FIRST_EXCEPTION" and not f:cancelled()
           and f:exception() ~= nil) then
      if handle ~= nil then handle:cancel() end
      release(waiter)
    end
  end
  for i = 1, n do list[i]:add_done_callback(on_completion) end
  local ok, e = pcall(await, waiter)
  if handle ~= nil then handle:cancel() end
  for i = 1, n do list[i]:remove_done_callback(on_completion) end
  if not ok then error(e, 0) end

  local done, pending, nd, np = {}, {}, 0, 0
  for i = 1, n do
    local f = list[i]
    if f:done() then
      nd = nd + 1
      done[nd] = f
    else
      np = np + 1
      pending[np] = f
    end
  end
  return done, pending
end


---------------------------------------------------------------- as_completed

local TIMED_OUT = setmetatable({}, { __name = "loom.as_completed.timeout" })

-- as_completed(list, [{timeout =}]) -> an iterator for a generic for; each
-- step awaits the next future to complete and returns it. When the timeout
-- expires first, the step raises TimeoutError. The fourth value closes the
-- iteration (timer and callbacks) when the loop is left early.
function M.as_completed(fs, opts)
  if opts ~= nil and not isplain(opts) then
    argerror("as_completed", 2, "options table expected, got " .. type(opts), 2)
  end
  if opts ~= nil then checkkeys("as_completed", 2, opts, { timeout = true }, 2) end
  local timeout = checkdelay("as_completed", 2, "timeout",
    opts and opts.timeout, 2)
  local loop = intask("as_completed", 2)
  local list, n = uniq_list("as_completed", fs, loop, true, 2)
  for i = 1, n do list[i] = ensure(list[i], loop) end

  local todo, ntodo = {}, n          -- the futures not yet completed
  local queue, qhead, qtail = {}, 1, 0
  local waiter, handle
  local left = n                     -- steps still to return a value

  local function put(x)
    qtail = qtail + 1
    queue[qtail] = x
    if waiter ~= nil then release(waiter) end
  end

  local function on_completion(f)
    if ntodo == 0 then return end  -- the timeout came first
    todo[f] = nil
    ntodo = ntodo - 1
    put(f)
    if ntodo == 0 and handle ~= nil then handle:cancel() end
  end

  local function on_timeout()
    for i = 1, n do
      local f = list[i]
      if todo[f] then
        f:remove_done_callback(on_completion)
        put(TIMED_OUT)
      end
    end
    todo, ntodo = {}, 0
  end

  for i = 1, n do
    todo[list[i]] = true
    list[i]:add_done_callback(on_completion)
  end
  if n > 0 and timeout ~= nil then
    handle = loop:call_later(timeout, on_timeout)
  end

  local function step()
    if left == 0 then return nil end
    while qhead > qtail do
      waiter = loop:create_future()
      await(waiter)
      waiter = nil
    end
    local f = queue[qhead]
    queue[qhead] = nil
    qhead = qhead + 1
    left = left - 1
    if f == TIMED_OUT then error(TimeoutError(), 0) end
    return f
  end

  local closer = setmetatable({}, { __close = function()
    if handle ~= nil then handle:cancel() end
    for i = 1, n do
      local f = list[i]
      if todo[f] then f:remove_done_callback(on_completion) end
    end
    todo, ntodo = {}, 0
  end })
  return step, nil, nil, closer
end


---------------------------------------------------------------- shield

-- shield(aw) -> aw's results. Cancelling the caller raises CancelledError
-- in it, but aw goes on (asyncio's shield, awaited).
function M.shield(aw)
  local loop = intask("shield", 2)
  checkaw("shield", 1, nil, aw, loop, true, 2)
  local inner = ensure(aw, loop)
  if inner:done() then return await(inner) end
  local outer = loop:create_future()

  local function inner_done(f)
    if outer:cancelled() then
      if not f:cancelled() then f:exception() end  -- mark it retrieved
      return
    end
    if f:cancelled() then
      outer:cancel()
    else
      local e = f:exception()
      if e ~= nil then outer:set_exception(e) else outer:set_result(f:result()) end
    end
  end

  local function outer_done()
    if not inner:done() then inner:remove_done_callback(inner_done) end
  end

  inner:add_done_callback(inner_done)
  outer:add_done_callback(outer_done)
  return await(outer)
end


---------------------------------------------------------------- Timeout

-- A deadline over a part of the current task (asyncio's Timeout). States:
-- "active" (entered), "expiring" (the deadline passed and cancelled the
-- task), "expired" and "finished" (left, with and without expiry).
local Timeout = {}
Timeout.__index = Timeout
Timeout.__name = "loom.Timeout"

function Timeout:__tostring()
  local s = self._state
  if s == "active" and self._when ~= nil then
    return ("<Timeout [active] when=%g>"):format(self._when)
  end
  return ("<Timeout [%s]>"):format(s)
end

-- asyncio's _on_timeout: the deadline came while the scope was active.
local function on_timeout(self)
  self._task:cancel()
  self._state = "expiring"
  self._handle = nil
end

-- Raises the bad-self error of method fname at the caller's line.
local function checktimeout(self, fname)
  if getmetatable(self) ~= Timeout then
    error(("bad argument #1 to '%s' (loom.Timeout expected, got %s)")
      :format(fname, typename(self)), 3)
  end
end

-- t:when() -> the deadline (loop time), or nil for none.
function Timeout:when()
  checktimeout(self, "when")
  return self._when
end

-- t:expired() -> whether the deadline passed while the scope was active.
function Timeout:expired()
  checktimeout(self, "expired")
  local s = self._state
  return s == "expiring" or s == "expired"
end

local function reschedule(self, when)
  self._when = when
  if self._handle ~= nil then self._handle:cancel() end
  if when == nil then
    self._handle = nil
  else
    local loop = self._loop
    if when <= loop:time() then
      self._handle = loop:call_soon(on_timeout, self)
    else
      self._handle = loop:call_at(when, on_timeout, self)
    end
  end
end

-- t:reschedule(when): a new deadline (loop time; nil for none), while the
-- scope is active and has not expired.
function Timeout:reschedule(when)
  checktimeout(self, "reschedule")
  checkwhen("reschedule", 1, when, 2)
  if self._state ~= "active" then
    error(("reschedule: cannot change the deadline of a%s Timeout")
      :format(self._state == "expiring" and "n expiring" or " " .. self._state),
      2)
  end
  reschedule(self, when)
end

-- asyncio's __aexit__: converts the CancelledError its own expiry caused
-- into TimeoutError (raised from __close, it replaces the error in flight)
-- unless a new cancel request came meanwhile.
function Timeout:__close(err)
  local s = self._state
  if s ~= "active" and s ~= "expiring" then return end
  if self._handle ~= nil then
    self._handle:cancel()
    self._handle = nil
  end
  if s == "expiring" then
    self._state = "expired"
    if self._task:uncancel() <= self._cancelling and err ~= nil
       and CancelledError:is(err) then
      error(TimeoutError(), 0)
    end
  else
    self._state = "finished"
  end
end

-- Makes and enters a scope with the deadline when (asyncio's timeout()
-- plus __aenter__).
local function enter_timeout(loop, task, when)
  local self = setmetatable({
    _loop = loop,
    _task = task,
    _state = "active",
    _when = when,
    _cancelling = task:cancelling(),
  }, Timeout)
  reschedule(self, when)
  return self
end

-- Runs fn(...) with the scope as a to-be-closed variable: the results, or
-- the error (TimeoutError when the scope expired).
local function run_scoped(scope, fn, ...)
  local s <close> = scope
  return fn(...)
end

-- timeout(delay [, fn, ...]): with fn, fn(...)'s results under the
-- deadline; without, the scope for `local t <close> = loom.timeout(d)`.
function M.timeout(delay, ...)
  checkdelay("timeout", 1, "delay", delay, 2)
  local fn = ...
  if fn ~= nil and not iscallable(fn) then
    argerror("timeout", 2, "function expected, got " .. type(fn), 2)
  end
  local loop, task = intask("timeout", 2)
  local scope = enter_timeout(loop, task, delay and loop:time() + delay)
  if fn == nil then return scope end
  return run_scoped(scope, ...)
end

-- timeout_at(when [, fn, ...]): the same with an absolute loop time.
function M.timeout_at(when, ...)
  checkwhen("timeout_at", 1, when, 2)
  local fn = ...
  if fn ~= nil and not iscallable(fn) then
    argerror("timeout_at", 2, "function expected, got " .. type(fn), 2)
  end
  local loop, task = intask("timeout_at", 2)
  local scope = enter_timeout(loop, task, when)
  if fn == nil then return scope end
  return run_scoped(scope, ...)
end


---------------------------------------------------------------- wait_for

-- asyncio's _cancel_and_wait: cancels fut and waits until it is done,
-- without awaiting fut itself (so the wait stays cancellable).
local function cancel_and_wait(loop, fut)
  local waiter = loop:create_future()
  local function cb() release(waiter) end
  fut:add_done_callback(cb)
  fut:cancel()
  local ok, e = pcall(await, waiter)
  fut:remove_done_callback(cb)
  if not ok then error(e, 0) end
end

-- wait_for(aw, timeout) -> aw's results; on expiry aw is cancelled, waited
-- for, and TimeoutError raised. As in asyncio 3.12 it is a timeout scope
-- around awaiting aw; a function runs inline in the current task, as a
-- coroutine would (a task when timeout <= 0).
function M.wait_for(aw, timeout)
  checkdelay("wait_for", 2, "timeout", timeout, 2)
  local loop, task = intask("wait_for", 2)
  checkaw("wait_for", 1, nil, aw, loop, true, 2)
  if timeout ~= nil and timeout <= 0 then
    local fut = ensure(aw, loop)
    if fut:done() then return fut:result() end
    cancel_and_wait(loop, fut)
    local res = pack(pcall(fut.result, fut))
    if res[1] then return unpack(res, 2, res.n) end
    if CancelledError:is(res[2]) then error(TimeoutError(), 0) end
    error(res[2], 0)
  end
  local scope = enter_timeout(loop, task, timeout and loop:time() + timeout)
  if type(aw) == "function" then return run_scoped(scope, aw) end
  return run_scoped(scope, await, aw)
end


---------------------------------------------------------------- TaskGroup

-- A group of child tasks bound to the task that made it (the parent), as
-- asyncio's TaskGroup. Children are kept in creation order (a list with
-- holes, compacted as it empties) so cancellation order is predictable.
local TaskGroup = {}
TaskGroup.__index = TaskGroup
TaskGroup.__name = "loom.TaskGroup"

function TaskGroup:__tostring()
  local info = ""
  if self._ntasks > 0 then info = info .. " tasks=" .. self._ntasks end
  if #self._errors > 0 then info = info .. " errors=" .. #self._errors end
  if self._aborting then
    info = info .. " cancelling"
  elseif not self._exiting then
    info = info .. " entered"
  end
  return "<TaskGroup" .. info .. ">"
end

local function add_task(self, t)
  local n = self._len + 1
  self._len = n
  self._tasks[n] = t
  self._slot[t] = n
  self._ntasks = self._ntasks + 1
end

local function discard_task(self, t)
  local i = self._slot[t]
  if i == nil then return end
  local list = self._tasks
  self._slot[t] = nil
  list[i] = false
  self._ntasks = self._ntasks - 1
  local len = self._len
  if len > 32 and self._ntasks * 2 < len then
    local slot, j = self._slot, 0
    for k = 1, len do
      local x = list[k]
      if x then
        j = j + 1
        list[j] = x
        slot[x] = j
      end
    end
    for k = j + 1, len do list[k] = nil end
    self._len = j
  end
end

-- asyncio's _abort: cancel every child still running.
local function abort(self)
  self._aborting = true
  local list = self._tasks
  for i = 1, self._len do
    local t = list[i]
    if t and not t:done() then t:cancel() end
  end
end

-- asyncio's _on_task_done.
local function on_task_done(self, t)
  discard_task(self, t)
  local fut = self._on_completed
  if fut ~= nil and self._ntasks == 0 and not fut:done() then
    fut:set_result(true)
  end
  if t:cancelled() then return end
  local e = t:exception()
  if e == nil then return end
  local errs = self._errors
  errs[#errs + 1] = e
  local parent = self._parent
  if parent:done() then
    self._loop:call_exception_handler {
      message = ("Task %s has errored out but its parent task %s is "
        .. "already completed"):format(tostring(t), tostring(parent)),
      exception = e,
      task = t,
    }
    return
  end
  if not self._aborting and not self._parent_cancel_requested then
    -- cancel the body too; __close takes the request back (uncancel)
    abort(self)
    self._parent_cancel_requested = true
    parent:cancel()
  end
end

local function new_group(fname, level)
  local loop, task = intask(fname, level + 1)
  local self = setmetatable({
    _loop = loop,
    _parent = task,
    _exiting = false,
    _aborting = false,
    _parent_cancel_requested = false,
    _tasks = {}, _slot = {}, _len = 0, _ntasks = 0,
    _errors = {},
    _on_completed = nil,
  }, TaskGroup)
  self._on_done = function(t) on_task_done(self, t) end
  return self
end

-- tg:create_task(fn, ...) -> a child task running fn(...).
function TaskGroup:create_task(fn, ...)
  if getmetatable(self) ~= TaskGroup then
    error("calling 'create_task' on bad self (loom.TaskGroup expected, got "
      .. type(self) .. ")", 2)
  end
  if not iscallable(fn) then
    argerror("create_task", 1, "function expected, got " .. type(fn), 2)
  end
  if self._exiting and self._ntasks == 0 then
    error("create_task: TaskGroup is finished", 2)
  end
  if self._aborting then
    error("create_task: TaskGroup is shutting down", 2)
  end
  local t = self._loop:create_task(fn, ...)
  if t:done() then
    on_task_done(self, t)
  else
    add_task(self, t)
    t:add_done_callback(self._on_done)
  end
  return t
end

-- asyncio's __aexit__ (3.12): waits for every child; raises the parent's
-- own cancellation, or ExceptionGroup of the children's errors (and the
-- body's, unless it is a CancelledError).
function TaskGroup:__close(err)
  if self._exiting then return end
  self._exiting = true
  local loop, parent = self._loop, self._parent
  local failed = err ~= nil
  local propagate = nil
  if failed and CancelledError:is(err) then propagate = err end
  if failed and not self._aborting then
    -- the parent is being cancelled, or the body raised
    abort(self)
  end
  -- a loop: the wait can be cancelled again and again
  while self._ntasks > 0 do
    if self._on_completed == nil then
      self._on_completed = loop:create_future()
    end
    local ok, e = pcall(await, self._on_completed)
    if not ok then
      if not CancelledError:is(e) then error(e, 0) end
      if not self._aborting then
        -- the parent was cancelled while its children ran on
        propagate = e
        abort(self)
      end
    end
    self._on_completed = nil
  end
  if self._parent_cancel_requested then
    -- the group cancelled the parent: take that request back
    if parent:uncancel() == 0 then propagate = nil end
  end
  local errs = self._errors
  if propagate ~= nil and #errs == 0 then error(propagate, 0) end
  if failed and not CancelledError:is(err) then errs[#errs + 1] = err end
  if #errs > 0 then
    if parent:cancelling() > 0 then
      -- cancelled from outside as well: keep the count stable and the
      -- request pending
      parent:uncancel()
      parent:cancel()
    end
    error(ExceptionGroup("unhandled errors in a TaskGroup", errs), 0)
  end
end

-- TaskGroup() -> a group whose parent is the current task, for
-- `local tg <close> = loom.TaskGroup()`.
function M.TaskGroup()
  local tg = new_group("TaskGroup", 2)
  return tg
end

-- task_group(fn, ...) -> fn(tg, ...)'s results, once every child is done.
function M.task_group(fn, ...)
  if not iscallable(fn) then
    argerror("task_group", 1, "function expected, got " .. type(fn), 2)
  end
  local tg <close> = new_group("task_group", 2)
  return fn(tg, ...)
end

return M
