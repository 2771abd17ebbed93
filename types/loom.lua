---@meta loom

-- Definitions of the `loom` module for the Lua Language Server (LuaLS):
-- completion, hover and type checks in editors. Never loaded by Lua.
-- The rest of the API (the loop, futures, transports, ...) is in
-- types/loom/*.lua. See docs/manual.md, "Editor support".
--
-- `---@async` marks the functions that suspend the running task while
-- they wait (asyncio's coroutines): call them inside a task.

---The loom module: `local loom = require "loom"`; in the `loom`
---executable also the global `loom`.
---@class loom
---@field version string the version of loom
---@field fs loom.fs files on libuv's thread pool (docs/fs.md)
---@field thread loom.thread OS threads with a loop of their own (docs/threads.md)
---@field trace loom.trace traces of the loop for Perfetto (docs/tracing.md)
---@field tls loom.tls TLS contexts (docs/tls.md)
---@field PIPE integer -1: a pipe to the child (subprocess `stdin`, `stdout`, `stderr` options)
---@field STDOUT integer -2: stderr goes where stdout goes (the `stderr` option)
---@field DEVNULL integer -3: `/dev/null` (subprocess `stdin`, `stdout`, `stderr` options)
---@field FIRST_COMPLETED "FIRST_COMPLETED" `wait`'s `return_when`: when any is done
---@field FIRST_EXCEPTION "FIRST_EXCEPTION" `wait`'s `return_when`: when one fails, else when all are done
---@field ALL_COMPLETED "ALL_COMPLETED" `wait`'s `return_when`: when all are done (the default)
---@field Error loom.Error the base of loom's error classes
---@field CancelledError loom.CancelledError
---@field TimeoutError loom.TimeoutError
---@field InvalidStateError loom.InvalidStateError
---@field IncompleteReadError loom.IncompleteReadError
---@field LimitOverrunError loom.LimitOverrunError
---@field QueueEmpty loom.QueueEmpty
---@field QueueFull loom.QueueFull
---@field QueueShutDown loom.QueueShutDown
---@field BrokenBarrierError loom.BrokenBarrierError
---@field ExceptionGroup loom.ExceptionGroup
---@field SendfileNotAvailableError loom.SendfileNotAvailableError
---@field OSError loom.OSError
---@field SSLError loom.SSLError a TLS failure (docs/tls.md)
---@field SSLCertVerificationError loom.SSLCertVerificationError a certificate that did not verify
---@field ContextVar loom.ContextVar
---@field Lock loom.Lock
---@field Event loom.Event
---@field Condition loom.Condition
---@field Semaphore loom.Semaphore
---@field BoundedSemaphore loom.BoundedSemaphore
---@field Barrier loom.Barrier
---@field Queue loom.Queue
---@field PriorityQueue loom.PriorityQueue
---@field LifoQueue loom.LifoQueue
loom = {}


---------------------------------------------------------------- loops

---A new event loop.
---@param opts? loom.LoopOptions
---@return loom.Loop
function loom.new_event_loop(opts) end

---The running loop, else the loop set with `set_event_loop`, else a new
---one (kept as the current loop).
---@return loom.Loop
function loom.get_event_loop() end

---Sets the current loop; `nil` clears it.
---@param loop loom.Loop|nil
function loom.set_event_loop(loop) end

---The running loop; an error when none runs.
---@return loom.Loop
function loom.get_running_loop() end

---Runs `fn(...)` as the main task of a new loop, then cancels the tasks
---left, closes the loop and returns `fn`'s results (or raises its error).
---An error when a loop is already running.
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return any ...
function loom.run(fn, ...) end


---------------------------------------------------------------- tasks

---Suspends the running task for `delay` seconds and returns the extra
---arguments.
---@async
---@param delay number seconds, >= 0
---@param ... any returned when the sleep ends
---@return any ...
function loom.sleep(delay, ...) end

---Suspends the running task until the future is done; returns its
---results or raises its error unchanged.
---@async
---@param fut loom.Future
---@return any ...
function loom.await(fut) end

---A new task of the running loop running `fn(...)`.
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return loom.Task
function loom.create_task(fn, ...) end

---The running task; `nil` in a plain callback (or when `loop` is given
---and not running). An error when no loop runs.
---@param loop? loom.Loop
---@return loom.Task|nil
function loom.current_task(loop) end

---The pending tasks of `loop` (default: the running loop).
---@param loop? loom.Loop
---@return loom.Task[]
function loom.all_tasks(loop) end

---A task of `loop` running `fn(...)`, made without the loop's task
---factory (what a factory calls).
---@param loop loom.Loop
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return loom.Task
function loom.Task(loop, fn, ...) end

---A future of `loop`, or of the running loop.
---@param loop? loom.Loop
---@return loom.Future
function loom.Future(loop) end


---------------------------------------------------------------- composing tasks (docs/combinators.md)

---Runs the awaitables concurrently and returns the first result of each,
---in argument order. A function runs as a new task. The last argument
---may be an options table. `gather(list, [opts])` returns a list (with
---`.n`) instead.
---@async
---@param ... loom.Future|(fun(): any)|loom.GatherOptions
---@return any ...
---@overload async fun(list: (loom.Future|(fun(): any))[], opts?: loom.GatherOptions): table
function loom.gather(...) end

---Waits for the futures of `list`; returns the done and the pending
---ones, each in list order. Nothing is cancelled at the timeout.
---@async
---@param list loom.Future[]
---@param opts? loom.WaitOptions
---@return loom.Future[] done
---@return loom.Future[] pending
function loom.wait(list, opts) end

---Returns `aw`'s results; past `timeout` seconds `aw` is cancelled,
---waited for, and `TimeoutError` raised. A function runs inline in the
---calling task. `timeout = nil` waits without limit.
---@async
---@param aw loom.Future|fun(): ...
---@param timeout number|nil
---@return any ...
function loom.wait_for(aw, timeout) end

---Runs `fn(...)` in the current task under a deadline `delay` seconds
---from now and returns its results (`TimeoutError` when it passes).
---Without `fn`, returns a scope for a to-be-closed variable:
---`local t <close> = loom.timeout(0.5)`. `nil`: no deadline.
---@async
---@param delay number|nil
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return any ...
---@overload async fun(delay: number|nil): loom.Timeout
function loom.timeout(delay, fn, ...) end

---`timeout` with the deadline as a loop time (`loop:time()`).
---@async
---@param when number|nil
---@param fn fun(...: any): ...
---@param ... any arguments for `fn`
---@return any ...
---@overload async fun(when: number|nil): loom.Timeout
function loom.timeout_at(when, fn, ...) end

---Awaits `aw` and returns all its results; cancelling the caller does
---not cancel `aw`. A function runs as a new task.
---@async
---@param aw loom.Future|fun(): ...
---@return any ...
function loom.shield(aw) end

---An iterator over the futures of `list` in completion order:
---`for fut in loom.as_completed(list) do local v = fut:await() end`.
---A step past `opts.timeout` raises `TimeoutError`.
---@async
---@param list (loom.Future|(fun(): any))[]
---@param opts? loom.AsCompletedOptions
---@return fun(): loom.Future iterator
---@return nil
---@return nil
---@return any closer a to-be-closed value
function loom.as_completed(list, opts) end

---Runs `fn(tg, ...)` in the current task and returns its results once
---every child task of the group `tg` is done.
---@async
---@param fn fun(tg: loom.TaskGroup, ...: any): ...
---@param ... any arguments for `fn` after `tg`
---@return any ...
function loom.task_group(fn, ...) end

---A task group whose parent is the current task, for
---`local tg <close> = loom.TaskGroup()`: closing it waits for the children.
---@async
---@return loom.TaskGroup
function loom.TaskGroup() end


---------------------------------------------------------------- names (docs/dns.md)

---Resolves `host` and `port` on the thread pool; a list of address
---tables in the resolver's order.
---@async
---@param host string|nil a name or a numeric address
---@param port integer|string|nil a port number, a numeric string or a service name
---@param hints? loom.AddrinfoHints
---@return loom.AddrInfo[]
function loom.getaddrinfo(host, port, hints) end

---The host name and service name of an address table.
---@async
---@param addr loom.Address
---@param flags? loom.NameinfoFlags
---@return string host
---@return string service
function loom.getnameinfo(addr, flags) end


---------------------------------------------------------------- file descriptors (docs/fds.md)

---Suspends the running task until `fd` is readable.
---@async
---@param fd integer
function loom.wait_readable(fd) end

---Suspends the running task until `fd` is writable.
---@async
---@param fd integer
function loom.wait_writable(fd) end


---------------------------------------------------------------- streams (docs/streams.md)

---Connects (inside a task) and returns a reader and a writer.
---@async
---@param host string
---@param port integer
---@param opts? loom.OpenConnectionOptions
---@return loom.StreamReader reader
---@return loom.StreamWriter writer
function loom.open_connection(host, port, opts) end

---Listens and returns the server; each connection runs
---`client_connected_cb(reader, writer)` as a task. Needs a running loop.
---@param client_connected_cb fun(reader: loom.StreamReader, writer: loom.StreamWriter)
---@param host string|string[]|nil
---@param port integer
---@param opts? loom.StartServerOptions
---@return loom.Server
function loom.start_server(client_connected_cb, host, port, opts) end

---`open_connection` over a Unix domain socket.
---@async
---@param path string
---@param opts? loom.OpenUnixConnectionOptions
---@return loom.StreamReader reader
---@return loom.StreamWriter writer
function loom.open_unix_connection(path, opts) end

---`start_server` on a Unix domain socket.
---@param client_connected_cb fun(reader: loom.StreamReader, writer: loom.StreamWriter)
---@param path string
---@param opts? loom.StartUnixServerOptions
---@return loom.Server
function loom.start_unix_server(client_connected_cb, path, opts) end

---An empty stream reader, fed with `feed_data` and `feed_eof`.
---@param opts? loom.StreamReaderOptions
---@return loom.StreamReader
function loom.StreamReader(opts) end

---A zero-filled byte buffer of `size` bytes (0..2^31-1), for buffered
---protocols and `transport:write(buf, [i, [j]])`.
---@param size integer
---@return loom.Buffer
function loom.Buffer(size) end

---A writer made by hand; `protocol` must be a `StreamReaderProtocol`.
---@param transport loom.TCPTransport
---@param protocol loom.StreamReaderProtocol
---@param reader? loom.StreamReader
---@return loom.StreamWriter
function loom.StreamWriter(transport, protocol, reader) end

---The protocol that glues a transport to a reader, for
---`loop:create_connection` and `loop:create_server` by hand.
---@param reader loom.StreamReader
---@param client_connected_cb? fun(reader: loom.StreamReader, writer: loom.StreamWriter)
---@return loom.StreamReaderProtocol
function loom.StreamReaderProtocol(reader, client_connected_cb) end


---------------------------------------------------------------- subprocesses (docs/subprocess.md)

---Runs `program` with the arguments, no shell (searched in `PATH` unless
---it holds a `/`). The last argument may be an options table. Needs a
---running loop; the child runs when it returns.
---@param program string
---@param ... string|number|loom.SubprocessOptions the arguments, then the options
---@return loom.Process
function loom.create_subprocess_exec(program, ...) end

---Runs `/bin/sh -c cmd`. Needs a running loop.
---@param cmd string
---@param opts? loom.SubprocessOptions
---@return loom.Process
function loom.create_subprocess_shell(cmd, opts) end


---------------------------------------------------------------- threads (docs/threads.md)

---Runs `fn(...)` in the running loop's default executor (another
---thread, with copies of the arguments) and awaits its results.
---@async
---@param fn fun(...: any): ...
---@param ... any copied to the worker
---@return any ...
function loom.to_thread(fn, ...) end

---An executor of at most `max_workers` threads (1..1024; default
---`min(32, CPUs + 4)`).
---@param max_workers? integer
---@return loom.ThreadPoolExecutor
function loom.ThreadPoolExecutor(max_workers) end

---A future of `loop` (default: the running loop) that completes as the
---concurrent future `cf` does; cancelling it cancels `cf`.
---@param cf loom.ConcurrentFuture
---@param loop? loom.Loop
---@return loom.Future
function loom.wrap_future(cf, loop) end

---Runs `fn(...)` (copied) as a task of `loop` from any thread; returns a
---concurrent future of its results.
---@param fn fun(...: any): ...
---@param loop loom.Loop|loom.RemoteLoop
---@param ... any copied to the loop's thread
---@return loom.ConcurrentFuture
function loom.run_coroutine_threadsafe(fn, loop, ...) end

---A channel between threads holding at most `capacity` values (`nil`:
---no bound).
---@param capacity? integer
---@return loom.Channel
function loom.channel(capacity) end


---------------------------------------------------------------- introspection (docs/introspection.md)

---The pending tasks of `loop` (default: the running loop) as a tree: the
---list of root nodes, in the order of their ids.
---@param loop? loom.Loop
---@return loom.TaskNode[]
function loom.task_tree(loop) end

---Writes the task tree on `file` (default `io.stderr`); returns the
---number of tasks printed.
---@param loop? loom.Loop
---@param file? file*|{write: function}
---@return integer
function loom.print_tasks(loop, file) end

return loom
