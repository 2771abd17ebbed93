---@meta _

-- Queues (docs/queues.md). Each queue holds its methods itself (they are
-- closures over its state): call them on a queue, `q:put(x)`.

---A first-in, first-out queue for the tasks of one loop.
---`loom.Queue([maxsize])`: `maxsize <= 0` (the default) means no limit.
---@class loom.Queue
---@overload fun(maxsize?: integer): loom.Queue
local Queue = {}

---Adds `item` (not `nil`), waiting first while the queue is full.
---Raises `QueueShutDown` once the queue is shut down.
---@async
---@param item any
function Queue:put(item) end

---Removes and returns the next item, waiting first while the queue is
---empty. Raises `QueueShutDown` when shut down and empty.
---@async
---@return any
function Queue:get() end

---Adds `item` at once; raises `QueueFull` when full.
---@param item any
function Queue:put_nowait(item) end

---The next item at once; raises `QueueEmpty` when empty.
---@return any
function Queue:get_nowait() end

---The number of items in the queue.
---@return integer
function Queue:qsize() end

---@return boolean
function Queue:empty() end

---@return boolean
function Queue:full() end

---The `maxsize` given.
---@return integer
function Queue:maxsize() end

---One item got earlier is processed (for `join`).
function Queue:task_done() end

---Waits until every item put has had its `task_done`.
---@async
function Queue:join() end

---Shuts the queue down: `put` raises from now on; with `immediate`
---the items left are dropped and `get` raises at once.
---@param immediate? boolean|{immediate: boolean}
function Queue:shutdown(immediate) end

---Last in, first out.
---@class loom.LifoQueue: loom.Queue
---@overload fun(maxsize?: integer): loom.LifoQueue

---Smallest first (compared with `<`, or by `opts.key(item)`); items of
---equal priority in the order they were put.
---@class loom.PriorityQueue: loom.Queue
---@overload fun(maxsize?: integer, opts?: loom.PriorityQueueOptions): loom.PriorityQueue
---@overload fun(opts: loom.PriorityQueueOptions): loom.PriorityQueue

---Options of `loom.PriorityQueue`.
---@class loom.PriorityQueueOptions
---@field key? fun(item: any): any the priority of an item, computed once when it is put
