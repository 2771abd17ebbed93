-- loom.queues: Queue, PriorityQueue and LifoQueue, asyncio's queues
-- (Python 3.13, shutdown included) for the tasks of one loop.
--
-- The design is asyncio's: a put or get that has to wait does so on a
-- future of its own, kept in a FIFO of putters or getters; put_nowait
-- wakes the first pending getter, get_nowait the first pending putter. A
-- woken waiter looks at the queue again (the item stays in the queue until
-- a getter takes it), so nothing is handed to a task that is gone, and a
-- waiter cancelled after it was woken passes the wake-up on to the next.
--
-- A queue is a table of closures over its state, not a table of fields
-- with methods in a metatable: a method is then found in the queue itself,
-- the state is in upvalues (cheaper to reach than fields),
-- and checking self is comparing it with the queue. A put, get and
-- task_done of a Queue with no waiter take 40% fewer instructions than
-- with fields, a metatable and a weak table of instances to check self
-- (2,600 against 4,300 under callgrind); that is what the
-- producer-consumer benchmark measures. The price is a dozen closures
-- per queue, made once.
--
-- Storage: a ring buffer (Queue), a stack (LifoQueue), a binary heap with
-- an insertion counter for a stable order (PriorityQueue). With no waiter,
-- put and get touch the item's slot and a few counters and allocate
-- nothing once the storage has grown. Queue has the ring buffer written
-- into its four put and get methods; the other two classes call their
-- storage's push and pop.
--
-- A queue binds to a loop when it first makes a future (a put, get or join
-- that has to wait), as asyncio's queues do; waiting on it from a task of
-- another loop is then an error.

local core = require "loom.core"
local util = require "loom.util"
local typename, callable = util.typename, util.callable
local errors = require "loom.errors"

local M = {}

local await = core.await
local running_loop = core._get_running_loop
local current_task = core.current_task
local getmetatable, setmetatable, type, error, pcall, rawget =
      getmetatable, setmetatable, type, error, pcall, rawget
local tointeger, maxinteger = math.tointeger, math.maxinteger
local move = table.move
local QueueEmpty, QueueFull, QueueShutDown =
      errors.QueueEmpty, errors.QueueFull, errors.QueueShutDown


---------------------------------------------------------------- helpers

-- Raises, for the caller of method fname, the error for a wrong self.
local function badself(fname, qname, v)
  error(("calling '%s' on bad self (%s expected, got %s)")
    :format(fname, qname, typename(v)), 3)
end

local function novalue(fname)
  error(("bad argument #1 to '%s' (value expected)"):format(fname), 3)
end

-- maxsize, argument #arg of constructor cname, as an integer; nil is 0.
local function checkmax(cname, arg, maxsize)
  if maxsize == nil then return 0 end
  if type(maxsize) ~= "number" then
    error(("bad argument #%d to '%s' (integer expected, got %s)")
      :format(arg, cname, typename(maxsize)), 3)
  end
  local m = tointeger(maxsize)
  if m == nil then
    error(("bad argument #%d to '%s' (number has no integer representation)")
      :format(arg, cname), 3)
  end
  return m
end

-- Waiter FIFOs: futures at the integer keys h..t. Each function that
-- changes one returns its new length, which the queue keeps in an upvalue
-- for the hot path to test.
local function newfifo() return { h = 1, t = 0 } end

local function append(d, fut)
  local t = d.t + 1
  d[t] = fut
  d.t = t
  return t - d.h + 1
end

-- Wakes the first waiter of d that is not done yet (a waiter cancelled
-- while it waited is done, and skipped).
local function wakeup(d)
  local h, t = d.h, d.t
  while h <= t do
    local fut = d[h]
    d[h] = nil
    h = h + 1
    if not fut:done() then
      fut:set_result()
      break
    end
  end
  if h > t then
    d.h, d.t = 1, 0
    return 0
  end
  d.h = h
  return t - h + 1
end

-- Wakes every waiter of d and empties it.
local function wakeall(d)
  for i = d.h, d.t do
    local fut = d[i]
    d[i] = nil
    if not fut:done() then fut:set_result() end
  end
  d.h, d.t = 1, 0
  return 0
end

-- Removes fut from d, when it is still there (a wake-up takes it out).
local function remove(d, fut)
  local h, t = d.h, d.t
  for i = h, t do
    if d[i] == fut then
      move(d, i + 1, t, i)
      d[t] = nil
      t = t - 1
      break
    end
  end
  if h > t then
    d.h, d.t = 1, 0
    return 0
  end
  d.t = t
  return t - h + 1
end


---------------------------------------------------------------- queues

local FIFO, LIFO, HEAP = 1, 2, 3

-- One metatable per class: a name for messages, and __tostring, which
-- asks the queue's own closure (kept here, weakly) to describe it.
local describe = setmetatable({}, { __mode = "k" })

local function classmt(cname)
  return {
    __name = "loom." .. cname,
    __tostring = function(q) return describe[q]() end,
  }
end

local mts = { classmt("Queue"), classmt("LifoQueue"), classmt("PriorityQueue") }
local names = { "Queue", "LifoQueue", "PriorityQueue" }

-- A new queue of the given kind; maxsize is checked, keyfn (a
-- PriorityQueue's) is callable or nil.
local function build(kind, maxsize, keyfn)
  local cname = names[kind]
  local qname = "loom." .. cname
  local q = setmetatable({}, mts[kind])

  local limit = maxsize > 0 and maxsize or maxinteger
  local putlim = limit         -- limit, or 0 once shut down: put's one test
  local n, unfinished = 0, 0   -- items in the queue; put and not done
  local shut = false           -- false, true, or "immediate"
  local loop                   -- the loop the queue is bound to
  local getters, putters, joiners = newfifo(), newfifo(), newfifo()
  local nget, nput = 0, 0      -- the lengths of getters and putters

  ---------------------------------------- storage
  -- push(item, key) adds the item to the n there are; pop() takes the
  -- next of the n out and returns it; clear() empties the store. The
  -- methods keep n.

  -- Queue: a ring buffer. buf[1..cap] holds the items, the first at
  -- offset head. Full, the ring doubles and its wrapped part moves to
  -- just past the old end, so the slots stay in the table's array part
  -- and are reused. LifoQueue: a stack in buf[1..n].
  local buf, head, cap = {}, 0, 0

  local function grow()
    if head > 0 then             -- the items are at head+1..cap, 1..head
      move(buf, 1, head, cap + 1)
      for i = 1, head do buf[i] = nil end
    end
    cap = cap == 0 and 8 or cap * 2
  end

  -- PriorityQueue: a binary heap over parallel arrays: items, keys (the
  -- priorities: without a key function, the items, and the same table)
  -- and seqs (insertion numbers). Entry a comes before b when key a < key
  -- b, or when neither key is less and a was put first, so equal
  -- priorities come out in insertion order. Both operations compare first
  -- and move entries afterwards: a comparison that raises leaves the heap
  -- as it was.
  local items, keys, seqs, seq

  local push, pop, clear
  if kind == FIFO then
    clear = function() buf, head, cap = {}, 0, 0 end
  elseif kind == LIFO then
    clear = function() buf = {} end
    push = function(item) buf[n + 1] = item end
    pop = function()
      local item = buf[n]
      buf[n] = nil
      return item
    end
  else
    clear = function()
      items, seqs, seq = {}, {}, 0
      keys = keyfn and {} or items
    end
    clear()

    push = function(item, key)
      -- the new entry has the highest insertion number: it rises above
      -- strictly greater keys only
      local pos = n + 1
      while pos > 1 do
        local parent = pos // 2
        if key < keys[parent] then pos = parent else break end
      end
      local i = n + 1
      while i > pos do
        local parent = i // 2
        items[i], keys[i], seqs[i] = items[parent], keys[parent], seqs[parent]
        i = parent
      end
      seq = seq + 1
      items[pos], keys[pos], seqs[pos] = item, key, seq
    end

    pop = function()
      local top, last = items[1], n
      local lastk, lasts = keys[last], seqs[last]
      local m = last - 1
      -- where the last entry sinks to from the root, among the first m
      local pos = 1
      while true do
        local c = pos * 2
        if c > m then break end
        local ck, cs = keys[c], seqs[c]
        if c < m then
          local rk, rs = keys[c + 1], seqs[c + 1]
          if rk < ck or (not (ck < rk) and rs < cs) then
            c, ck, cs = c + 1, rk, rs
          end
        end
        if ck < lastk or (not (lastk < ck) and cs < lasts) then
          pos = c
        else
          break
        end
      end
      -- then each entry on the path from the root to pos moves up a level
      local lasti = items[last]
      items[last], keys[last], seqs[last] = nil, nil, nil
      if m > 0 then
        local depth, x = 0, pos
        while x > 1 do x = x >> 1; depth = depth + 1 end
        for s = depth - 1, 0, -1 do
          local node = pos >> s
          local parent = node >> 1
          items[parent], keys[parent], seqs[parent] =
            items[node], keys[node], seqs[node]
        end
        items[pos], keys[pos], seqs[pos] = lasti, lastk, lasts
      end
      return top
    end
  end

  ---------------------------------------- waiting

  -- A new future for the running task to wait on; binds the queue to the
  -- running loop. Errors name fname and are raised at the given level.
  local function newwaiter(fname, level)
    local running = running_loop()
    if running == nil then
      error(fname .. ": no running event loop", level)
    end
    if loop ~= running then
      if loop ~= nil then
        error(fname .. ": the queue is bound to a different event loop", level)
      end
      loop = running
    end
    if current_task(running) == nil then
      error(fname .. ": not inside a task", level)
    end
    return running:create_future()
  end

  -- put waits here while the queue is full; raises QueueShutDown once it
  -- is shut down (putlim is 0 then, so every put comes here).
  local function waitput()
    while n >= putlim do
      if shut then error(QueueShutDown("put: the queue is shut down")) end
      local fut = newwaiter("put", 4)
      nput = append(putters, fut)
      local ok, err = pcall(await, fut)
      if not ok then
        fut:cancel()
        nput = remove(putters, fut)
        -- woken, then cancelled before it could put: the next one may
        if n < putlim and not fut:cancelled() then nput = wakeup(putters) end
        error(err, 0)
      end
    end
  end

  -- get waits here while the queue is empty; raises QueueShutDown when it
  -- is empty and shut down.
  local function waitget()
    while n == 0 do
      if shut then error(QueueShutDown("get: the queue is shut down")) end
      local fut = newwaiter("get", 4)
      nget = append(getters, fut)
      local ok, err = pcall(await, fut)
      if not ok then
        fut:cancel()
        nget = remove(getters, fut)
        -- woken, then cancelled before it could get: the next one may
        if n > 0 and not fut:cancelled() then nget = wakeup(getters) end
        error(err, 0)
      end
    end
  end

  -- put_nowait on a queue that takes no more items.
  local function refuse()
    if shut then error(QueueShutDown("put_nowait: the queue is shut down")) end
    error(QueueFull("put_nowait: the queue is full"))
  end

  -- get_nowait on an empty queue.
  local function nothing()
    if shut then error(QueueShutDown("get_nowait: the queue is shut down")) end
    error(QueueEmpty("get_nowait: the queue is empty"))
  end

  -- The priority of item: its key, or itself.
  local function keyof(item, fname)
    if keyfn == nil then return item end
    local k = keyfn(item)
    if k == nil then error(fname .. ": the key function returned nil", 3) end
    return k
  end

  ---------------------------------------- put and get

  if kind == FIFO then
    -- put_nowait(item): adds item; QueueFull when the queue is full,
    -- QueueShutDown once it is shut down.
    function q.put_nowait(self, item)
      if self ~= q then badself("put_nowait", qname, self) end
      if item == nil then novalue("put_nowait") end
      local k = n
      if k >= putlim then refuse() end
      if k == cap then grow() end
      local i = head + k
      if i >= cap then i = i - cap end
      buf[i + 1] = item
      n = k + 1
      unfinished = unfinished + 1
      if nget > 0 then nget = wakeup(getters) end
    end

    -- put(item): adds item, waiting first while the queue is full.
    function q.put(self, item)
      if self ~= q then badself("put", qname, self) end
      if item == nil then novalue("put") end
      if n >= putlim then waitput() end
      local k = n
      if k == cap then grow() end
      local i = head + k
      if i >= cap then i = i - cap end
      buf[i + 1] = item
      n = k + 1
      unfinished = unfinished + 1
      if nget > 0 then nget = wakeup(getters) end
    end

    -- get_nowait(): the next item; QueueEmpty when the queue is empty,
    -- QueueShutDown when it is empty and shut down.
    function q.get_nowait(self)
      if self ~= q then badself("get_nowait", qname, self) end
      local k = n
      if k == 0 then nothing() end
      local h = head
      local item = buf[h + 1]
      buf[h + 1] = nil
      h = h + 1
      if h == cap or k == 1 then h = 0 end
      head = h
      n = k - 1
      if nput > 0 then nput = wakeup(putters) end
      return item
    end

    -- get(): the next item, waiting first while the queue is empty.
    function q.get(self)
      if self ~= q then badself("get", qname, self) end
      if n == 0 then waitget() end
      local k, h = n, head
      local item = buf[h + 1]
      buf[h + 1] = nil
      h = h + 1
      if h == cap or k == 1 then h = 0 end
      head = h
      n = k - 1
      if nput > 0 then nput = wakeup(putters) end
      return item
    end
  else
    -- The same, with the storage's push and pop (and a PriorityQueue's
    -- key, computed before anything else, as the key function may wait).
    function q.put_nowait(self, item)
      if self ~= q then badself("put_nowait", qname, self) end
      if item == nil then novalue("put_nowait") end
      local key = keyof(item, "put_nowait")
      if n >= putlim then refuse() end
      push(item, key)
      n = n + 1
      unfinished = unfinished + 1
      if nget > 0 then nget = wakeup(getters) end
    end

    function q.put(self, item)
      if self ~= q then badself("put", qname, self) end
      if item == nil then novalue("put") end
      local key = keyof(item, "put")
      if n >= putlim then waitput() end
      push(item, key)
      n = n + 1
      unfinished = unfinished + 1
      if nget > 0 then nget = wakeup(getters) end
    end

    function q.get_nowait(self)
      if self ~= q then badself("get_nowait", qname, self) end
      if n == 0 then nothing() end
      local item = pop()
      n = n - 1
      if nput > 0 then nput = wakeup(putters) end
      return item
    end

    function q.get(self)
      if self ~= q then badself("get", qname, self) end
      if n == 0 then waitget() end
      local item = pop()
      n = n - 1
      if nput > 0 then nput = wakeup(putters) end
      return item
    end
  end

  ---------------------------------------- the rest

  -- task_done(): an item got earlier has been processed.
  function q.task_done(self)
    if self ~= q then badself("task_done", qname, self) end
    local u = unfinished
    if u <= 0 then
      error("task_done: called more times than there were items put", 2)
    end
    unfinished = u - 1
    if u == 1 and joiners.h <= joiners.t then wakeall(joiners) end
  end

  -- join(): waits until every item put has had its task_done.
  function q.join(self)
    if self ~= q then badself("join", qname, self) end
    if unfinished > 0 then
      local fut = newwaiter("join", 3)
      append(joiners, fut)
      local ok, err = pcall(await, fut)
      if not ok then
        fut:cancel()
        remove(joiners, fut)
        error(err, 0)
      end
    end
  end

  -- shutdown([immediate]): from now on put raises QueueShutDown, and get
  -- does once the queue is empty. With immediate the queue is emptied at
  -- once and its items count as done for join. Wakes every blocked put
  -- and get.
  function q.shutdown(self, immediate)
    if self ~= q then badself("shutdown", qname, self) end
    if type(immediate) == "table" then immediate = immediate.immediate end
    if immediate ~= nil and type(immediate) ~= "boolean" then
      error("bad argument #1 to 'shutdown' (boolean expected, got "
        .. typename(immediate) .. ")", 2)
    end
    if not shut then shut = true end
    putlim = 0
    if immediate then
      shut = "immediate"
      local u = unfinished - n
      if u < 0 then u = 0 end
      clear()
      n, unfinished = 0, u
      if u == 0 then wakeall(joiners) end
    end
    nget = wakeall(getters)
    nput = wakeall(putters)
  end

  function q.qsize(self)
    if self ~= q then badself("qsize", qname, self) end
    return n
  end

  function q.empty(self)
    if self ~= q then badself("empty", qname, self) end
    return n == 0
  end

  function q.full(self)
    if self ~= q then badself("full", qname, self) end
    return n >= limit
  end

  function q.maxsize(self)
    if self ~= q then badself("maxsize", qname, self) end
    return maxsize
  end

  describe[q] = function()
    local s = ("<%s maxsize=%d qsize=%d"):format(cname, maxsize, n)
    local j = joiners.t - joiners.h + 1
    if nget > 0 then s = s .. (" getters[%d]"):format(nget) end
    if nput > 0 then s = s .. (" putters[%d]"):format(nput) end
    if j > 0 then s = s .. (" joiners[%d]"):format(j) end
    if unfinished > 0 then s = s .. (" tasks=%d"):format(unfinished) end
    if shut == "immediate" then
      s = s .. " shutdown-immediate"
    elseif shut then
      s = s .. " shutdown"
    end
    return s .. ">"
  end

  return q
end


---------------------------------------------------------------- the classes

-- A class is a table that makes a queue when called.
local function class(kind, make)
  local qname = "loom." .. names[kind]
  return setmetatable({}, {
    __call = make,
    __name = qname,
    __tostring = function() return qname end,
  })
end

-- Queue([maxsize]): first in, first out; maxsize <= 0 (the default) is
-- unbounded.
M.Queue = class(FIFO, function(_, maxsize)
  return build(FIFO, checkmax("Queue", 1, maxsize))
end)

-- LifoQueue([maxsize]): last in, first out.
M.LifoQueue = class(LIFO, function(_, maxsize)
  return build(LIFO, checkmax("LifoQueue", 1, maxsize))
end)

-- PriorityQueue([maxsize] [, opts]): smallest first, compared with <;
-- opts.key(item) gives an item's priority. PriorityQueue(opts) is
-- PriorityQueue(0, opts).
M.PriorityQueue = class(HEAP, function(_, maxsize, opts)
  local optarg = 2
  if type(maxsize) == "table" and opts == nil then
    maxsize, opts, optarg = nil, maxsize, 1
  end
  local m = checkmax("PriorityQueue", 1, maxsize)
  local keyfn
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("bad argument #%d to 'PriorityQueue' (table expected, got %s)")
        :format(optarg, typename(opts)), 2)
    end
    for k in pairs(opts) do
      if k ~= "key" then
        error(("bad argument #%d to 'PriorityQueue' (unknown option '%s')")
          :format(optarg, tostring(k)), 2)
      end
    end
    keyfn = opts.key
    if keyfn ~= nil and not callable(keyfn) then
      error(("bad argument #%d to 'PriorityQueue' (key must be callable, got %s)")
        :format(optarg, typename(keyfn)), 2)
    end
  end
  return build(HEAP, m, keyfn)
end)

return M
