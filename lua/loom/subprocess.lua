-- loom.subprocess: create_subprocess_exec, create_subprocess_shell and
-- the Process object, after asyncio's subprocess.py.
--
-- The spawning, the pipes and the exit are C (host/process.c: the
-- protocol API, loop:subprocess_exec and loop:subprocess_shell); this
-- file is asyncio's SubprocessStreamProtocol, which turns the pipes
-- into a StreamWriter (stdin) and StreamReaders (stdout, stderr), and
-- the Process that waits and communicates.

local core = require "loom.core"
local streams = require "loom.streams"
local errors = require "loom.errors"
local util = require "loom.util"

local type, error, pcall, pairs, ipairs, setmetatable, getmetatable, tostring =
  type, error, pcall, pairs, ipairs, setmetatable, getmetatable, tostring
local remove = table.remove
local pack, unpack = table.pack, table.unpack
local mtype = math.type
local typename = util.typename

local await = core.await
local running_loop = core._get_running_loop
local OSError = errors.OSError
local gather = require("loom.combinators").gather
local label = require("loom.introspect")._label

local M = {}

M.PIPE = core.PIPE
M.STDOUT = core.STDOUT
M.DEVNULL = core.DEVNULL


---------------------------------------------------------------- protocol

-- asyncio's SubprocessStreamProtocol. The stdin writer's flow control
-- (drain, wait_closed) is a StreamReaderProtocol of its own, fed with the
-- stdin pipe's pause_writing, resume_writing and connection_lost.
local Protocol = {}
Protocol.__index = Protocol
Protocol.__name = "loom.SubprocessStreamProtocol"

local function new_protocol(limit)
  return setmetatable({ _limit = limit, _exit_waiters = {}, _nout = 0,
                        _exited = false }, Protocol)
end

function Protocol:connection_made(transport)
  self._transport = transport
  for fd = 1, 2 do
    local pipe = transport:get_pipe_transport(fd)
    if pipe ~= nil then
      local reader = core._StreamReader(self._limit)
      reader:set_transport(pipe)
      self[fd == 1 and "stdout" or "stderr"] = reader
      self._nout = self._nout + 1
    end
  end
  local pipe = transport:get_pipe_transport(0)
  if pipe ~= nil then
    local flow = streams.StreamReaderProtocol(core._StreamReader())
    self._stdin_flow = flow
    self.stdin = streams.StreamWriter(pipe, flow)
  end
end

function Protocol:pipe_data_received(fd, data)
  local reader = fd == 1 and self.stdout or fd == 2 and self.stderr or nil
  if reader ~= nil then reader:feed_data(data) end
end

-- asyncio's _maybe_close_transport: once the child exited and its
-- output pipes are closed, the transport is closed (and with it a stdin
-- pipe that something else still holds open).
local function maybe_close(self)
  if self._nout == 0 and self._exited and self._transport ~= nil then
    local t = self._transport
    self._transport = nil
    t:close()
  end
end

function Protocol:pipe_connection_lost(fd, err)
  if fd == 0 then
    if self._stdin_flow ~= nil then self._stdin_flow:connection_lost(err) end
    return
  end
  local reader = fd == 1 and self.stdout or fd == 2 and self.stderr or nil
  if reader ~= nil then
    if err == nil then reader:feed_eof() else reader:set_exception(err) end
    self._nout = self._nout - 1
  end
  maybe_close(self)
end

function Protocol:pause_writing()
  if self._stdin_flow ~= nil then self._stdin_flow:pause_writing() end
end

function Protocol:resume_writing()
  if self._stdin_flow ~= nil then self._stdin_flow:resume_writing() end
end

function Protocol:process_exited()
  self._exited = true
  local rc = self._transport:get_returncode()
  local waiters = self._exit_waiters
  self._exit_waiters = {}
  for _, fut in ipairs(waiters) do
    if not fut:done() then fut:set_result(rc) end
  end
  maybe_close(self)
end


---------------------------------------------------------------- Process

local Process = {}
local ProcessMT = {
  __name = "loom.Process",
  -- returncode is read from the transport each time, as asyncio's
  -- property: nil while the child runs.
  __index = function(self, k)
    if k == "returncode" then
      return self._transport:get_returncode()
    end
    return Process[k]
  end,
}

local function checkself(self, fname)
  if getmetatable(self) ~= ProcessMT then
    error(("bad argument #1 to '%s' (loom.Process expected, got %s)")
      :format(fname, typename(self)), 3)
  end
end

-- wait() -> returncode: awaits the child's exit (inside a task).
-- Returns at once once it is known. Cancelling the wait leaves the child
-- running.
function Process:wait()
  checkself(self, "wait")
  local t = self._transport
  local rc = t:get_returncode()
  if rc ~= nil then return rc end
  local loop = running_loop()
  if loop == nil then error("wait: no running event loop", 2) end
  local fut = label(loop:create_future(), ("the exit of process %d")
                                          :format(self.pid))
  local waiters = self._protocol._exit_waiters
  waiters[#waiters + 1] = fut
  local ok, e = pcall(await, fut)
  if not ok then
    waiters = self._protocol._exit_waiters
    for i = #waiters, 1, -1 do
      if waiters[i] == fut then remove(waiters, i); break end
    end
    error(e, 0)
  end
  return t:get_returncode()
end

-- Writes input (if any) to stdin, drains, closes stdin. A child that
-- closed its stdin first (exited, or does not read it) is not an error,
-- as in asyncio.
local function feed_stdin(self, input)
  local w = self.stdin
  if input ~= nil then w:write(input) end
  local ok, e = pcall(w.drain, w)
  if not ok and not (OSError:is(e) and (e.code == "EPIPE"
                                        or e.code == "ECONNRESET")) then
    error(e, 0)
  end
  w:close()
end

-- Reads the stream of fd to EOF, then closes its pipe.
local function read_all(self, fd)
  local s = self[fd == 1 and "stdout" or "stderr"]:read()
  self._transport:get_pipe_transport(fd):close()
  return s
end

local function noop() end

-- communicate([input]) -> stdout, stderr: writes input to stdin and
-- closes it, reads stdout and stderr to EOF at the same time (each nil
-- when not a pipe), then waits for the exit. Inside a task.
function Process:communicate(input)
  checkself(self, "communicate")
  if input ~= nil and type(input) ~= "string" then
    error(("bad argument #1 to 'communicate' (string expected, got %s)")
      :format(typename(input)), 2)
  end
  if input ~= nil and self.stdin == nil then
    error("communicate: input given but stdin is not a pipe "
      .. "(opts.stdin = loom.PIPE)", 2)
  end
  local loop = running_loop()
  if loop == nil then error("communicate: no running event loop", 2) end
  if core.current_task(loop) == nil then
    error("communicate: not inside a task", 2)
  end
  local _, out, err = gather(
    self.stdin and function() feed_stdin(self, input) end or noop,
    self.stdout and function() return read_all(self, 1) end or noop,
    self.stderr and function() return read_all(self, 2) end or noop)
  self:wait()
  return out, err
end

-- send_signal(sig): sig a number or a name ("SIGTERM", "TERM"). Raises an
-- OSError ESRCH once the child's exit is known.
function Process:send_signal(sig)
  checkself(self, "send_signal")
  local t = self._transport
  local ok, e = pcall(t.send_signal, t, sig)
  if not ok then error(e, 2) end        -- point at the caller
end

function Process:terminate()
  checkself(self, "terminate")
  return self._transport:terminate()
end

function Process:kill()
  checkself(self, "kill")
  return self._transport:kill()
end

-- close(): closes the pipes and kills the child if it still runs (what
-- asyncio's transport close does); the exit is reaped in the background.
-- Also __close.
function Process:close()
  checkself(self, "close")
  self._transport:close()
end

ProcessMT.__close = function(self) self._transport:close() end

function ProcessMT.__tostring(self)
  local rc = self._transport:get_returncode()
  return ("loom.Process (pid %d, %s)"):format(self.pid,
    rc == nil and "running" or "returncode " .. rc)
end


---------------------------------------------------------------- creation

-- Splits the options at argument n of fname: the reader limit, and a
-- copy of the rest for the core (nil when there is none).
local function split_opts(opts, fname, n)
  if opts == nil then return nil, nil end
  local limit, rest = nil, {}
  for k, v in pairs(opts) do
    if k == "limit" then limit = v else rest[k] = v end
  end
  if limit ~= nil and (mtype(limit) ~= "integer" or limit <= 0) then
    error(("bad argument #%d to '%s' (limit must be a positive integer, "
      .. "got %s)"):format(n, fname, tostring(limit)), 3)
  end
  return limit, rest
end

local function create(fname, shell, ...)
  local args = pack(...)
  local n = args.n
  local limit
  if n > 1 and type(args[n]) == "table" then
    limit, args[n] = split_opts(args[n], fname, n)
  end
  local loop = running_loop()
  if loop == nil then error(fname .. ": no running event loop", 2) end
  local protocol = new_protocol(limit)
  local transport = core._spawn(loop, fname, shell,
                                function() return protocol end,
                                unpack(args, 1, n))
  return setmetatable({
    pid = transport:get_pid(),
    stdin = protocol.stdin, stdout = protocol.stdout,
    stderr = protocol.stderr,
    _transport = transport, _protocol = protocol,
  }, ProcessMT)
end

-- create_subprocess_exec(program, arg..., [opts]) -> Process. program
-- is searched in PATH as execvp does; no shell. opts: stdin, stdout,
-- stderr (loom.PIPE, loom.DEVNULL, loom.STDOUT for stderr, nil to
-- inherit), cwd, env, limit (of the readers).
function M.create_subprocess_exec(...)
  return create("create_subprocess_exec", false, ...)
end

-- create_subprocess_shell(cmd, [opts]) -> Process: /bin/sh -c cmd.
function M.create_subprocess_shell(...)
  return create("create_subprocess_shell", true, ...)
end

return M
