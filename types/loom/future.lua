---@meta _

-- Futures and tasks (docs/manual.md, docs/introspection.md).

---The outcome of an operation, completed once: results (any number of
---Lua values), an error value, or cancelled.
---@class loom.Future
local Future = {}

---The results; raises the error, `CancelledError` when cancelled, or
---`InvalidStateError` when pending.
---@return any ...
function Future:result() end

---The error, or `nil`; raises like `result()` when pending or cancelled.
---@return any
function Future:exception() end

---@return boolean
function Future:done() end

---@return boolean
function Future:cancelled() end

---Cancels a pending future; `false` when it is done.
---@param msg? any the message of the `CancelledError`
---@return boolean
function Future:cancel(msg) end

---Completes the future with the results `...`.
---@param ... any
function Future:set_result(...) end

---Completes the future with an error value (not `nil`).
---@param e any
function Future:set_exception(e) end

---`cb(fut)` runs in the next iteration after the future completes, in
---registration order.
---@param cb fun(fut: loom.Future)
function Future:add_done_callback(cb) end

---Removes every registration of `cb`; returns how many.
---@param cb function
---@return integer
function Future:remove_done_callback(cb) end

---@return loom.Loop
function Future:get_loop() end

---Suspends the running task until the future is done; returns its
---results or raises its error.
---@async
---@return any ...
function Future:await() end

---A Future driven by a coroutine running a function; its results are
---the function's return values.
---@class loom.Task: loom.Future
local Task = {}

---Asks the task to stop: its pending await raises `CancelledError`.
---`false` when it is done.
---@param msg? any
---@return boolean
function Task:cancel(msg) end

---The cancel requests not yet taken back with `uncancel()`.
---@return integer
function Task:cancelling() end

---Takes one cancel request back; returns the count left.
---@return integer
function Task:uncancel() end

---@return string
function Task:get_name() end

---@param name any made a string with `tostring`
function Task:set_name(name) end

---The task's coroutine while it is pending, `nil` once it is done.
---@return thread|nil
function Task:get_coro() end

---The Lua frames the task is suspended in, oldest first (at most
---`limit`, the newest).
---@param limit? integer
---@return loom.StackFrame[]
function Task:get_stack(limit) end

---Writes the task's frames (and, for a failed task, its error and
---traceback) on `file` (default `io.stderr`).
---@param limit? integer
---@param file? file*|{write: function}
function Task:print_stack(limit, file) end

---A frame of `task:get_stack()`.
---@class loom.StackFrame
---@field source string
---@field line integer
---@field name string the function's name, else `"function <file:line>"`
---@field what "Lua"|"main"

---A node of `loom.task_tree()`.
---@class loom.TaskNode
---@field task loom.Task
---@field id integer
---@field name string
---@field parent? integer the creator's id
---@field children loom.TaskNode[]
---@field started boolean
---@field current? true for the task running now
---@field awaiting? loom.Future the future or task it awaits
---@field awaiting_task? loom.TaskNode that task's node
---@field sleep_until? number the loop time its sleep ends
---@field sleeping? boolean after `sleep(0)` or a bare `coroutine.yield()`
---@field stack loom.StackFrame[]
---@field where? string `"file:line"` of its newest frame
---@field waiting string what it does, in words
