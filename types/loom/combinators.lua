---@meta _

-- Timeout scopes and task groups (docs/combinators.md).

---Options of `loom.gather`.
---@class loom.GatherOptions
---@field return_exceptions? boolean errors take the place of results

---Options of `loom.wait`.
---@class loom.WaitOptions
---@field timeout? number seconds; `nil` waits without limit
---@field return_when? "ALL_COMPLETED"|"FIRST_COMPLETED"|"FIRST_EXCEPTION"

---Options of `loom.as_completed`.
---@class loom.AsCompletedOptions
---@field timeout? number seconds; a step after it raises `TimeoutError`

---A deadline over a part of the current task, asyncio's
---`async with timeout(...)`: `local t <close> = loom.timeout(0.5)`.
---@class loom.Timeout
local Timeout = {}

---The deadline (a loop time), or `nil`.
---@return number|nil
function Timeout:when() end

---A new deadline (a loop time; `nil` removes it), while the scope is
---open and has not expired.
---@param when number|nil
function Timeout:reschedule(when) end

---Whether the deadline passed while the scope was open.
---@return boolean
function Timeout:expired() end

---A group of child tasks: `loom.task_group(fn)` or
---`local tg <close> = loom.TaskGroup()`. Leaving the scope waits for every
---child; the first child error cancels the others and the parent, and
---the group raises an `ExceptionGroup`.
---@class loom.TaskGroup
local TaskGroup = {}

---Starts a child running `fn(...)`.
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return loom.Task
function TaskGroup:create_task(fn, ...) end
