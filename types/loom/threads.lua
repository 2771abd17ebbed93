---@meta _

-- Threads, worker pools and channels (docs/threads.md). Values cross
-- threads as copies, functions as bytecode.

---`loom.thread`: OS threads with a loop of their own.
---@class loom.thread
local thread = {}

---Starts an OS thread with a new Lua state running `fn(...)` (copied) as
---the main task of a new loop.
---@param fn fun(...: any): ...
---@param ... any copied to the thread
---@return loom.Thread
function thread.start(fn, ...) end

---The number of CPUs the process may use.
---@return integer
function thread.cpu_count() end

---A thread started by `loom.thread.start`.
---@class loom.Thread
local Thread = {}

---`fn`'s results (copies), or raises its error. Inside a task it
---awaits; outside any running loop it blocks.
---@async
---@return any ...
function Thread:join() end

---Whether `fn` has not finished.
---@return boolean
function Thread:is_alive() end

---The traceback of the error the main task raised, or `nil`.
---@return string|nil
function Thread:traceback() end

---A pool of worker threads.
---@class loom.ThreadPoolExecutor
local ThreadPoolExecutor = {}

---Queues `fn(...)`; returns its concurrent future.
---@param fn fun(...: any): ...
---@param ... any copied to the worker
---@return loom.ConcurrentFuture
function ThreadPoolExecutor:submit(fn, ...) end

---No new jobs; with `wait` (default `true`) waits for the running jobs
---and joins the threads. `<close>` is `shutdown(true)`.
---@async
---@param wait? boolean
---@param opts? {cancel_futures?: boolean}
function ThreadPoolExecutor:shutdown(wait, opts) end

---The outcome of work done in another thread, shared between threads.
---@class loom.ConcurrentFuture
local ConcurrentFuture = {}

---The results; raises the error or `CancelledError`. Not done: outside a
---running loop it blocks (at most `timeout` seconds); inside one it
---raises (await it instead).
---@param timeout? number
---@return any ...
function ConcurrentFuture:result(timeout) end

---The error, or `nil`; waits as `result` does.
---@param timeout? number
---@return any
function ConcurrentFuture:exception(timeout) end

---Awaits it inside a task and returns the results.
---@async
---@return any ...
function ConcurrentFuture:await() end

---@return boolean
function ConcurrentFuture:done() end

---@return boolean
function ConcurrentFuture:cancelled() end

---@return boolean
function ConcurrentFuture:running() end

---Cancels it (a running job is interrupted); whether it was pending.
---@return boolean
function ConcurrentFuture:cancel() end

---The traceback of the error, taken where it was raised.
---@return string|nil
function ConcurrentFuture:traceback() end

---A channel carrying copies of values between threads. `<close>` closes
---it.
---@class loom.Channel
local Channel = {}

---Copies `v` (not `nil`) into the channel, waiting for room at capacity
---(inside a task it awaits, outside any loop it blocks).
---@async
---@param v any
function Channel:send(v) end

---The oldest value, waiting as `send` does; `nil` once the channel is
---closed and empty.
---@async
---@return any
function Channel:recv() end

---No more sends; values already in are still received.
function Channel:close() end

---@return boolean
function Channel:is_closed() end

---@return integer
function Channel:qsize() end

---A loop as another thread sees it (a `loom.Loop` copied to it).
---@class loom.RemoteLoop
local RemoteLoop = {}

---`fn(...)` (copied) runs as a callback on the loop.
---@param fn fun(...: any)
---@param ... any copied to the loop's thread
function RemoteLoop:call_soon_threadsafe(fn, ...) end

---@return boolean
function RemoteLoop:is_closed() end
