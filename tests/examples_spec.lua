-- examples_spec.lua: the programs of scripts/examples/, run as they are
-- meant to be: each server is a subprocess of the executable (LOOM_EXE,
-- default build/bin/loom), started on port 0 (it prints the port it got on
-- stderr), driven by real clients (curl, nc, the echo client) and killed
-- at the end. Every command is bounded by `timeout`; the waits are
-- generous, since under the sanitizer runs LOOM_EXE is the ASan build.
--
-- Commands run through a shell that first drops LD_PRELOAD: under the
-- asan-module run the interpreter has the sanitizer runtime preloaded, and
-- curl, nc and the shell must not inherit it.

local ROOT = (function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  local p = io.popen("cd '" .. here:gsub("'", [['\'']]) .. "/..' && pwd")
  local dir = p:read("l")
  p:close()
  return dir
end)()
local EXE = os.getenv("LOOM_EXE") or (ROOT .. "/build/bin/loom")
local EXAMPLES = ROOT .. "/scripts/examples/"

local function shquote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function execute(cmd)
  local ok, how, code = os.execute("unset LD_PRELOAD; " .. cmd)
  if how == "signal" then return 128 + code end
  return code
end

-- Runs cmd (a shell command line, bounded by timeout); returns its stdout
-- and its exit status.
local function run(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; " .. cmd, "r"))
  local out = p:read("a")
  local _, how, code = p:close()
  if how == "signal" then code = 128 + code end
  return out, code
end

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function sleep(s) execute("sleep " .. s) end

-- Polls until pred() returns a true value (returned) or secs pass (nil).
local function wait_until(pred, secs)
  local deadline = os.time() + secs
  repeat
    local v = pred()
    if v then return v end
    sleep(0.05)
  until os.time() > deadline
  return pred()
end

local temps = {}
local function tmpname()
  local n = os.tmpname()
  temps[#temps + 1] = n
  return n
end

lazy_teardown(function()
  for _, n in ipairs(temps) do os.remove(n) end
end)

-- Starts scripts/examples/<name> on port 0 (then the shell-quoted
-- arguments in extra, if any); returns {pid =, port =, err =} (err: the
-- file with its stderr). Fails when no port is printed in 30 s.
local function start(name, extra)
  local err = tmpname()
  local out = run(("timeout -s KILL 300 %s %s 0 %s </dev/null >/dev/null 2>%s & echo $!")
    :format(shquote(EXE), shquote(EXAMPLES .. name), extra or "", shquote(err)))
  local pid = assert(tonumber(out:match("%d+")), "no pid")
  local port = wait_until(function()
    return tonumber(readfile(err):match("listening on [^\n]*:(%d+)\n"))
  end, 30)
  if not port then
    execute("kill -KILL " .. pid .. " 2>/dev/null")
    error(("%s did not start: %q"):format(name, readfile(err)))
  end
  return {pid = pid, port = port, err = err}
end

-- Kills a server started by start (TERM, then KILL after 10 s) and
-- returns what it printed on stderr.
local function stop(srv)
  if not srv then return "" end
  execute("kill " .. srv.pid .. " 2>/dev/null")
  if not wait_until(function() return execute("kill -0 " .. srv.pid .. " 2>/dev/null") ~= 0 end, 10) then
    execute("kill -KILL " .. srv.pid .. " 2>/dev/null")
  end
  return readfile(srv.err)
end

-- stderr of a server holds its "listening" line and nothing else (no
-- error reported by the loop's exception handler, no sanitizer report).
local function assert_quiet(name, text)
  local rest = text:gsub("^[^\n]*listening on [^\n]*\n", "")
  assert.are.equal("", rest, name .. " printed on stderr")
end

local function count(s, needle)
  local n, i = 0, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

-- Every program of scripts/examples/ and the spec that runs it and checks
-- its output. A new example needs a spec and a line here.
local COVERED = {
  ["chat_server.lua"] = "tests/examples_spec.lua",
  ["echo_client.lua"] = "tests/examples_spec.lua",
  ["echo_server.lua"] = "tests/examples_spec.lua",
  ["http_server.lua"] = "tests/examples_spec.lua",
  ["multicore_echo.lua"] = "tests/examples_spec.lua",
  ["jobs.lua"] = "tests/jobs_spec.lua",
  ["trace_demo.lua"] = "tests/trace_spec.lua",
}

describe("scripts/examples/", function()
  it("holds only programs that a spec runs", function()
    local p = assert(io.popen("unset LD_PRELOAD; ls " .. shquote(EXAMPLES)))
    local n = 0
    for name in p:lines() do
      n = n + 1
      assert(COVERED[name], "scripts/examples/" .. name .. " is run by no spec (see COVERED)")
    end
    p:close()
    local listed = 0
    for name, spec in pairs(COVERED) do
      listed = listed + 1
      local src = readfile(ROOT .. "/" .. spec)
      -- started by start(), named after EXAMPLES, or by its path
      local runs = src:find('start("' .. name .. '"', 1, true)
        or src:find('EXAMPLES .. "' .. name .. '"', 1, true)
        or src:find("/scripts/examples/" .. name, 1, true)
      assert(runs, spec .. " does not run " .. name)
    end
    assert.are.equal(listed, n, "COVERED lists a program that is not in scripts/examples/")
  end)
end)

describe("scripts/examples/http_server.lua", function()
  local srv, url
  lazy_setup(function()
    srv = start("http_server.lua")
    url = "http://127.0.0.1:" .. srv.port
  end)
  lazy_teardown(function()
    local err = stop(srv)
    assert_quiet("http_server.lua", err)
  end)

  local function curl(args)
    return run("timeout -s KILL 30 curl -sS --max-time 20 " .. args .. " 2>&1")
  end

  it("answers GET / with 200 and the body, with Content-Length", function()
    local out, code = curl("-i " .. url .. "/")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("^HTTP/1%.1 200 OK\r\n"), out)
    assert.truthy(out:find("\r\nContent%-Length: 13\r\n"), out)
    assert.truthy(out:find("\r\n\r\nHello, World!$"), out)
  end)

  it("answers 404 for another path and HEAD without a body", function()
    local out = curl("-o /dev/null -w '%{http_code}' " .. url .. "/nowhere")
    assert.are.equal("404", out)
    out = curl("-I " .. url .. "/")
    assert.truthy(out:find("^HTTP/1%.1 200 OK\r\n"), out)
    assert.truthy(out:find("Content%-Length: 13\r\n\r\n$"), out)
  end)

  it("keeps the connection alive: two URLs in one curl call use one connection", function()
    local out = curl("-w '%{http_code} %{num_connects}\\n' -o /dev/null -o /dev/null "
      .. url .. "/ " .. url .. "/?again")
    assert.are.equal("200 1\n200 0\n", out)
  end)

  it("honours Connection: close", function()
    local out = curl("-H 'Connection: close' -w '%{http_code} %{num_connects}\\n' -D - "
      .. "-o /dev/null -o /dev/null " .. url .. "/ " .. url .. "/")
    assert.are.equal(2, count(out, "Connection: close\r\n"), out)
    -- the server closed after the first response: curl connected again
    assert.truthy(out:find("200 1\n.*200 1\n$"), out)
  end)

  it("answers pipelined requests in order", function()
    local reqs = "GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"
      .. "GET /missing HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"
      .. "HEAD / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n"
      .. "GET /?last HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n"
    local out, code = run(("printf '%s' | timeout -s KILL 30 nc -q1 127.0.0.1 %d")
      :format(reqs, srv.port))
    assert.are.equal(0, code, out)
    local statuses = {}
    for s in out:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = s end
    assert.are.same({"200", "404", "200", "200"}, statuses)
    assert.are.equal(2, count(out, "Hello, World!"), out)   -- not after HEAD
    assert.truthy(out:find("Connection: close\r\n\r\nHello, World!$"), out)
  end)

  it("skips a request body and serves the next request", function()
    local reqs = "POST / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 7\\r\\n\\r\\nabc\\r\\n\\r\\n"
      .. "GET / HTTP/1.0\\r\\n\\r\\n"
    local out = run(("printf '%s' | timeout -s KILL 30 nc -q1 127.0.0.1 %d")
      :format(reqs, srv.port))
    local statuses = {}
    for s in out:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = s end
    assert.are.same({"405", "200"}, statuses)
    -- HTTP/1.0 without keep-alive: the server closes after it
    assert.truthy(out:find("Connection: close\r\n\r\nHello, World!$"), out)
  end)

  it("answers 400 to malformed requests and closes", function()
    for _, req in ipairs{
      "garbage\\r\\n\\r\\nGET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n",
      "GET / HTTP/1.1\\r\\nno colon here\\r\\n\\r\\n",
      "GET / HTTP/1.1\\r\\n\\r\\n",                      -- HTTP/1.1 without Host
      "GET / HTTP/2.0\\r\\nHost: a\\r\\n\\r\\n",
      "GET / HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: x\\r\\n\\r\\n",
    } do
      local out, code = run(("printf '%s' | timeout -s KILL 30 nc -q1 127.0.0.1 %d")
        :format(req, srv.port))
      assert.are.equal(0, code, out)
      assert.are.equal(1, count(out, "HTTP/1.1"), out)  -- nothing after the 400
      assert.truthy(out:find("^HTTP/1%.1 400 Bad Request\r\n.*Connection: close\r\n"), req)
    end
  end)

  it("answers 400 to a head longer than 8 KiB", function()
    local out = run(("{ printf 'GET / HTTP/1.1\\r\\nX: '; head -c 20000 /dev/zero | tr '\\0' a; } "
      .. "| timeout -s KILL 30 nc -q1 127.0.0.1 %d"):format(srv.port))
    assert.truthy(out:find("^HTTP/1%.1 400 Bad Request\r\n"), out)
  end)

  it("still serves after all that", function()
    local out = curl(url .. "/")
    assert.are.equal("Hello, World!", out)
  end)
end)

describe("scripts/examples/chat_server.lua", function()
  local srv
  lazy_setup(function() srv = start("chat_server.lua") end)
  lazy_teardown(function()
    local err = stop(srv)
    assert_quiet("chat_server.lua", err)
  end)

  -- Starts an nc client in the background: it sends `lines` (printf
  -- format), then keeps its side open until its output shows the plain
  -- text `upto` (without one, until it is killed; 60 s at most), and then
  -- closes it: nc quits a second later, or as soon as the server closes.
  -- A client leaves once it has what a test reads, however slow the
  -- server is. Returns the file its output goes to and its pid.
  local function client(lines, upto)
    local out = tmpname()
    local hold = upto and ("until grep -qF %s %s; do sleep 0.05; done")
      :format(shquote(upto), shquote(out)) or "sleep 60"
    local pid = run(("{ printf '%s'; timeout 60 sh -c %s; } | timeout -s KILL 90 nc -q1 127.0.0.1 %d >%s 2>&1 & echo $!")
      :format(lines, shquote(hold), srv.port, shquote(out)))
    return out, assert(tonumber(pid:match("%d+")))
  end

  -- Waits until the server has no client left: a newcomer is told that
  -- nobody else is here. Each test ends with it, so that the clients of
  -- one test are gone before the next starts. (The newcomer leaves at
  -- once, but a test still counts only the joins and leaves it makes.)
  local probes = 0
  local function wait_alone()
    return wait_until(function()
      probes = probes + 1
      local name = "probe-" .. probes
      local out = client(name .. "\\n/quit\\n", "* you are ")
      wait_until(function() return readfile(out):find("* you are ", 1, true) end, 20)
      return readfile(out):find("* you are " .. name .. "; here: nobody else\n", 1, true)
    end, 30)
  end

  it("broadcasts a client's lines to the others, names them, announces joins and leaves", function()
    local a, apid = client("alice\\n")
    assert.truthy(wait_until(function() return readfile(a):find("you are alice", 1, true) end, 20),
      readfile(a))
    local b = client("bob\\nhello all\\n/who\\n/quit\\n", "here: alice, bob")
    assert.truthy(wait_until(function() return readfile(a):find("* bob left\n", 1, true) end, 20),
      readfile(a))
    local atext = readfile(a)
    local j, m, l = atext:find("* bob joined\n", 1, true), atext:find("bob: hello all\n", 1, true),
      atext:find("* bob left\n", 1, true)
    assert.truthy(j and m and l and j < m and m < l, atext)
    assert.truthy(wait_until(function() return readfile(b):find("here: alice, bob\n", 1, true) end, 20),
      readfile(b))
    assert.truthy(readfile(b):find("you are bob; here: alice\n", 1, true), readfile(b))
    -- a client never gets its own lines back
    assert.falsy(readfile(b):find("bob: hello", 1, true), readfile(b))
    execute("kill " .. apid .. " 2>/dev/null")
    assert.truthy(wait_alone(), "alice and bob never left")
  end)

  it("gives guest-N names for an empty or taken name, and drops a client that disconnects", function()
    local a, apid = client("carol\\n")
    assert.truthy(wait_until(function() return readfile(a):find("you are carol", 1, true) end, 20))
    local g = client("\\nhi from a guest\\n", "you are guest-")
    local d = client("carol\\nsame name\\n", "you are guest-")
    assert.truthy(wait_until(function()
      local t = readfile(a)
      local _, guests_left = t:gsub("\n%* guest%-%d+ left%f[\n]", "")
      return guests_left == 2 and t:find("hi from a guest", 1, true) and t:find("same name", 1, true)
    end, 20), readfile(a))
    local atext = readfile(a)
    assert.truthy(atext:find("\nguest%-%d+: hi from a guest\n"), atext)
    assert.truthy(atext:find("\nguest%-%d+: same name\n"), atext)
    assert.falsy(atext:find("\ncarol: same name", 1, true), atext)
    assert.truthy(readfile(g):find("you are guest-", 1, true), readfile(g))
    assert.truthy(readfile(d):find("you are guest-", 1, true), readfile(d))
    execute("kill " .. apid .. " 2>/dev/null")
    -- once carol's nc is gone, a newcomer finds nobody else
    assert.truthy(wait_alone(), "carol never left")
  end)
end)

describe("scripts/examples/echo_client.lua against echo_server.lua", function()
  local srv
  lazy_setup(function() srv = start("echo_server.lua") end)
  lazy_teardown(function()
    local err = stop(srv)
    assert_quiet("echo_server.lua", err)
  end)

  local function client(args, stdin)
    local cmd = ("timeout -s KILL 60 %s %s %s"):format(shquote(EXE),
      shquote(EXAMPLES .. "echo_client.lua"), args)
    if stdin then cmd = ("printf '%s' | %s"):format(stdin, cmd) else cmd = cmd .. " </dev/null" end
    return run(cmd .. " 2>&1")
  end

  it("sends its arguments and prints the echoes", function()
    local out, code = client(srv.port .. " hello 'two words' ''")
    assert.are.equal(0, code, out)
    assert.are.equal("hello\ntwo words\n\n", out)
  end)

  it("sends the lines of stdin (HOST:PORT form)", function()
    local out, code = client("127.0.0.1:" .. srv.port, "one\\ntwo\\n\\nlast without newline")
    assert.are.equal(0, code, out)
    assert.are.equal("one\ntwo\n\nlast without newline\n", out)
  end)

  it("exits with status 1 when it cannot connect", function()
    -- a port that was free a moment ago: bind 0 with a throwaway server
    local tmp = start("echo_server.lua")
    stop(tmp)
    local out, code = client(tmp.port .. " x")
    assert.are.equal(1, code, out)
    assert.truthy(out:find("cannot connect", 1, true), out)
  end)
end)

describe("scripts/examples/echo_server.lua in buffered mode", function()
  local srv
  lazy_setup(function() srv = start("echo_server.lua", "127.0.0.1 buffered") end)
  lazy_teardown(function()
    local err = stop(srv)
    assert_quiet("echo_server.lua", err)
  end)

  it("says its mode and echoes small and large messages, every byte", function()
    assert.truthy(readfile(srv.err):find("echo_server: buffered API, listening on",
      1, true), readfile(srv.err))
    local out, code = run(("timeout -s KILL 60 %s %s %s hello 'two words' "
      .. "</dev/null 2>&1"):format(shquote(EXE),
      shquote(EXAMPLES .. "echo_client.lua"), srv.port))
    assert.are.equal(0, code, out)
    assert.are.equal("hello\ntwo words\n", out)
    -- 4 MiB each from four connections at once through the one shared
    -- Buffer (256 KiB): many reads, interleaved, and writes the sockets
    -- do not take whole while the clients do not read (what is queued
    -- must be a copy, not the Buffer the next read fills)
    local prog = tmpname()
    local f = assert(io.open(prog, "w"))
    f:write(([[
      local loop = loom.get_running_loop()
      local function one(k)
        local parts, lost = {}, loop:create_future()
        local t = loop:create_connection(function()
          return { data_received = function(_, d) parts[#parts + 1] = d end,
                   connection_lost = function() lost:set_result(true) end }
        end, "127.0.0.1", %d)
        local b = {}             -- 251 bytes: no period of a power of two
        for i = 1, 251 do b[i] = string.char((i * 7 + k * 31) %% 256) end
        local data = table.concat(b):rep(4 * 1024 * 1024 // 251 + 1)
          :sub(1, 4 * 1024 * 1024)
        t:pause_reading()        -- the echo waits: the server's sockets
        t:write(data)            -- fill and its writes queue copies
        t:write_eof()
        loom.sleep(0.3)
        t:resume_reading()
        lost:await()
        local got = table.concat(parts)
        return #got .. " " .. tostring(got == data)
      end
      local ts = {}
      for k = 1, 4 do ts[k] = loom.create_task(one, k) end
      print(table.concat({loom.gather(table.unpack(ts))}, ","))
    ]]):format(srv.port))
    f:close()
    local out2, code2 = run(("timeout -s KILL 60 %s %s </dev/null 2>&1")
      :format(shquote(EXE), shquote(prog)))
    os.remove(prog)
    assert.are.equal(0, code2, out2)
    assert.are.equal(("4194304 true,"):rep(3) .. "4194304 true\n", out2)
  end)

  it("refuses an unknown mode", function()
    local out, code = run(("timeout -s KILL 60 %s %s 0 127.0.0.1 nosuch "
      .. "</dev/null 2>&1"):format(shquote(EXE),
      shquote(EXAMPLES .. "echo_server.lua")))
    assert.are.equal(2, code, out)
    assert.truthy(out:find("protocol, streams or buffered", 1, true), out)
  end)
end)

describe("scripts/examples/multicore_echo.lua", function()
  local srv
  lazy_setup(function() srv = start("multicore_echo.lua", "127.0.0.1 3") end)
  lazy_teardown(function()
    local err = stop(srv)
    assert_quiet("multicore_echo.lua", err)
  end)

  -- The number of listening TCP sockets on 127.0.0.1:port.
  local function listeners(port)
    local n = 0
    local want = ("0100007F:%04X"):format(port)
    for line in io.lines("/proc/net/tcp") do
      local localaddr, st = line:match("^%s*%d+: (%x+:%x+) %x+:%x+ (%x+)")
      if localaddr == want and st == "0A" then n = n + 1 end
    end
    return n
  end

  it("runs one loop per thread, each listening on the same port", function()
    assert.truthy(readfile(srv.err):find("multicore_echo: 3 loops, listening on 127.0.0.1:"
      .. srv.port .. "\n", 1, true), readfile(srv.err))
    assert.are.equal(3, listeners(srv.port))
  end)

  it("echoes for many clients at once, whichever loop takes them", function()
    local outs, cmds = {}, {}
    for i = 1, 24 do
      outs[i] = tmpname()
      cmds[i] = ("timeout -s KILL 60 %s %s %d 'client %d' 'line two' </dev/null >%s 2>&1 &")
        :format(shquote(EXE), shquote(EXAMPLES .. "echo_client.lua"), srv.port, i,
                shquote(outs[i]))
    end
    execute(table.concat(cmds, " ") .. " wait")
    for i = 1, 24 do
      assert.are.equal(("client %d\nline two\n"):format(i), readfile(outs[i]))
    end
  end)
end)
