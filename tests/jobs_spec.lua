-- jobs_spec.lua: scripts/examples/jobs.lua, the parallel job runner, run
-- as examples_spec.lua runs the examples: a subprocess of the executable
-- (LOOM_EXE, default build/bin/loom), through a shell that drops
-- LD_PRELOAD (under the asan-module run the interpreter has the
-- sanitizer runtime preloaded; the programs run here must not inherit
-- it), every command bounded by `timeout`.

local ROOT = (function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  local p = io.popen("cd '" .. here:gsub("'", [['\'']]) .. "/..' && pwd")
  local dir = p:read("l")
  p:close()
  return dir
end)()
local EXE = os.getenv("LOOM_EXE") or (ROOT .. "/build/bin/loom")
local JOBS = ROOT .. "/scripts/examples/jobs.lua"

local function shquote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function readfile(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
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

-- Runs jobs.lua with the arguments (each quoted), stdin from the string
-- input (or /dev/null); returns its stdout, its stderr, its exit status
-- and the seconds it took.
local function jobs(args, input)
  local out, err, inp = tmpname(), tmpname(), "/dev/null"
  if input then
    inp = tmpname()
    local f = assert(io.open(inp, "wb"))
    f:write(input)
    f:close()
  end
  local q = {}
  for i, a in ipairs(args) do q[i] = shquote(a) end
  local cmd = ("unset LD_PRELOAD; start=$(date +%%s.%%N); timeout -s KILL 120 %s %s %s <%s >%s 2>%s; "
    .. "rc=$?; echo $rc $(date +%%s.%%N) $start"):format(shquote(EXE), shquote(JOBS),
    table.concat(q, " "), shquote(inp), shquote(out), shquote(err))
  local p = assert(io.popen(cmd))
  local line = p:read("a")
  p:close()
  local rc, t1, t0 = line:match("(%d+) (%S+) (%S+)")
  return readfile(out), readfile(err), tonumber(rc), tonumber(t1) - tonumber(t0)
end

-- The lines of s as a list.
local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]*\n") do t[#t + 1] = l end
  return t
end

-- The lines of s that start with prefix, in order.
local function tagged(s, prefix)
  local t = {}
  for _, l in ipairs(lines(s)) do
    if l:sub(1, #prefix) == prefix then t[#t + 1] = l end
  end
  return t
end

describe("scripts/examples/jobs.lua", function()
  it("prefixes each line of each job with its name, stdout and stderr apart", function()
    local out, err, rc = jobs {
      "a: echo one; echo two >&2; echo three",
      "printf 'x\\ny\\nno newline'",
      "b: echo only-b",
    }
    assert.are.equal(0, rc)
    assert.are.same({ "[a] one\n", "[a] three\n" }, tagged(out, "[a] "))
    assert.are.same({ "[2] x\n", "[2] y\n", "[2] no newline\n" }, tagged(out, "[2] "))
    assert.are.same({ "[b] only-b\n" }, tagged(out, "[b] "))
    assert.are.equal("[a] two\n", err)
    assert.truthy(out:find("jobs: 3 run, 0 failed\n", 1, true))
  end)

  it("reports every exit code in order and exits 1 when a job failed", function()
    local out, _, rc = jobs { "ok: true", "three: exit 3", "last: kill -9 $$" }
    assert.are.equal(1, rc)
    local report = {}
    for _, l in ipairs(lines(out)) do
      if l:find("^ok ") or l:find("^FAIL ") then report[#report + 1] = l:gsub(" in %S+ s", "") end
    end
    assert.are.same({
      "ok   [ok] exit 0\n",
      "FAIL [three] exit 3\n",
      "FAIL [last] killed by signal 9\n",
    }, report)
    assert.truthy(out:find("jobs: 3 run, 2 failed\n", 1, true))
  end)

  -- Each job marks itself running in a directory of its own. With -j 2 a
  -- job notes how many are marked: never more than two. With -j 6 each
  -- job waits until all six are marked, which they only ever are if they
  -- run at once (not a bound on the time they take: a loaded machine may
  -- take long to start six processes).
  it("runs at most -j N jobs at once", function()
    local dir, log = tmpname(), tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. shquote(dir)))
    local specs = {}
    for i = 1, 6 do
      local mark = shquote(dir .. "/" .. i)
      specs[i] = ("touch %s; ls %s | wc -l >> %s; sleep 0.4; rm %s")
        :format(mark, shquote(dir), shquote(log), mark)
    end
    local _, _, rc, secs = jobs { "-j", "2", table.unpack(specs) }
    assert.are.equal(0, rc)
    assert.is_true(secs >= 1.2, ("6 jobs of 0.4 s, 2 at once, took %.2f s"):format(secs))
    local counts = {}
    for n in readfile(log):gmatch("%d+") do counts[#counts + 1] = tonumber(n) end
    assert.are.equal(6, #counts)
    for _, n in ipairs(counts) do assert.is_true(n >= 1 and n <= 2, readfile(log)) end
    for i = 1, 6 do
      specs[i] = ("touch %s; timeout 60 sh -c 'until [ $(ls %s | wc -l) -ge 6 ]; do sleep 0.05; done'")
        :format(shquote(dir .. "/all" .. i), dir)
    end
    local out2, _, rc2 = jobs { "-j", "6", table.unpack(specs) }
    os.execute("rm -rf " .. shquote(dir))
    assert.are.equal(0, rc2, out2)
  end)

  it("streams a job's lines as they come, not at its end", function()
    local out, flag = tmpname(), tmpname()
    os.remove(flag)
    -- the job prints, then waits until the test saw the line
    local cmd = ("unset LD_PRELOAD; timeout -s KILL 60 %s %s %s >%s 2>&1 </dev/null & echo $!")
      :format(shquote(EXE), shquote(JOBS),
        shquote("w: echo first; while [ ! -e " .. flag .. " ]; do sleep 0.05; done; echo second"),
        shquote(out))
    local p = assert(io.popen(cmd))
    local pid = p:read("a"):match("%d+")
    p:close()
    local saw = false
    for _ = 1, 600 do
      if readfile(out):find("[w] first\n", 1, true) then saw = true; break end
      os.execute("sleep 0.05")
    end
    assert.is_true(saw, "the first line did not come while the job ran")
    assert.is_nil(readfile(out):find("second", 1, true))
    assert(io.open(flag, "w")):close()
    temps[#temps + 1] = flag
    for _ = 1, 600 do
      if readfile(out):find("jobs: 1 run", 1, true) then break end
      os.execute("sleep 0.05")
    end
    os.execute("kill " .. pid .. " 2>/dev/null")
    assert.are.same({ "[w] first\n", "[w] second\n" }, tagged(readfile(out), "[w] "))
  end)

  it("reads jobs from a file and from stdin, skipping blanks and comments", function()
    local file = tmpname()
    local f = assert(io.open(file, "w"))
    f:write("# a comment\n\nfirst: echo from-file\n   \necho numbered\n")
    f:close()
    local out, _, rc = jobs { "-f", file, "echo from-args" }
    assert.are.equal(0, rc)
    assert.are.same({ "[first] from-file\n" }, tagged(out, "[first] "))
    assert.are.same({ "[2] numbered\n" }, tagged(out, "[2] "))
    assert.are.same({ "[3] from-args\n" }, tagged(out, "[3] "))
    out, _, rc = jobs({ "-f", "-" }, "s: echo from-stdin\n")
    assert.are.equal(0, rc)
    assert.are.same({ "[s] from-stdin\n" }, tagged(out, "[s] "))
  end)

  it("terminates a job that runs past -t SECS", function()
    local out, _, rc, secs = jobs { "-t", "0.3", "slow: echo started; exec sleep 30", "fast: true" }
    assert.are.equal(1, rc)
    assert.truthy(out:find("[slow] started\n", 1, true))
    assert.truthy(out:find("FAIL [slow] killed by signal 15 (timeout)", 1, true))
    assert.truthy(out:find("ok   [fast] exit 0", 1, true))
    assert.is_true(secs < 20)
  end)

  it("exits 2 with a usage message on bad usage", function()
    for _, args in ipairs { {}, { "-j", "0", "true" }, { "-x" }, { "-t" },
                            { "-f", "/nonexistent/jobs" } } do
      local out, err, rc = jobs(args)
      assert.are.equal(2, rc)
      assert.are.equal("", out)
      assert.truthy(err:find("usage: jobs.lua", 1, true))
    end
  end)
end)
