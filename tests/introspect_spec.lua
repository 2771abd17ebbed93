-- introspect_spec.lua: task:get_stack(), task:print_stack(),
-- loom.task_tree() and loom.print_tasks() (host/task.c,
-- lua/loom/introspect.lua).
local H = require "helper"
local loom = require "loom"
H.setup()

-- A file-like object collecting what is written.
local function sink()
  local buf = {}
  return {
    write = function(self, ...)
      for i = 1, select("#", ...) do buf[#buf + 1] = tostring((select(i, ...))) end
      return self
    end,
    text = function() return table.concat(buf) end,
  }
end

local SRC = debug.getinfo(1, "S").short_src

-- Named so the frames read well.
local function deepest(secs) loom.sleep(secs) end
local function middle(secs) deepest(secs) end

describe("task:get_stack", function()
  it("gives the frames a suspended task is in, oldest first, with source lines", function()
    local loop = H.loop()
    local line_sleep = debug.getinfo(deepest, "S").linedefined
    local line_mid = debug.getinfo(middle, "S").linedefined
    loop:run_until_complete(function()
      local t = loom.create_task(middle, 10)
      assert.are.same({}, t:get_stack())        -- not started yet
      loom.sleep(0)
      local st = t:get_stack()
      assert.are.equal(2, #st)
      assert.are.equal(SRC, st[1].source)
      assert.are.equal(line_mid, st[1].line)
      assert.are.equal("Lua", st[1].what)
      assert.are.equal("deepest", st[2].name)
      assert.are.equal(line_sleep, st[2].line)
      -- limit keeps the newest frames
      local one = t:get_stack(1)
      assert.are.equal(1, #one)
      assert.are.equal("deepest", one[1].name)
      assert.are.same({}, t:get_stack(0))
      H.contains("limit must be >= 0", H.raised(t.get_stack, t, -1))
      t:cancel()
      pcall(t.await, t)
      assert.are.same({}, t:get_stack())        -- done
    end)
  end)

  it("print_stack writes the frames, and the error of a failed task", function()
    local loop = H.loop()
    loop:run_until_complete(function()
      local t = loom.create_task(middle, 10)
      t:set_name("worker")
      loom.sleep(0)
      local out = sink()
      t:print_stack(nil, out)
      local text = out.text()
      H.contains("Stack for <Task worker pending> (most recent call last):", text)
      H.contains(("%s:%d: in deepest"):format(SRC, debug.getinfo(deepest, "S").linedefined), text)
      t:cancel()
      pcall(t.await, t)
      local f = loom.create_task(function() error("boom") end)
      pcall(f.await, f)
      local out2 = sink()
      f:print_stack(nil, out2)
      H.contains("No stack for <Task", out2.text())
      H.contains("boom", out2.text())
      H.contains("loom.Task expected", H.raised(t.print_stack, {}))
      -- bad limit and file: errors of print_stack and print_tasks, at
      -- the caller's line
      local err = H.raised
      local here = "^[^:]*introspect_spec%.lua:%d+: "
      assert.matches(here .. "bad argument #1 to 'print_stack' %(limit must be an "
        .. "integer >= 0, got boolean%)", err(function() t:print_stack(true) end))
      assert.matches(here .. "bad argument #2 to 'print_stack' %(file expected, got "
        .. "number%)", err(function() t:print_stack(nil, 0) end))
      assert.matches(here .. "bad argument #2 to 'print_tasks' %(file expected, got "
        .. "boolean%)", err(function() loom.print_tasks(nil, true) end))
    end)
  end)
end)

describe("task_tree", function()
  it("shows who created whom, what each waits on, and where", function()
    local loop = H.loop()
    loop:run_until_complete(function()
      local main = loom.current_task()
      local sleeper = loom.create_task(middle, 5)
      sleeper:set_name("sleeper")
      local fut = loop:create_future()
      local waiter, grandchild
      waiter = loom.create_task(function()
        grandchild = loom.create_task(function() loom.sleep(0) ; fut:await() end)
        return sleeper:await()
      end)
      waiter:set_name("waiter")
      for _ = 1, 3 do loom.sleep(0) end
      local roots = loom.task_tree()
      assert.are.equal(1, #roots)
      local r = roots[1]
      assert.are.equal(main, r.task)
      assert.is_true(r.current)
      assert.are.equal("running", r.waiting)
      assert.are.equal(2, #r.children)
      local s, w = r.children[1], r.children[2]
      assert.are.equal(sleeper, s.task)
      assert.are.equal("sleeper", s.name)
      assert.are.equal(r.id, s.parent)
      assert.are.equal(loop:time() + 5, s.sleep_until)
      H.contains("sleeping, 5.000 s left", s.waiting)
      assert.are.equal(("%s:%d"):format(SRC, debug.getinfo(deepest, "S").linedefined), s.where)
      assert.are.equal(waiter, w.task)
      assert.are.equal(sleeper, w.awaiting)
      assert.are.equal(s, w.awaiting_task)
      H.contains("awaiting Task " .. s.id .. " 'sleeper'", w.waiting)
      assert.are.equal(1, #w.children)
      local g = w.children[1]
      assert.are.equal(grandchild, g.task)
      assert.are.equal(fut, g.awaiting)
      H.contains("awaiting <Future pending>", g.waiting)
      -- print_tasks draws the same tree
      local out = sink()
      assert.are.equal(4, loom.print_tasks(loop, out))
      local text = out.text()
      H.contains("Task " .. r.id .. " '" .. r.name .. "' running at " .. SRC, text)
      H.contains("├── Task " .. s.id .. " 'sleeper' sleeping", text)
      H.contains("└── Task " .. w.id .. " 'waiter' awaiting Task " .. s.id, text)
      H.contains("    └── Task " .. g.id, text)
      for _, t in ipairs{sleeper, waiter, grandchild} do t:cancel() end
      loom.sleep(0)
      loom.sleep(0)
      local left = loom.task_tree()
      assert.are.equal(1, #left)
      assert.are.equal(0, #left[1].children)
    end)
  end)

  it("orphans become roots; a task made in a callback has no parent", function()
    local loop = H.loop()
    local late
    loop:run_until_complete(function()
      local parent = loom.create_task(function()
        loom.create_task(function() loom.sleep(1) end):set_name("orphan")
      end)
      parent:await()
      loop:call_soon(function()
        late = loom.create_task(function() loom.sleep(1) end)
      end)
      loom.sleep(0)
      loom.sleep(0)
      local names = {}
      for _, n in ipairs(loom.task_tree()) do names[#names + 1] = n.name end
      assert.are.same({ "Task-1", "orphan", late:get_name() }, names)
      assert.is_nil(loom.task_tree()[3].parent)
      for _, t in ipairs(loom.all_tasks()) do
        if t ~= loom.current_task() then t:cancel() end
      end
      loom.sleep(0)
    end)
  end)

  it("works on a loop that is not running, and checks its argument", function()
    local loop = H.loop()
    local t = loop:create_task(function() loom.sleep(1) end)
    local roots = loom.task_tree(loop)
    assert.are.equal(1, #roots)
    assert.are.equal("not started", roots[1].waiting)
    local out = sink()
    assert.are.equal(1, loom.print_tasks(loop, out))
    H.contains("not started", out.text())
    H.contains("bad argument #1 to 'task_tree' (loom.Loop expected, got table)",
               H.raised(loom.task_tree, {}))
    H.contains("print_tasks: no running event loop", H.raised(loom.print_tasks))
    t:cancel()
    loop:run_until_complete(function() loom.sleep(0) end)
    local empty = sink()
    assert.are.equal(0, loom.print_tasks(loop, empty))
    H.contains("no pending tasks", empty.text())
  end)

  it("names what a task waits on: a child's exit", function()
    local loop = H.loop{virtual_time = false}
    loop:run_until_complete(function()
      local p = loom.create_subprocess_exec("sleep", "5")
      local waiter = loom.create_task(function() return p:wait() end)
      waiter:set_name("reaper")
      loom.sleep(0.01)
      local node
      for _, n in ipairs(loom.task_tree()[1].children) do
        if n.task == waiter then node = n end
      end
      assert.is_not_nil(node)
      assert.are.equal(("awaiting the exit of process %d"):format(p.pid), node.waiting)
      p:kill()
      assert.are.equal(-9, waiter:await())
    end)
  end)

  it("names what a task waits on: data on a stream", function()
    local loop = H.loop{virtual_time = false}
    loop:run_until_complete(function()
      local server = loom.start_server(function(r, w) r:read(-1) w:close() end,
                                       "127.0.0.1", 0)
      local r, w = loom.open_connection("127.0.0.1", server:sockets()[1].port)
      local reader = loom.create_task(function() return r:readline() end)
      loom.sleep(0.01)
      local node
      for _, n in ipairs(loom.task_tree()[1].children) do
        if n.task == reader then node = n end
      end
      assert.is_not_nil(node)
      H.contains("awaiting data on loom.TCPTransport (open)", node.waiting)
      w:close()
      assert.are.equal("", reader:await())
      server:close()
      server:wait_closed()
    end)
  end)
end)
