-- loom.introspect: seeing inside a loop. task_tree() and print_tasks()
-- show every pending task as a tree of who created whom, with what each
-- one waits on and the source line it is suspended at; task:print_stack()
-- prints one task's frames. The facts come from C (task:get_stack() and
-- the private core._task_info); the shaping is here.

local core = require "loom.core"
local typename = require("loom.util").typename

local M = {}

local LOOP = "loom.Loop"
local TASK = "loom.Task"
local reg = debug.getregistry()

-- What a future stands for, for the futures that parts of loom wait on
-- (a child's exit, data on a stream): future -> text. Weak keys: a label
-- goes with its future.
local labels = setmetatable({}, { __mode = "k" })

-- _label(fut, text): names what fut stands for in task_tree's "waiting".
function M._label(fut, text)
  labels[fut] = text
  return fut
end

local function isloop(x) return getmetatable(x) == reg[LOOP] end

-- The file argument argn of fname: nil (io.stderr) or something with a
-- write method (a file, or a table that collects).
local function checkfile(fname, file, argn)
  if file == nil then return io.stderr end
  local ty, ok, write = type(file), false, nil
  if ty == "table" or ty == "userdata" then
    ok, write = pcall(function() return file.write end)
  end
  if not ok or (type(write) ~= "function"
                and not (getmetatable(write) or {}).__call) then
    error(("bad argument #%d to '%s' (file expected, got %s)")
      :format(argn, fname, typename(file)), 3)
  end
  return file
end
local function istask(x) return getmetatable(x) == reg[TASK] end

-- The loop argument at position n of fname: given, or the running one.
local function checkloop(fname, loop, n)
  if loop == nil then
    loop = core._get_running_loop()
    if loop == nil then error(fname .. ": no running event loop", 3) end
    return loop
  end
  if not isloop(loop) then
    error(("bad argument #%d to '%s' (loom.Loop expected, got %s)")
      :format(n, fname, typename(loop)), 3)
  end
  return loop
end

-- "file:line" of a frame.
local function at(frame)
  return frame and ("%s:%d"):format(frame.source, frame.line) or nil
end

-- What a task waits on, in words.
local function waiting_text(node, now)
  if node.current then return "running" end
  if not node.started then return "not started" end
  if node.awaiting_task then
    return ("awaiting Task %d '%s'"):format(node.awaiting_task.id,
                                            node.awaiting_task.name)
  end
  if node.awaiting then
    local label = labels[node.awaiting]
    if label then return "awaiting " .. label end
    return "awaiting " .. tostring(node.awaiting)
  end
  if node.sleep_until then
    return ("sleeping, %.3f s left"):format(math.max(0, node.sleep_until - now))
  end
  if node.sleeping then return "ready (sleep(0))" end
  return "ready"
end

-- task_tree([loop]) -> list of root nodes. A node: {task =, id =, name =,
-- parent = id or nil, children = {nodes}, started =, current = true for
-- the task running now, awaiting = the future or task it awaits,
-- awaiting_task = its node when that is a pending task of the loop,
-- sleep_until = loop time, sleeping = true for sleep(0), where =
-- "file:line" it is suspended at, stack = task:get_stack(), waiting =
-- the same in words}. A task whose creator is done (or that was made
-- outside any task) is a root. Nodes are in the order of their ids.
function M.task_tree(loop)
  loop = checkloop("task_tree", loop, 1)
  local tasks = core.all_tasks(loop)
  local current = core.current_task(loop)
  local byid, nodes = {}, {}
  for _, t in ipairs(tasks) do
    local info = core._task_info(t)
    local stack = t:get_stack()
    if t == current then  -- its live frames: drop this module's own
      for i = #stack, 1, -1 do
        if stack[i].source:find("loom[/\\]introspect%.lua$") then
          table.remove(stack, i)
        end
      end
    end
    local node = {
      task = t, id = info.id, name = t:get_name(), parent = info.parent,
      started = info.started, current = t == current or nil,
      awaiting = info.awaiting, sleep_until = info.sleep_until,
      sleeping = info.sleeping, stack = stack, where = at(stack[#stack]),
      children = {},
    }
    byid[node.id] = node
    nodes[#nodes + 1] = node
  end
  table.sort(nodes, function(a, b) return a.id < b.id end)
  local now, roots = loop:time(), {}
  for _, node in ipairs(nodes) do
    local aw = node.awaiting
    if aw ~= nil and istask(aw) then
      node.awaiting_task = byid[core._task_info(aw).id]
    end
    node.waiting = waiting_text(node, now)
    local p = node.parent and byid[node.parent]
    if p then p.children[#p.children + 1] = node else roots[#roots + 1] = node end
  end
  return roots
end

-- The lines of the tree under roots, each prefixed.
local function render(roots, out)
  local function walk(node, prefix, last, top)
    local branch = top and "" or (last and "└── " or "├── ")
    out[#out + 1] = ("%s%sTask %d '%s' %s%s"):format(prefix, branch,
      node.id, node.name, node.waiting,
      node.where and (" at " .. node.where) or "")
    local inner = top and "" or (prefix .. (last and "    " or "│   "))
    for i, c in ipairs(node.children) do
      walk(c, inner, i == #node.children, false)
    end
  end
  for _, r in ipairs(roots) do walk(r, "", true, true) end
  return out
end

-- print_tasks([loop], [file]): the tree as text on file (default
-- io.stderr). Returns the number of pending tasks.
function M.print_tasks(loop, file)
  loop = checkloop("print_tasks", loop, 1)
  file = checkfile("print_tasks", file, 2)
  local roots = M.task_tree(loop)
  local lines = render(roots, {})
  local n = #lines
  if n == 0 then lines[1] = "no pending tasks" end
  file:write(table.concat(lines, "\n"), "\n")
  return n
end

-- task:print_stack([limit], [file]): the task's frames, oldest first, on
-- file (default io.stderr), as asyncio's print_stack.
local function print_stack(task, limit, file)
  if not istask(task) then
    error(("bad argument #1 to 'print_stack' (loom.Task expected, got %s)")
      :format(typename(task)), 2)
  end
  if limit ~= nil and (math.type(limit) ~= "integer" or limit < 0) then
    error(("bad argument #1 to 'print_stack' (limit must be an integer >= "
      .. "0, got %s)"):format(type(limit) == "number" and tostring(limit)
        or typename(limit)), 2)
  end
  file = checkfile("print_stack", file, 2)
  local frames = task:get_stack(limit)
  local out = {}
  if #frames == 0 then
    out[1] = ("No stack for %s"):format(tostring(task))
  else
    out[1] = ("Stack for %s (most recent call last):"):format(tostring(task))
    for _, f in ipairs(frames) do
      out[#out + 1] = ("  %s:%d: in %s"):format(f.source, f.line, f.name)
    end
  end
  if task:done() and not task:cancelled() and task:exception() ~= nil then
    local tb = core._task_traceback(task)
    out[#out + 1] = tostring(task:exception())
    if tb then out[#out + 1] = tb end
  end
  file:write(table.concat(out, "\n"), "\n")
end

core.interpose(TASK, "print_stack", print_stack)

return M
