-- loom.sync: the synchronisation primitives, after asyncio's locks.py:
-- Lock, Event, Condition, Semaphore, BoundedSemaphore and Barrier.
--
-- Each primitive keeps its waiters in a FIFO of nodes {future, prev,
-- next}, one future per waiting task, as asyncio keeps a deque of
-- futures. A waiter removes its own node when its await ends, however it
-- ends; a node whose future is done (woken, or cancelled) stays in the
-- FIFO until then, which is what the fairness rules below look at.
--
-- A primitive is bound to a loop lazily, as in asyncio 3.10+: the first
-- time it has to make a future it takes the running loop, and a later use
-- from another loop is an error. The paths that do not wait (taking a
-- free lock or unit, releasing, setting an event) bind nothing, and taking
-- a free lock or unit allocates nothing.
--
-- Scopes: hold() acquires and returns a to-be-closed guard that releases
-- (`local _ <close> = lock:hold()`); with(fn, ...) acquires, runs fn and
-- releases however fn ends.

local core = require "loom.core"
local util = require "loom.util"
local typename, callable = util.typename, util.callable
local errors = require "loom.errors"

local getmetatable, setmetatable, type, pcall, error, rawget, tostring =
  getmetatable, setmetatable, type, pcall, error, rawget, tostring
local format = string.format
local tointeger = math.tointeger

local await = core.await
local running_loop = core._get_running_loop
local current_task = core.current_task
local CancelledError = errors.CancelledError
local BrokenBarrierError = errors.BrokenBarrierError

local M = {}


---------------------------------------------------------------- helpers

-- Raises "bad argument #i to 'fname' (msg)" at the caller of the function
-- that calls argerror (level 3 from here).
local function argerror(i, fname, msg)
  error(format("bad argument #%d to '%s' (%s)", i, fname, msg), 3)
end

-- Raises the bad-self error of a method; same level rule as argerror.
local function badself(fname, v, cls)
  error(format("bad argument #1 to '%s' (%s expected, got %s)", fname,
    cls.__name, typename(v)), 3)
end


-- A class: the metatable of its instances, which holds the methods, and
-- the public constructor, a table called like a class whose fields are the
-- methods (so that Lock.acquire(x) checks x as lock:acquire() does).
local function class(name, new)
  local cls = { __name = "loom." .. name }
  cls.__index = cls
  local ctor = setmetatable({}, {
    __call = new,
    __index = cls,
    __name = "loom." .. name,
    __tostring = function() return "loom." .. name end,
  })
  return cls, ctor
end

-- The loop of the primitive self, for making a waiter's future: the
-- running loop, which self keeps from its first use on. Raises, at level
-- lvl counted from here, when no loop runs, when self belongs to another
-- loop, or when no task runs (a plain callback cannot wait).
local function bind(self, fname, lvl)
  local loop = running_loop()
  if loop == nil then
    error(fname .. ": no running event loop", lvl)
  end
  local bound = self._loop
  if bound and bound ~= loop then
    error(format("%s: %s is bound to a different event loop", fname,
      tostring(self)), lvl)
  end
  if current_task(loop) == nil then
    error(fname .. ": not inside a task (a callback cannot wait)", lvl)
  end
  if not bound then self._loop = loop end
  return loop
end


---------------------------------------------------------------- the FIFO of waiters

-- Fields of a node. The FIFO is self._head, self._tail (false when
-- empty) and self._n, the number of nodes.
local FUT <const>, PREV <const>, NEXT <const> = 1, 2, 3

local function enqueue(self, fut)
  local tail = self._tail
  local node = { fut, tail, false }
  if tail then tail[NEXT] = node else self._head = node end
  self._tail = node
  self._n = self._n + 1
  return node
end

local function dequeue(self, node)
  local prev, nxt = node[PREV], node[NEXT]
  if prev then prev[NEXT] = nxt else self._head = nxt end
  if nxt then nxt[PREV] = prev else self._tail = prev end
  self._n = self._n - 1
end

-- Makes a future for the running task, queues it, awaits it and takes it
-- off the queue again. Returns the future, whether the await returned,
-- and the error it raised.
local function wait_in_line(self, fname, lvl)
  local fut = bind(self, fname, lvl + 1):create_future()
  local node = enqueue(self, fut)
  local ok, err = pcall(await, fut)
  dequeue(self, node)
  return fut, ok, err
end

-- Wakes (with value v) up to n waiters whose futures are not done yet, in
-- order; returns how many it woke.
local function wake(self, n, v)
  local woken, node = 0, self._head
  while node and woken < n do
    local fut = node[FUT]
    if not fut:done() then
      woken = woken + 1
      fut:set_result(v)
    end
    node = node[NEXT]
  end
  return woken
end

-- Whether every queued future is cancelled (true when none is queued).
local function all_cancelled(self)
  local node = self._head
  while node do
    if not node[FUT]:cancelled() then return false end
    node = node[NEXT]
  end
  return true
end

local function waiters_text(self)
  if self._n > 0 then return format(", waiters:%d", self._n) end
  return ""
end


---------------------------------------------------------------- scopes

-- hold() returns a guard, made once per primitive: closing it calls
-- release(primitive). The same guard serves every hold of the primitive
-- (a semaphore may be held several times at once), so holding allocates
-- nothing after the first time.
local Guard = { __name = "loom.sync.guard" }

function Guard.__close(g)
  return g[2](g[1], "release", 2)
end

local function guard(self, release)
  local g = self._guard
  if not g then
    g = setmetatable({ self, release }, Guard)
    self._guard = g
  end
  return g
end

-- Ends a with(): releases, then returns fn's results or raises its error
-- value unchanged.
local function finish(release, self, ok, ...)
  release(self, "release", 3)
  if ok then return ... end
  error((...), 0)
end


-- The class of each primitive, by instance: method self-checks look here
-- (one table read) rather than calling getmetatable.
local classof = setmetatable({}, { __mode = "k" })

local function make(t, cls)
  classof[t] = cls
  return setmetatable(t, cls)
end


---------------------------------------------------------------- Lock

local Lock, LockClass

local function new_lock()
  return make({ _locked = false, _n = 0, _head = false,
                        _tail = false, _loop = false }, Lock)
end

Lock, LockClass = class("Lock", function() return new_lock() end)

-- Acquires the lock for the running task (lvl: level of the user's call,
-- counted from here, for the errors of bind). Fair, as asyncio's: a free
-- lock is taken at once only when no live waiter is queued (cancelled
-- ones do not count); otherwise the task queues. release() wakes the first
-- waiter; a waiter cancelled after it was woken (its future done, the lock
-- still free) wakes the next, so that no wake-up is lost.
local function lock_acquire(self, fname, lvl)
  if not self._locked and (self._n == 0 or all_cancelled(self)) then
    self._locked = true
    return true
  end
  local _, ok, err = wait_in_line(self, fname, lvl + 1)
  if not ok then
    if not self._locked and CancelledError:is(err) then
      -- Keep the invariant: a free lock with waiters has its first
      -- waiter woken.
      local head = self._head
      if head and not head[FUT]:done() then head[FUT]:set_result(true) end
    end
    error(err, 0)
  end
  self._locked = true
  return true
end

local function lock_release(self, fname, lvl)
  if not self._locked then
    error(fname .. ": Lock is not acquired", lvl)
  end
  self._locked = false
  local head = self._head
  if head and not head[FUT]:done() then head[FUT]:set_result(true) end
end

-- lock:acquire() -> true: suspends the running task until it holds the
-- lock.
function Lock:acquire()
  if classof[self] ~= Lock then badself("acquire", self, Lock) end
  if not self._locked and self._n == 0 then  -- the free, uncontended case
    self._locked = true
    return true
  end
  return lock_acquire(self, "acquire", 2)
end

-- lock:release(): frees the lock and wakes the first waiter; an error
-- when the lock is not locked.
function Lock:release()
  if classof[self] ~= Lock then badself("release", self, Lock) end
  if self._locked and not self._head then  -- nobody waits
    self._locked = false
    return
  end
  lock_release(self, "release", 3)
end

function Lock:locked()
  if classof[self] ~= Lock then badself("locked", self, Lock) end
  return self._locked
end

-- local _ <close> = lock:hold(): acquires, and releases at scope exit.
function Lock:hold()
  if classof[self] ~= Lock then badself("hold", self, Lock) end
  lock_acquire(self, "hold", 3)
  return guard(self, lock_release)
end

-- lock:with(fn, ...): fn(...) while holding the lock; returns its results.
function Lock:with(fn, ...)
  if classof[self] ~= Lock then badself("with", self, Lock) end
  if not callable(fn) then
    argerror(1, "with", "function expected, got " .. typename(fn))
  end
  lock_acquire(self, "with", 3)
  return finish(lock_release, self, pcall(fn, ...))
end

function Lock:__tostring()
  return format("<loom.Lock %p [%s%s]>", self,
    self._locked and "locked" or "unlocked", waiters_text(self))
end

M.Lock = LockClass


---------------------------------------------------------------- Event

local Event, EventClass
Event, EventClass = class("Event", function()
  return make({ _value = false, _n = 0, _head = false,
                        _tail = false, _loop = false }, Event)
end)

-- event:set(): sets the flag and wakes every waiter.
function Event:set()
  if classof[self] ~= Event then badself("set", self, Event) end
  if not self._value then
    self._value = true
    wake(self, self._n, true)
  end
end

-- event:clear(): clears the flag; later wait() calls suspend again.
function Event:clear()
  if classof[self] ~= Event then badself("clear", self, Event) end
  self._value = false
end

function Event:is_set()
  if classof[self] ~= Event then badself("is_set", self, Event) end
  return self._value
end

-- event:wait() -> true: returns at once when the flag is set, else
-- suspends the running task until set() is called.
function Event:wait()
  if classof[self] ~= Event then badself("wait", self, Event) end
  if self._value then return true end
  local _, ok, err = wait_in_line(self, "wait", 3)
  if not ok then error(err, 0) end
  return true
end

function Event:__tostring()
  return format("<loom.Event %p [%s%s]>", self,
    self._value and "set" or "unset", waiters_text(self))
end

M.Event = EventClass


---------------------------------------------------------------- Condition

local Condition, ConditionClass

-- Wakes up to n waiters of the condition (no lock check).
local function notify(self, n)
  wake(self, n, false)
end

-- Releases the lock, waits to be notified, then takes the lock again, also
-- when cancelled (asyncio's rule): a CancelledError raised while
-- re-acquiring is kept and the acquire retried; the last one is raised
-- once the lock is held. Any error leaving wait() passes the notification
-- on to another waiter (a spurious wake-up rather than a lost one).
local function cond_wait(self, fname, lvl)
  local lock = self._lock
  if not lock._locked then
    error(fname .. ": cannot wait on un-acquired lock", lvl)
  end
  local fut = bind(self, fname, lvl + 1):create_future()
  lock_release(lock, fname, lvl + 1)
  local node = enqueue(self, fut)
  local ok, err = pcall(await, fut)
  dequeue(self, node)
  while true do
    local aok, aerr = pcall(lock_acquire, lock, fname, lvl + 1)
    if aok then break end
    if not CancelledError:is(aerr) then
      notify(self, 1)
      error(aerr, 0)
    end
    ok, err = false, aerr
  end
  if not ok then
    notify(self, 1)
    error(err, 0)
  end
  return true
end

Condition, ConditionClass = class("Condition", function(_, lock)
  if lock == nil then
    lock = new_lock()
  elseif classof[lock] ~= Lock then
    error(format("bad argument #1 to 'Condition' (loom.Lock expected, got %s)",
      typename(lock)), 2)
  end
  return make({ _lock = lock, _n = 0, _head = false, _tail = false,
                        _loop = false }, Condition)
end)

function Condition:acquire()
  if classof[self] ~= Condition then badself("acquire", self, Condition) end
  return lock_acquire(self._lock, "acquire", 2)
end

function Condition:release()
  if classof[self] ~= Condition then badself("release", self, Condition) end
  return lock_release(self._lock, "release", 2)
end

function Condition:locked()
  if classof[self] ~= Condition then badself("locked", self, Condition) end
  return self._lock._locked
end

-- cond:wait() -> true: see cond_wait.
function Condition:wait()
  if classof[self] ~= Condition then badself("wait", self, Condition) end
  return cond_wait(self, "wait", 2)
end

-- cond:wait_for(predicate): waits until predicate() is true; returns its
-- value. The predicate is called first, so a true one needs no lock.
function Condition:wait_for(predicate)
  if classof[self] ~= Condition then badself("wait_for", self, Condition) end
  if not callable(predicate) then
    argerror(1, "wait_for", "function expected, got " .. typename(predicate))
  end
  local result = predicate()
  while not result do
    cond_wait(self, "wait_for", 3)
    result = predicate()
  end
  return result
end

-- cond:notify([n=1]): wakes up to n waiters; the caller must hold the lock.
function Condition:notify(n)
  if classof[self] ~= Condition then badself("notify", self, Condition) end
  if n == nil then
    n = 1
  elseif type(n) ~= "number" or n ~= n then
    argerror(1, "notify", "number expected, got " ..
      (n ~= n and "NaN" or typename(n)))
  end
  if not self._lock._locked then
    error("notify: cannot notify on un-acquired lock", 2)
  end
  notify(self, n)
end

-- cond:notify_all(): wakes every waiter; the caller must hold the lock.
function Condition:notify_all()
  if classof[self] ~= Condition then badself("notify_all", self, Condition) end
  if not self._lock._locked then
    error("notify_all: cannot notify on un-acquired lock", 2)
  end
  notify(self, self._n)
end

function Condition:hold()
  if classof[self] ~= Condition then badself("hold", self, Condition) end
  local lock = self._lock
  lock_acquire(lock, "hold", 3)
  return guard(lock, lock_release)
end

function Condition:with(fn, ...)
  if classof[self] ~= Condition then badself("with", self, Condition) end
  if not callable(fn) then
    argerror(1, "with", "function expected, got " .. typename(fn))
  end
  local lock = self._lock
  lock_acquire(lock, "with", 3)
  return finish(lock_release, lock, pcall(fn, ...))
end

function Condition:__tostring()
  return format("<loom.Condition %p [%s%s]>", self,
    self._lock._locked and "locked" or "unlocked", waiters_text(self))
end

M.Condition = ConditionClass


---------------------------------------------------------------- Semaphore

local Semaphore, SemaphoreClass
local Bounded, BoundedClass

local function check_sem(self, fname)
  local mt = classof[self]
  if mt ~= Semaphore and mt ~= Bounded then
    error(format("bad argument #1 to '%s' (loom.Semaphore expected, got %s)",
      fname, typename(self)), 3)
  end
end

-- Whether acquire() would have to wait: no unit left, or a live waiter
-- queued ahead (FIFO: a newcomer does not pass it).
local function sem_locked(self)
  return self._value == 0 or not all_cancelled(self)
end

-- Hands a unit to the first waiter whose future is not done yet (the
-- unit is taken off the value now, on its behalf); false when none.
local function wake_next(self)
  local node = self._head
  while node do
    local fut = node[FUT]
    if not fut:done() then
      self._value = self._value - 1
      fut:set_result(true)
      return true
    end
    node = node[NEXT]
  end
  return false
end

-- asyncio 3.12's acquire: FIFO, and safe against cancellation. A waiter
-- cancelled after release() handed it a unit gives the unit back; on the
-- way out, every waiter (this one cancelled or not) wakes as many queued
-- tasks as there are units, since newcomers may have queued behind it.
local function sem_acquire(self, fname, lvl)
  local value = self._value
  if value > 0 and (self._n == 0 or all_cancelled(self)) then
    self._value = value - 1
    return true
  end
  local fut, ok, err = wait_in_line(self, fname, lvl + 1)
  if not ok and CancelledError:is(err) and fut:done()
     and not fut:cancelled() then
    self._value = self._value + 1  -- the unit it was handed goes back
  end
  while self._value > 0 do
    if not wake_next(self) then break end
  end
  if not ok then error(err, 0) end
  return true
end

local function sem_release(self)
  self._value = self._value + 1
  wake_next(self)
end

local function bounded_release(self, fname, lvl)
  if self._value >= self._bound then
    error(fname .. ": BoundedSemaphore released too many times", lvl)
  end
  self._value = self._value + 1
  wake_next(self)
end

local function check_value(value, fname)
  if value == nil then return 1 end
  if type(value) ~= "number" then
    error(format("bad argument #1 to '%s' (number expected, got %s)", fname,
      typename(value)), 3)
  end
  local n = tointeger(value)
  if n == nil then
    error(format("bad argument #1 to '%s' (number has no integer representation)",
      fname), 3)
  end
  if n < 0 then
    error(format("bad argument #1 to '%s' (value must be >= 0)", fname), 3)
  end
  return n
end

Semaphore, SemaphoreClass = class("Semaphore", function(_, value)
  value = check_value(value, "Semaphore")
  return make({ _value = value, _n = 0, _head = false,
                        _tail = false, _loop = false }, Semaphore)
end)

Bounded, BoundedClass = class("BoundedSemaphore", function(_, value)
  value = check_value(value, "BoundedSemaphore")
  return make({ _value = value, _bound = value, _n = 0,
                        _head = false, _tail = false, _loop = false }, Bounded)
end)

-- sem:acquire() -> true: takes a unit, suspending the running task while
-- none is free or others wait ahead of it.
function Semaphore:acquire()
  check_sem(self, "acquire")
  return sem_acquire(self, "acquire", 2)
end

-- sem:release(): gives a unit back and wakes the first waiter.
function Semaphore:release()
  check_sem(self, "release")
  return sem_release(self)
end

-- sem:locked(): whether acquire() would have to wait.
function Semaphore:locked()
  check_sem(self, "locked")
  return sem_locked(self)
end

function Semaphore:hold()
  check_sem(self, "hold")
  sem_acquire(self, "hold", 3)
  return guard(self, sem_release)
end

function Semaphore:with(fn, ...)
  check_sem(self, "with")
  if not callable(fn) then
    argerror(1, "with", "function expected, got " .. typename(fn))
  end
  sem_acquire(self, "with", 3)
  return finish(sem_release, self, pcall(fn, ...))
end

function Semaphore:__tostring()
  local state = sem_locked(self) and "locked"
    or format("unlocked, value:%d", self._value)
  return format("<%s %p [%s%s]>", getmetatable(self).__name, self, state,
    waiters_text(self))
end

for k, v in pairs(Semaphore) do
  if k ~= "__index" and k ~= "__name" then Bounded[k] = v end
end

-- bsem:release(): as Semaphore's; an error when it would take the value
-- above the initial one.
function Bounded:release()
  check_sem(self, "release")
  return bounded_release(self, "release", 2)
end

function Bounded:hold()
  check_sem(self, "hold")
  sem_acquire(self, "hold", 3)
  return guard(self, bounded_release)
end

function Bounded:with(fn, ...)
  check_sem(self, "with")
  if not callable(fn) then
    argerror(1, "with", "function expected, got " .. typename(fn))
  end
  sem_acquire(self, "with", 3)
  return finish(bounded_release, self, pcall(fn, ...))
end

M.Semaphore = SemaphoreClass
M.BoundedSemaphore = BoundedClass


---------------------------------------------------------------- Barrier

-- asyncio's Barrier, on a Condition. A barrier fills until `parties`
-- tasks wait; the last one to arrive switches it to draining and wakes
-- the others; it fills again once all of them have left. reset() makes
-- the waiting tasks raise BrokenBarrierError and the barrier fill again;
-- abort() breaks it for good (until reset()).
local FILLING <const>, DRAINING <const> = "filling", "draining"
local RESETTING <const>, BROKEN <const> = "resetting", "broken"

local Barrier, BarrierClass
Barrier, BarrierClass = class("Barrier", function(_, parties)
  if type(parties) ~= "number" then
    error(format("bad argument #1 to 'Barrier' (number expected, got %s)",
      typename(parties)), 2)
  end
  local n = tointeger(parties)
  if n == nil then
    error("bad argument #1 to 'Barrier' (number has no integer representation)", 2)
  end
  if n < 1 then
    error("bad argument #1 to 'Barrier' (parties must be >= 1)", 2)
  end
  local cond = make({ _lock = new_lock(), _n = 0, _head = false,
                              _tail = false, _loop = false }, Condition)
  return make({ _cond = cond, _parties = n, _state = FILLING,
                        _count = 0 }, Barrier)
end)

-- The tasks that arrive while the barrier drains or resets wait for it to
-- fill again; a broken barrier raises.
local function barrier_block(self)
  local cond = self._cond
  while self._state == DRAINING or self._state == RESETTING do
    cond_wait(cond, "wait", 1)
  end
  if self._state == BROKEN then
    error(BrokenBarrierError("Barrier aborted"), 0)
  end
end

-- The last party releases the others; the rest wait for that.
local function barrier_pass(self, index)
  local cond = self._cond
  if index + 1 == self._parties then
    self._state = DRAINING
    notify(cond, cond._n)
  else
    while self._state == FILLING do
      cond_wait(cond, "wait", 1)
    end
    if self._state == BROKEN or self._state == RESETTING then
      error(BrokenBarrierError("Abort or reset of barrier"), 0)
    end
  end
end

-- The last task to leave lets the barrier fill again.
local function barrier_exit(self)
  if self._count == 0 then
    if self._state == RESETTING or self._state == DRAINING then
      self._state = FILLING
    end
    local cond = self._cond
    notify(cond, cond._n)
  end
end

-- Runs with the condition's lock held.
local function barrier_wait(self)
  barrier_block(self)
  local index = self._count
  self._count = index + 1
  local ok, err = pcall(barrier_pass, self, index)
  self._count = self._count - 1
  barrier_exit(self)
  if not ok then error(err, 0) end
  return index
end

-- barrier:wait() -> index: suspends the running task until `parties`
-- tasks wait; each gets a different index, 0 .. parties-1, in order of
-- arrival. Raises BrokenBarrierError when the barrier is aborted or
-- reset meanwhile.
function Barrier:wait()
  if classof[self] ~= Barrier then badself("wait", self, Barrier) end
  local lock = self._cond._lock
  lock_acquire(lock, "wait", 3)
  return finish(lock_release, lock, pcall(barrier_wait, self))
end

-- barrier:reset(): back to the empty, filling state; the waiting tasks
-- raise BrokenBarrierError. May suspend briefly, like asyncio's coroutine.
function Barrier:reset()
  if classof[self] ~= Barrier then badself("reset", self, Barrier) end
  local cond = self._cond
  lock_acquire(cond._lock, "reset", 3)
  if self._count > 0 then
    self._state = RESETTING
  else
    self._state = FILLING
  end
  notify(cond, cond._n)
  lock_release(cond._lock, "reset", 2)
end

-- barrier:abort(): breaks the barrier: waiting tasks and later wait()
-- calls raise BrokenBarrierError until reset().
function Barrier:abort()
  if classof[self] ~= Barrier then badself("abort", self, Barrier) end
  local cond = self._cond
  lock_acquire(cond._lock, "abort", 3)
  self._state = BROKEN
  notify(cond, cond._n)
  lock_release(cond._lock, "abort", 2)
end

function Barrier:parties()
  if classof[self] ~= Barrier then badself("parties", self, Barrier) end
  return self._parties
end

-- The number of tasks waiting for the barrier to fill.
function Barrier:n_waiting()
  if classof[self] ~= Barrier then badself("n_waiting", self, Barrier) end
  if self._state == FILLING then return self._count end
  return 0
end

function Barrier:broken()
  if classof[self] ~= Barrier then badself("broken", self, Barrier) end
  return self._state == BROKEN
end

function Barrier:__tostring()
  local extra = self._state
  if extra ~= BROKEN then
    extra = format("%s, waiters:%d/%d", extra,
      self._state == FILLING and self._count or 0, self._parties)
  end
  return format("<loom.Barrier %p [%s]>", self, extra)
end

M.Barrier = BarrierClass

return M
