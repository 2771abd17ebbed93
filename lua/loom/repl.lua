-- loom.repl: the executable's prompt on a terminal. The loop runs the
-- whole time: standard input is one more thing it watches, and libedit
-- (host/repl.c, in callback mode) gets each key as it arrives, so timers
-- and background tasks go on while the user types. Each entry runs as a
-- task of the loop; Ctrl-C cancels that task, or clears the line being
-- typed; Ctrl-D on an empty line leaves, cancelling what is left.
--
-- Commands start with ':' (":help" lists them).

local loom = require "loom"
local core = require "loom.core"

local M = {}

local pack, unpack, concat = table.pack, table.unpack, table.concat

---------------------------------------------------------------- showing values

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

-- A readable one-line text for v: strings quoted, tables as constructors
-- (nested to a depth, long ones cut, cycles marked), others by tostring.
local function show(v, depth, seen)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt ~= nil and mt.__tostring ~= nil then return tostring(v) end
  seen = seen or {}
  if seen[v] then return "<cycle>" end
  depth = depth or 0
  if depth >= 3 then return "{...}" end
  seen[v] = true
  local parts, n, max = {}, #v, 40
  for i = 1, math.min(n, max) do parts[#parts + 1] = show(v[i], depth + 1, seen) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(keys) do
    if #parts >= max then break end
    local key = is_ident(k) and k or ("[" .. show(k, depth + 1, seen) .. "]")
    parts[#parts + 1] = key .. " = " .. show(v[k], depth + 1, seen)
  end
  local total = n + #keys
  if total > max then parts[#parts + 1] = ("... (%d more)"):format(total - max) end
  seen[v] = nil
  return "{" .. concat(parts, ", ") .. "}"
end
M.show = show

---------------------------------------------------------------- the prompt

local HELP = [[
Each entry runs as a task of the loop, which keeps running between
entries: loom.sleep, awaits and results print; call_later and background
tasks print while you type. Ctrl-C cancels the running entry or clears
the line; Ctrl-D leaves.
Commands:
  :help          this text
  :tasks         every pending task as a tree: name, state, what it waits
                 on, the line it is suspended at
  :cancel ID     cancel task ID
  :stack ID      the frames of task ID
  :handles       what the loop holds: timers, sockets, signals, ...
  :time          the loop's clock
  :advance SECS  (virtual time) move the clock forward
  :step          (virtual time) run one iteration, advancing the clock to
                 the next timer if nothing is ready, and list what ran]]

-- The history file: $LOOM_HISTORY, else ~/.loom_history.
local function history_path()
  local p = os.getenv("LOOM_HISTORY")
  if p ~= nil and p ~= "" then return p end
  local home = os.getenv("HOME")
  if home ~= nil and home ~= "" then return home .. "/.loom_history" end
  return nil
end

-- Finds pending task id on loop.
local function find_task(loop, id)
  for _, t in ipairs(loom.all_tasks(loop)) do
    if core._task_info(t).id == id then return t end
  end
  return nil
end

-- run(progname, [opts]): the prompt, until end of input (opts.signal_dump:
-- SIGUSR1 prints the task tree). Returns the exit status.
function M.run(progname, opts)
  local ed = require "loom.editline"
  local loop = loom._repl_loop(opts and opts.virtual_time and "manual" or nil)
  local hist = history_path()
  if hist then ed._read_history(hist) end

  local real_print = print
  local function out(s) ed._write_above(s) end
  -- print from anywhere (a timer, a task) lands above the edited line.
  local function prompt_print(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    out(concat(parts, "\t") .. "\n")
  end

  local pending = nil   -- an incomplete chunk
  local entry = nil     -- the task of the entry that runs
  local exit = loop:create_future()

  local function prompt()
    if pending then return tostring(_G._PROMPT2 or ">> ") end
    return tostring(_G._PROMPT or "> ")
  end
  local function listen() ed._read(prompt()) end
  local function report(msg) out(msg .. "\n") end

  -- On a manual clock an entry that sleeps waits for :advance, so the
  -- prompt takes lines while entries run; their results print when done.
  local concurrent = opts and opts.virtual_time

  local function finished(task)
    if entry == task then entry = nil end
    if task:cancelled() then
      report("cancelled")
    else
      local ok, res = pcall(function() return pack(task:result()) end)
      if not ok then
        local msg = loom._errtext(res)
        local tb = core._task_traceback(task)
        report(tb and (msg .. "\n" .. tb) or msg)
      elseif res.n > 0 then
        local parts = {}
        for i = 1, res.n do parts[i] = show(res[i]) end
        report(concat(parts, "\t"))
      end
    end
    if not exit:done() and not concurrent then listen() end
  end

  local function capture()
    local lines = {}
    return { write = function(self, ...)
      for i = 1, select("#", ...) do lines[#lines + 1] = tostring((select(i, ...))) end
      return self
    end }, function() return concat(lines) end
  end

  local commands = {}
  function commands.help() report(HELP) end
  function commands.tasks()
    local sink, text = capture()
    loom.print_tasks(loop, sink)
    out(text())
  end
  function commands.time() report(("%.6f"):format(loop:time())) end
  function commands.advance(arg)
    local secs = tonumber(arg)
    if not secs or secs < 0 then report(":advance SECONDS (a number >= 0)") return end
    local t = loop:_advance(secs)
    report(("time %.6f"):format(t))
  end
  function commands.step()
    loop:_advance(0)   -- raises on a real clock
    local when, ready = loop:_next_deadline()
    if not ready then
      if when == nil then report("nothing to run: no callback is ready, no timer is set") return end
      if when > loop:time() then loop:_advance(when - loop:time()) end
    end
    local fut = loop:create_future()
    fut:add_done_callback(function(f)
      local list = f:result()
      local lines = { ("time %.6f, ran %d:"):format(loop:time(), #list) }
      for i, d in ipairs(list) do lines[#lines + 1] = ("  %d. %s"):format(i, d) end
      report(table.concat(lines, "\n"))
    end)
    loop:_record_next(fut)
  end
  function commands.cancel(arg)
    local id = math.tointeger(tonumber(arg))
    local t = id and find_task(loop, id)
    if not t then report(("no pending task %s"):format(arg or "(give an id)")) return end
    t:cancel()
    report(("cancelling %s"):format(tostring(t)))
  end
  function commands.stack(arg)
    local id = math.tointeger(tonumber(arg))
    local t = id and find_task(loop, id)
    if not t then report(("no pending task %s"):format(arg or "(give an id)")) return end
    local sink, text = capture()
    t:print_stack(nil, sink)
    out(text())
  end
  function commands.handles()
    local list = loop:_handles()
    local lines = {}
    for _, h in ipairs(list) do lines[#lines + 1] = "  " .. h end
    report(#lines > 0 and concat(lines, "\n") or "no handles")
  end

  local function command(line)
    local name, arg = line:match("^:(%a+)%s*(.-)%s*$")
    local fn = name and commands[name]
    if not fn then
      report(("unknown command '%s' (:help lists them)"):format(line))
    else
      local ok, err = pcall(fn, arg ~= "" and arg or nil)
      if not ok then report(loom._errtext(err)) end
    end
    listen()
  end

  local function entry_line(line)
    local chunk = pending and (pending .. "\n" .. line) or line
    if pending == nil and line:sub(1, 1) == "=" then chunk = "return " .. line:sub(2) end
    -- an expression first (its value is printed), else statements; either
    -- one cut short ("<eof>" expected) reads on
    local fn, err = load("return " .. chunk, "=stdin")
    local cut = not fn and err:sub(-5) == "<eof>"
    if not fn then
      local err2
      fn, err2 = load(chunk, "=stdin")
      if fn or err2:sub(-5) == "<eof>" then cut = cut or not fn end
      err = err2
    end
    if not fn and cut then   -- incomplete: read on
      pending = chunk
      listen()
      return
    end
    pending = nil
    ed._add_history(chunk)
    if not fn then
      report(err)
      listen()
      return
    end
    entry = loop:create_task(fn)
    entry:set_name("prompt")
    entry:add_done_callback(finished)
    if concurrent then listen() end
  end

  local function on_line(line)
    if line == false then               -- Ctrl-D
      if not exit:done() then exit:set_result() end
    elseif line == nil then             -- dropped by Ctrl-C
      pending = nil
      listen()
    elseif pending == nil and line:match("^%s*:") then
      command(line:match("^%s*(.-)$"))
    elseif pending == nil and line:match("^%s*$") then
      listen()
    else
      entry_line(line)
    end
  end

  -- No task of its own: the prompt is callbacks of the loop, so :tasks
  -- shows only the user's tasks.
  local started, start_err = false, nil
  loop:call_soon(function()
    local ok, err = pcall(function()
      _G.print = prompt_print
      loop:add_signal_handler("SIGINT", function()
        if entry ~= nil then
          entry:cancel()
        else
          ed._clear_line()
        end
      end)
      ed._start(loop, on_line)
      if opts and opts.signal_dump then loom._signal_dump(loop) end
      if opts and opts.trace then loom.trace.start(opts.trace) end
    end)
    if not ok then
      start_err = err
      loop:stop()
      return
    end
    started = true
    real_print(("%s: the loop runs while you type; :help for commands")
      :format(progname or "loom"))
    listen()
  end)
  exit:add_done_callback(function() loop:stop() end)
  local ok, err = pcall(loop.run_forever, loop)
  if ok and start_err ~= nil then ok, err = false, start_err end
  if not started then _G.print = real_print end
  ed._stop()
  if opts and opts.trace then loom.trace.stop() end
  pcall(loop.remove_signal_handler, loop, "SIGINT")
  _G.print = real_print
  io.stdout:write("\n")
  if hist then ed._write_history(hist) end
  loom._repl_close()
  if not ok then
    io.stderr:write(loom._errtext(err), "\n")
    return 1
  end
  return 0
end

return M
