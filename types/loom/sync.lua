---@meta _

-- Synchronisation primitives (docs/sync.md). The constructors are called
-- like classes, and their fields are the methods: `loom.Lock()`,
-- `loom.Lock.acquire(lock)`.

---The guard `hold()` returns: closing it releases once.
---`local _ <close> = lock:hold()`.
---@class loom.sync.guard

---A mutual-exclusion lock, fair (FIFO), not owned by a task.
---@class loom.Lock
---@overload fun(): loom.Lock
local Lock = {}

---Takes the lock, suspending the running task while it is held;
---returns `true`.
---@async
---@return true
function Lock:acquire() end

---Frees the lock and wakes the first waiter; an error when not locked.
function Lock:release() end

---@return boolean
function Lock:locked() end

---Acquires now and returns a guard whose closing releases.
---@async
---@return loom.sync.guard
function Lock:hold() end

---Acquires, runs `fn(...)`, releases however it ends, and returns its
---results (or raises its error unchanged).
---@async
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return any ...
function Lock:with(fn, ...) end

---A flag that tasks can wait for.
---@class loom.Event
---@overload fun(): loom.Event
local Event = {}

---Sets the flag and wakes every waiting task.
function Event:set() end

---Clears the flag.
function Event:clear() end

---@return boolean
function Event:is_set() end

---Returns `true` once the flag is set, suspending the task until then.
---@async
---@return true
function Event:wait() end

---A condition variable on a Lock (its own, or `lock`).
---@class loom.Condition
---@overload fun(lock?: loom.Lock): loom.Condition
local Condition = {}

---@async
---@return true
function Condition:acquire() end

function Condition:release() end

---@return boolean
function Condition:locked() end

---Releases the lock, waits until notified, takes the lock again;
---returns `true`. An error when the lock is not held.
---@async
---@return true
function Condition:wait() end

---Waits until `predicate()` returns a true value, and returns it.
---@async
---@generic T
---@param predicate fun(): T
---@return T
function Condition:wait_for(predicate) end

---Wakes up to `n` waiters (default 1); the lock must be held.
---@param n? number
function Condition:notify(n) end

---Wakes every waiter; the lock must be held.
function Condition:notify_all() end

---@async
---@return loom.sync.guard
function Condition:hold() end

---@async
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return any ...
function Condition:with(fn, ...) end

---A counter of free units (FIFO for the waiters).
---@class loom.Semaphore
---@overload fun(value?: integer): loom.Semaphore
local Semaphore = {}

---Takes a unit, suspending the task while none is free; returns `true`.
---@async
---@return true
function Semaphore:acquire() end

---Gives a unit back and wakes the first waiter.
function Semaphore:release() end

---Whether `acquire()` would have to wait.
---@return boolean
function Semaphore:locked() end

---@async
---@return loom.sync.guard
function Semaphore:hold() end

---@async
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return any ...
function Semaphore:with(fn, ...) end

---A Semaphore whose `release` raises when it would go above the
---initial value.
---@class loom.BoundedSemaphore: loom.Semaphore
---@overload fun(value?: integer): loom.BoundedSemaphore

---Makes `parties` tasks wait until all of them have arrived.
---@class loom.Barrier
---@overload fun(parties: integer): loom.Barrier
local Barrier = {}

---Waits until `parties` tasks wait; returns the arrival index, 0 up to
---`parties - 1`. Raises `BrokenBarrierError` when the barrier is broken.
---@async
---@return integer
function Barrier:wait() end

---Back to the empty state; waiting tasks raise `BrokenBarrierError`.
---@async
function Barrier:reset() end

---Breaks the barrier: waiting tasks and later `wait()`s raise
---`BrokenBarrierError`, until `reset()`.
---@async
function Barrier:abort() end

---@return integer
function Barrier:parties() end

---@return integer
function Barrier:n_waiting() end

---@return boolean
function Barrier:broken() end
