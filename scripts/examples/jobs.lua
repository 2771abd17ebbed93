-- jobs.lua: a parallel job runner.
--   build/bin/loom scripts/examples/jobs.lua [-j N] [-t SECS] [-f FILE] [COMMAND ...]
-- Runs each COMMAND (a /bin/sh command line), and each line of FILE
-- ("-" for stdin; blank lines and lines starting with # skipped), at
-- most N at a time (default 4). A job is named "NAME: command" or gets
-- its number as name. Each line a job writes is printed as it comes,
-- "[NAME] line": its stdout on stdout, its stderr on stderr. A job still
-- running after SECS seconds is terminated. At the end every job's exit
-- code is reported on stdout, in order; the exit status is 0 when every
-- job exited 0, 1 otherwise, 2 for bad usage. Ctrl-C cancels the
-- running jobs (their processes are killed as their scopes close).
local loom = require "loom"

local USAGE = "usage: jobs.lua [-j N] [-t SECS] [-f FILE] [COMMAND ...]\n"

local function usage(msg)
  io.stderr:write("jobs: ", msg, "\n", USAGE)
  os.exit(2)
end

local jobs, width, timeout = {}, 4, nil

local function add(spec)
  local name, cmd = spec:match("^([%w_.%-]+):%s+(.+)$")
  if name == nil then name, cmd = tostring(#jobs + 1), spec end
  jobs[#jobs + 1] = { name = name, cmd = cmd }
end

local function add_file(path)
  local f = io.stdin
  if path ~= "-" then
    local err
    f, err = io.open(path, "r")
    if f == nil then usage(err) end
  end
  for line in f:lines() do
    if line:find("%S") and not line:find("^%s*#") then add(line) end
  end
  if f ~= io.stdin then f:close() end
end

local args = arg or {}
local i = 1
while i <= #args do
  local a = args[i]
  if a == "-j" or a == "-t" or a == "-f" then
    local v = args[i + 1] or usage(a .. " needs a value")
    if a == "-j" then
      width = math.tointeger(tonumber(v))
      if width == nil or width < 1 then usage("-j needs a positive integer") end
    elseif a == "-t" then
      timeout = tonumber(v)
      if timeout == nil or timeout <= 0 then usage("-t needs a positive number") end
    else
      add_file(v)
    end
    i = i + 2
  elseif a == "--" then
    for k = i + 1, #args do add(args[k]) end
    break
  elseif a:sub(1, 1) == "-" and #a > 1 then
    usage("unknown option " .. a)
  else
    add(a)
    i = i + 1
  end
end
if #jobs == 0 then usage("no job to run") end

-- Copies the lines of reader to out, each prefixed (a last line without
-- its newline gets one).
local function pump(reader, out, prefix)
  for line in reader:lines() do
    if line:sub(-1) ~= "\n" then line = line .. "\n" end
    out:write(prefix, line)
    out:flush()
  end
end

-- Runs one job to its end; sets job.rc, job.secs and job.timed_out.
local function run_job(job)
  local loop = loom.get_running_loop()
  local t0 = loop:time()
  local p <close> = loom.create_subprocess_shell(job.cmd,
    { stdin = loom.DEVNULL, stdout = loom.PIPE, stderr = loom.PIPE })
  local prefix = "[" .. job.name .. "] "
  local ok, err = pcall(loom.wait_for, function()
    loom.gather(function() pump(p.stdout, io.stdout, prefix) end,
                function() pump(p.stderr, io.stderr, prefix) end)
    return p:wait()
  end, timeout)
  if not ok then
    if not loom.TimeoutError:is(err) then error(err, 0) end
    job.timed_out = true
    p:terminate()
  end
  job.rc = p:wait()
  job.secs = loop:time() - t0
end

local slots = loom.Semaphore(width)
loom.task_group(function(tg)
  for _, job in ipairs(jobs) do
    slots:acquire()
    tg:create_task(function()
      local ok, err = pcall(run_job, job)
      slots:release()
      if not ok then
        job.error = tostring(err)
        if loom.CancelledError:is(err) then error(err, 0) end
      end
    end)
  end
end)

local failed = 0
for _, job in ipairs(jobs) do
  local how
  if job.error then
    how = "error: " .. job.error
  elseif job.rc < 0 then
    how = ("killed by signal %d%s"):format(-job.rc, job.timed_out and " (timeout)" or "")
  else
    how = "exit " .. job.rc
  end
  if job.rc ~= 0 then failed = failed + 1 end
  io.stdout:write(("%-4s [%s] %s%s\n"):format(job.rc == 0 and "ok" or "FAIL", job.name, how,
    job.secs and (" in %.2f s"):format(job.secs) or ""))
end
io.stdout:write(("jobs: %d run, %d failed\n"):format(#jobs, failed))
if failed > 0 then os.exit(1) end
