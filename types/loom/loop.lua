---@meta _

-- The event loop and its handles (docs/manual.md), with the loop methods
-- of every other page: networking (docs/net.md, docs/udp.md), names
-- (docs/dns.md), signals, file descriptors, subprocesses, files and
-- threads.

---Options of `loom.new_event_loop`.
---@class loom.LoopOptions
---@field virtual_time? boolean|"manual" `true`: the clock jumps to the next timer when nothing else can happen; `"manual"`: it moves only with `loop:_advance`
---@field debug? boolean debug mode: slow callbacks are reported

---The context of an error given to the exception handler.
---@class loom.ExceptionContext
---@field message? string what happened
---@field exception? any the error value
---@field traceback? string
---@field handle? loom.Handle
---@field future? loom.Future
---@field task? loom.Task
---@field transport? any
---@field protocol? table
---@field server? loom.Server
---@field duration? number seconds a slow callback took (debug mode)
---@field [string] any

---An event loop (`loom.Loop`): runs callbacks, timers, tasks and I/O.
---@class loom.Loop
local Loop = {}


---------------------------------------------------------------- running

---Runs until the future is done (a function is first made a task of
---`fn(...)`); returns its results or raises its error.
---@param fut loom.Future
---@return any ...
---@overload fun(self: loom.Loop, fn: fun(...: any): ..., ...: any): ...
function Loop:run_until_complete(fut) end

---Runs until `stop()` is called.
function Loop:run_forever() end

---The loop stops after the current iteration.
function Loop:stop() end

---@return boolean
function Loop:is_running() end

---@return boolean
function Loop:is_closed() end

---Drops pending callbacks and timers and frees the loop; idempotent; an
---error on a running loop.
function Loop:close() end

---The loop's clock, in seconds (monotonic; virtual on a virtual-time
---loop).
---@return number
function Loop:time() end


---------------------------------------------------------------- callbacks and timers

---`cb(...)` in the next iteration.
---@param cb fun(...: any)
---@param ... any arguments for `cb`
---@return loom.Handle
function Loop:call_soon(cb, ...) end

---`call_soon` that also wakes a loop blocked in its poll.
---@param cb fun(...: any)
---@param ... any arguments for `cb`
---@return loom.Handle
function Loop:call_soon_threadsafe(cb, ...) end

---`cb(...)` after `delay` seconds.
---@param delay number seconds, >= 0
---@param cb fun(...: any)
---@param ... any arguments for `cb`
---@return loom.TimerHandle
function Loop:call_later(delay, cb, ...) end

---`cb(...)` at loop time `when`.
---@param when number
---@param cb fun(...: any)
---@param ... any arguments for `cb`
---@return loom.TimerHandle
function Loop:call_at(when, cb, ...) end


---------------------------------------------------------------- futures and tasks

---@return loom.Future
function Loop:create_future() end

---A new task running `fn(...)` (its first step in the next iteration);
---with a task factory set, `factory(loop, fn, ...)`.
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return loom.Task
function Loop:create_task(fn, ...) end

---@param factory (fun(loop: loom.Loop, fn: function, ...: any): loom.Task)|nil
function Loop:set_task_factory(factory) end

---@return (fun(loop: loom.Loop, fn: function, ...: any): loom.Task)|nil
function Loop:get_task_factory() end


---------------------------------------------------------------- errors and debug mode

---@param handler (fun(loop: loom.Loop, ctx: loom.ExceptionContext))|nil
function Loop:set_exception_handler(handler) end

---@return (fun(loop: loom.Loop, ctx: loom.ExceptionContext))|nil
function Loop:get_exception_handler() end

---Writes the context to `io.stderr`.
---@param ctx loom.ExceptionContext
function Loop:default_exception_handler(ctx) end

---Calls the exception handler (or the default one).
---@param ctx loom.ExceptionContext
function Loop:call_exception_handler(ctx) end

---@param enabled boolean
function Loop:set_debug(enabled) end

---@return boolean
function Loop:get_debug() end

---Gets, and with an argument sets, the debug-mode threshold for slow
---callbacks (default 0.1 s).
---@param seconds? number
---@return number
function Loop:slow_callback_duration(seconds) end

---Kept for asyncio's shutdown sequence; does nothing.
function Loop:shutdown_asyncgens() end


---------------------------------------------------------------- threads (docs/threads.md)

---Runs `fn(...)` in `executor` (`nil`: the loop's default executor) and
---returns a future of the loop for its results.
---@param executor loom.ThreadPoolExecutor|nil
---@param fn fun(...: any): ...
---@param ... any copied to the worker
---@return loom.Future
function Loop:run_in_executor(executor, fn, ...) end

---Shuts the default executor down and waits for its running jobs
---(awaiting inside a task, blocking outside a running loop).
---@async
function Loop:shutdown_default_executor() end


---------------------------------------------------------------- file descriptors (docs/fds.md)

---Runs `cb(...)` in each iteration in which `fd` is readable.
---@param fd integer
---@param cb fun(...: any)
---@param ... any arguments for `cb`
function Loop:add_reader(fd, cb, ...) end

---@param fd integer
---@return boolean removed
function Loop:remove_reader(fd) end

---Runs `cb(...)` in each iteration in which `fd` is writable.
---@param fd integer
---@param cb fun(...: any)
---@param ... any arguments for `cb`
function Loop:add_writer(fd, cb, ...) end

---@param fd integer
---@return boolean removed
function Loop:remove_writer(fd) end


---------------------------------------------------------------- signals (docs/signals.md)

---`cb(...)` runs as a loop callback each time signal `sig` arrives.
---@param sig integer|string a number or a name: `"SIGTERM"`, `"term"`
---@param cb fun(...: any)
---@param ... any arguments for `cb`
function Loop:add_signal_handler(sig, cb, ...) end

---@param sig integer|string
---@return boolean removed
function Loop:remove_signal_handler(sig) end


---------------------------------------------------------------- networking (docs/net.md, docs/udp.md)

---Binds and listens; each connection gets `protocol_factory()`. Does not
---suspend for a numeric host (a name needs a task).
---@param protocol_factory fun(): loom.Protocol
---@param host string|string[]|nil `nil`: all IPv4 interfaces
---@param port integer 0..65535; 0 picks a free port
---@param opts? loom.CreateServerOptions
---@return loom.Server
function Loop:create_server(protocol_factory, host, port, opts) end

---Connects; returns the transport and the protocol after
---`connection_made` ran (with `opts.ssl`, after the TLS handshake; its
---failure is raised, a `loom.SSLCertVerificationError` for a certificate
---that does not verify).
---@async
---@param protocol_factory fun(): loom.Protocol
---@param host string
---@param port integer
---@param opts? loom.CreateConnectionOptions
---@return loom.TCPTransport|loom.TLSTransport transport a `loom.TLSTransport` with `opts.ssl`
---@return loom.Protocol protocol
function Loop:create_connection(protocol_factory, host, port, opts) end

---Listens on a Unix domain socket at `path` (`"\0name"`: Linux's
---abstract namespace).
---@param protocol_factory fun(): loom.Protocol
---@param path string
---@param opts? loom.CreateUnixServerOptions
---@return loom.Server
function Loop:create_unix_server(protocol_factory, path, opts) end

---Connects to a Unix domain socket.
---@async
---@param protocol_factory fun(): loom.Protocol
---@param path string
---@param opts? loom.CreateUnixConnectionOptions
---@return loom.TCPTransport|loom.TLSTransport transport a `loom.TLSTransport` with `opts.ssl`
---@return loom.Protocol protocol
function Loop:create_unix_connection(protocol_factory, path, opts) end

---A UDP socket with a transport and a protocol; numeric addresses only,
---so it never suspends.
---@param protocol_factory fun(): loom.DatagramProtocol
---@param opts? loom.DatagramEndpointOptions
---@return loom.DatagramTransport transport
---@return loom.DatagramProtocol protocol
function Loop:create_datagram_endpoint(protocol_factory, opts) end

---@async
---@param host string|nil
---@param port integer|string|nil
---@param hints? loom.AddrinfoHints
---@return loom.AddrInfo[]
function Loop:getaddrinfo(host, port, hints) end

---@async
---@param addr loom.Address
---@param flags? loom.NameinfoFlags
---@return string host
---@return string service
function Loop:getnameinfo(addr, flags) end

---Sends `count` bytes (default: to the end) of `file` from `offset`
---(default 0) to a stream transport; returns the bytes sent.
---@async
---@param transport loom.TCPTransport
---@param file loom.File|integer a File or a file descriptor
---@param offset? integer
---@param count? integer
---@param opts? loom.SendfileOptions
---@return integer sent
---@overload async fun(self: loom.Loop, transport: loom.TCPTransport, file: loom.File|integer, opts: loom.SendfileOptions): integer
---@overload async fun(self: loom.Loop, transport: loom.TCPTransport, file: loom.File|integer, offset: integer, opts: loom.SendfileOptions): integer
function Loop:sendfile(transport, file, offset, count, opts) end


---Upgrades the plain connection of `transport` to TLS in place
---(STARTTLS): returns the TLS transport once the handshake is done;
---`protocol` gets the plain text from then on (its `connection_made` is
---not called again). On failure the connection is aborted and the error
---raised.
---@async
---@param transport loom.TCPTransport|loom.TLSTransport
---@param protocol loom.Protocol
---@param ctx loom.tls.Context a server context for the server side
---@param opts? loom.StartTLSOptions
---@return loom.TLSTransport
function Loop:start_tls(transport, protocol, ctx, opts) end

---------------------------------------------------------------- subprocesses (docs/subprocess.md)

---Starts `program` with the arguments (the last may be an options
---table); returns the transport and the protocol.
---@param protocol_factory fun(): loom.SubprocessProtocol
---@param program string
---@param ... string|number|loom.SubprocessTransportOptions the arguments, then the options
---@return loom.SubprocessTransport transport
---@return loom.SubprocessProtocol protocol
function Loop:subprocess_exec(protocol_factory, program, ...) end

---Starts `/bin/sh -c cmd`.
---@param protocol_factory fun(): loom.SubprocessProtocol
---@param cmd string
---@param opts? loom.SubprocessTransportOptions
---@return loom.SubprocessTransport transport
---@return loom.SubprocessProtocol protocol
function Loop:subprocess_shell(protocol_factory, cmd, opts) end


---------------------------------------------------------------- handles

---What `call_soon` returns.
---@class loom.Handle
local Handle = {}

---The callback will not run.
function Handle:cancel() end

---@return boolean
function Handle:cancelled() end

---What `call_later` and `call_at` return.
---@class loom.TimerHandle: loom.Handle
local TimerHandle = {}

---The loop time the callback is due.
---@return number
function TimerHandle:when() end
