-- repl_spec.lua: the executable's prompt on a terminal (host/repl.c,
-- lua/loom/repl.lua), driven through tmux: keys are sent to a real
-- pseudo-terminal and the screen is read back. Each test has its own tmux
-- server (-L), so nothing is shared with a tmux the user runs.

-- The helper programs must not inherit the sanitizer runtime preloaded
-- into the interpreter under the ASan run.
local function sh(cmd)
  local p = io.popen("unset LD_PRELOAD; " .. cmd .. " 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

local function shquote(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

local ROOT = (function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  return sh("cd " .. shquote(here) .. "/.. && pwd"):gsub("%s+$", "")
end)()
local EXE = os.getenv("LOOM_EXE") or (ROOT .. "/build/bin/loom")

local have_tmux = sh("command -v tmux"):match("tmux") ~= nil

local n = 0
-- Starts the prompt in a new tmux server; returns a session object.
local function session(opts)
  n = n + 1
  -- the history file in a directory of its own, removed with it: the
  -- prompt may still write it after the tmux server is killed, and then
  -- finds no directory
  local dir = sh("mktemp -d"):gsub("%s+$", "")
  local s = {
    sock = ("loom-spec-%d-%d"):format(math.random(1e9), n),
    hist = dir .. "/history",
  }
  local function tm(args) return sh("tmux -L " .. s.sock .. " " .. args) end
  s.tm = tm
  -- the shell keeps the pane after loom exits, to read its exit status
  local cmd = ("env -u LD_PRELOAD LOOM_HISTORY=%s %s %s; echo EXIT=$?; sleep 60")
    :format(shquote(s.hist), shquote(EXE), opts or "")
  tm("new-session -d -x 100 -y 40 " .. shquote(cmd))
  function s.screen() return tm("capture-pane -p") end
  -- Waits until the screen shows text (a plain string); fails after secs
  -- (default 30: the prompt may be the ASan build on a loaded machine).
  function s.wait(text, secs)
    local deadline = os.time() + (secs or 30)
    repeat
      local scr = s.screen()
      if scr:find(text, 1, true) then return scr end
      sh("sleep 0.05")
    until os.time() > deadline
    error(("screen never showed %q; it shows:\n%s"):format(text, s.screen()), 2)
  end
  function s.type(text) tm("send-keys -l " .. shquote(text)) end
  function s.key(k) tm("send-keys " .. k) end
  function s.line(text) s.type(text); s.key("Enter") end
  function s.close()
    tm("kill-server")
    sh("rm -rf " .. shquote(dir))
  end
  local ok, err = pcall(s.wait, "for commands\n>")
  if not ok then s.close(); error(err, 2) end
  return s
end

describe("the prompt on a terminal", function()
  if not have_tmux then
    it("needs tmux (the Makefile installs it)", function()
      error("tmux is not installed: the prompt cannot be driven")
    end)
    return
  end

  local s
  before_each(function() s = session() end)
  after_each(function() if s then s.close() end end)

  it("runs each entry as a task: awaits work and results print", function()
    s.line('loom.sleep(0.2) return "awaited", 2, {1, 2, a = {b = "c"}}')
    local scr = s.wait('\n"awaited"')
    -- several values on one line (tabs between them)
    assert.is_not_nil(scr:find('\n"awaited"%s+2%s+{1, 2, a = {b = "c"}}'), scr)
    s.line("x = 40")
    s.line("x + 2")
    s.wait("\n42")
  end)

  it("prints background output above the line being typed", function()
    s.line('loom.get_running_loop():call_later(1.5, print, "from a timer")')
    s.type("half a li")
    s.wait("> half a li")
    local scr = s.wait("\nfrom a timer")
    -- the line typed so far is drawn again under the output, intact
    local after = scr:match("from a timer\n([^\n]*)")
    assert.are.equal("> half a li", after)
    s.type("ne = 1")
    s.key("Enter")
    s.line("half")   -- `half a line = 1` is a syntax error; proves the text went on
    s.wait("syntax error")
  end)

  -- Ctrl-C is a signal, not a key: it overtakes whatever keys the prompt
  -- has not read yet. So each Ctrl-C is sent only once the screen shows
  -- the state it acts on: the entry running (it printed), the line edited
  -- (the prompt is drawn again and the typed text is echoed by it).
  it("Ctrl-C cancels the running entry, or clears the line", function()
    s.line('print("entry" .. "runs") loom.sleep(100)')
    s.wait("\nentryruns")
    s.key("C-c")
    s.wait("cancelled\n>")
    s.type("never run")
    s.wait("\n> never run")
    s.key("C-c")
    s.wait("never run^C")
    s.line("'still here'")
    local scr = s.wait('"still here"')
    assert.is_nil(scr:find("syntax error", 1, true))
  end)

  it("continues an incomplete chunk over several lines", function()
    s.line("function double(n)")
    s.wait("\n>>")
    s.line("return n * 2")
    s.line("end")
    s.line("double(21)")
    s.wait("\n42")
  end)

  it(":tasks names a sleeping task with its source line; :cancel and :stack", function()
    s.line('napper = loom.create_task(function()')
    s.line('  loom.sleep(50)')
    s.line('end) napper:set_name("napper")')
    s.line(":tasks")
    local scr = s.wait("'napper' sleeping")
    local id = scr:match("Task (%d+) 'napper' sleeping, [%d.]+ s left at stdin:2")
    assert.is_not_nil(id, scr)
    -- only the user's tasks: the prompt itself runs none
    assert.is_nil(scr:find("awaiting <Future", 1, true), scr)
    s.line(":stack " .. id)
    s.wait("Stack for <Task napper pending>")
    s.line(":handles")
    s.wait("sleep in ")
    s.line(":time")
    s.line(":cancel " .. id)
    s.wait("cancelling <Task napper pending>")
    s.line("napper:cancelled()")
    s.wait("\ntrue")
    s.line(":nope")
    s.wait("unknown command ':nope'")
    s.line(":help")
    s.wait(":tasks")
  end)

  it("shows errors with their traceback and carries on", function()
    s.line('error("oops")')
    s.wait("stdin:1: oops")
    s.wait("stack traceback:")
    s.line("1 +")
    s.wait("\n>>")
    s.line("1")
    s.wait("\n2")
  end)

  it(":advance and :step need a virtual clock", function()
    s.line(":advance 1")
    s.wait("advance: the loop's clock is real")
    s.line(":step")
    s.wait("clock is real", 5)
  end)

  it("Ctrl-D leaves with status 0 and keeps the history", function()
    s.line("hist_marker = 1")
    s.line("'marked'")
    -- Ctrl-D ends the input only once the prompt is drawn again: before,
    -- the terminal is in its cooked mode, which turns ^D into a byte that
    -- libedit then reads as no end of input.
    s.wait('"marked"\n>')
    s.key("C-d")
    s.wait("EXIT=0")
    local f = io.open(s.hist)
    assert.is_not_nil(f, "no history file")
    local text = f:read("a")
    f:close()
    -- libedit writes spaces as \040
    assert.is_not_nil(text:find("hist_marker", 1, true), text)
  end)
end)

describe("the prompt on a manual virtual clock (--virtual-time)", function()
  if not have_tmux then return end
  local s
  before_each(function() s = session("--virtual-time") end)
  after_each(function() if s then s.close() end end)

  it(":step runs the next timer, :advance moves the clock, entries wait for it", function()
    s.line('loop = loom.get_running_loop() loop:call_later(5, print, "five") '
           .. 'loop:call_later(2, print, "two")')
    s.line(":time")
    s.wait("\n0.000000")
    s.line(":step")
    local scr = s.wait("ran 1:")
    assert.is_not_nil(scr:find("\ntwo\n", 1, true), scr)
    assert.is_not_nil(scr:find("time 2.000000, ran 1:\n  1. <TimerHandle", 1, true), scr)
    assert.is_nil(scr:find("five", scr:find(":step", 1, true), true), scr)
    s.line(":advance 10")
    s.wait("time 12.000000")
    s.wait("\nfive")
    s.line(":step")
    s.wait("nothing to run")
    -- an entry that sleeps waits for the clock; the prompt takes lines meanwhile
    s.line('loom.sleep(1) return "slept"')
    s.line(":advance 0.5")
    s.wait("time 12.500000")
    scr = s.screen()
    assert.is_nil(scr:find('\n"slept"', 1, true), scr)
    s.line(":advance 0.5")
    s.wait('\n"slept"')
    s.line(":advance x")
    s.wait(":advance SECONDS (a number >= 0)")
  end)
end)
