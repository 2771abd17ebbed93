---@meta _

-- Child processes (docs/subprocess.md).

---Options of `loop:subprocess_exec` and `loop:subprocess_shell`.
---@class loom.SubprocessTransportOptions
---@field stdin? integer `loom.PIPE` or `loom.DEVNULL`; `nil`: inherited
---@field stdout? integer `loom.PIPE` or `loom.DEVNULL`; `nil`: inherited
---@field stderr? integer `loom.PIPE`, `loom.DEVNULL` or `loom.STDOUT`; `nil`: inherited
---@field cwd? string the directory the child starts in
---@field env? table<string, string|number> the child's whole environment

---Options of `loom.create_subprocess_exec` and
---`loom.create_subprocess_shell`.
---@class loom.SubprocessOptions: loom.SubprocessTransportOptions
---@field limit? integer the buffer limit of the stdout and stderr readers (default 64 KiB)

---A child process (`loom.Process`).
---@class loom.Process
---@field pid integer the child's process id
---@field returncode integer|nil `nil` while the child runs; its exit status, or minus the signal that killed it
---@field stdin loom.StreamWriter|nil with `stdin = loom.PIPE`
---@field stdout loom.StreamReader|nil with `stdout = loom.PIPE`
---@field stderr loom.StreamReader|nil with `stderr = loom.PIPE`
local Process = {}

---Waits for the exit and returns `returncode`.
---@async
---@return integer
function Process:wait() end

---Writes `input` to stdin and closes it, reads stdout and stderr to EOF,
---then waits for the exit; returns stdout and stderr (each `nil` when
---not a pipe).
---@async
---@param input? string
---@return string|nil stdout
---@return string|nil stderr
function Process:communicate(input) end

---Sends a signal; `OSError` `ESRCH` once the exit is known.
---@param sig integer|string a number or a name (`"SIGTERM"`, `"term"`)
function Process:send_signal(sig) end

---Sends `SIGTERM`.
function Process:terminate() end

---Sends `SIGKILL`.
function Process:kill() end

---Closes the pipes and kills the child if it still runs. Idempotent;
---also `<close>`.
function Process:close() end

---The callbacks of `loop:subprocess_exec`. Every method is optional.
---@class loom.SubprocessProtocol
---@field connection_made? fun(self: loom.SubprocessProtocol, transport: loom.SubprocessTransport)
---@field pipe_data_received? fun(self: loom.SubprocessProtocol, fd: integer, data: string) data on stdout (1) or stderr (2)
---@field pipe_connection_lost? fun(self: loom.SubprocessProtocol, fd: integer, err: any) pipe `fd` (0, 1 or 2) is closed
---@field pause_writing? fun(self: loom.SubprocessProtocol) the stdin pipe went above its high-water mark
---@field resume_writing? fun(self: loom.SubprocessProtocol) and back to its low-water mark
---@field process_exited? fun(self: loom.SubprocessProtocol) the child exited
---@field connection_lost? fun(self: loom.SubprocessProtocol, err: any) the child exited and every pipe is closed

---The transport of a child process (`loom.SubprocessTransport`).
---@class loom.SubprocessTransport
local SubprocessTransport = {}

---@return integer
function SubprocessTransport:get_pid() end

---`nil` until the exit is known.
---@return integer|nil
function SubprocessTransport:get_returncode() end

---The transport of pipe `fd` (0, 1, 2), or `nil` when not a pipe.
---@param fd 0|1|2
---@return loom.TCPTransport|nil
function SubprocessTransport:get_pipe_transport(fd) end

---@param sig integer|string
function SubprocessTransport:send_signal(sig) end

function SubprocessTransport:terminate() end

function SubprocessTransport:kill() end

---Closes the pipes and kills the child if it still runs. Idempotent;
---also `<close>`.
function SubprocessTransport:close() end

---@return boolean
function SubprocessTransport:is_closing() end

---@return loom.SubprocessProtocol
function SubprocessTransport:get_protocol() end

---@param protocol loom.SubprocessProtocol
function SubprocessTransport:set_protocol(protocol) end

---@return loom.Loop
function SubprocessTransport:get_loop() end

---`default`: there is no extra information.
---@param name string
---@param default? any
---@return any
function SubprocessTransport:get_extra_info(name, default) end

---The protocol of a child's pipe transport: forwards to the subprocess
---protocol with the pipe's fd.
---@class loom.SubprocessPipeProtocol
local SubprocessPipeProtocol = {}

---@param data string
function SubprocessPipeProtocol:data_received(data) end

---@param err any
function SubprocessPipeProtocol:connection_lost(err) end

function SubprocessPipeProtocol:pause_writing() end

function SubprocessPipeProtocol:resume_writing() end
