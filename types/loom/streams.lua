---@meta _

-- StreamReader, StreamWriter and StreamReaderProtocol (docs/streams.md).

---Options of `loom.StreamReader`.
---@class loom.StreamReaderOptions
---@field limit? integer how far `readuntil` and `readline` look (default 65536); also the flow-control marks

---Options of `loom.open_connection`: `limit`, and those of
---`loop:create_connection`.
---@class loom.OpenConnectionOptions: loom.CreateConnectionOptions
---@field limit? integer the reader's limit (default 64 KiB)

---Options of `loom.start_server`: `limit`, and those of
---`loop:create_server`.
---@class loom.StartServerOptions: loom.CreateServerOptions
---@field limit? integer the limit of each reader

---Options of `loom.open_unix_connection`.
---@class loom.OpenUnixConnectionOptions: loom.CreateUnixConnectionOptions
---@field limit? integer

---Options of `loom.start_unix_server`.
---@class loom.StartUnixServerOptions: loom.CreateUnixServerOptions
---@field limit? integer

---The read side of a stream. The reads that wait suspend the running
---task (a read the buffer can answer works anywhere); a cancelled read
---consumes nothing. `<close>` closes the connection it reads from.
---@class loom.StreamReader
local StreamReader = {}

---`n > 0`: up to `n` bytes, as soon as one is buffered (`""` at EOF);
---`n == -1` or none: everything until EOF.
---@async
---@param n? integer
---@return string
function StreamReader:read(n) end

---Exactly `n` bytes; `IncompleteReadError` at EOF with fewer.
---@async
---@param n integer
---@return string
function StreamReader:readexactly(n) end

---The bytes up to and including `sep` (default `"\n"`).
---`LimitOverrunError` past the limit, `IncompleteReadError` at EOF.
---@async
---@param sep? string
---@return string
function StreamReader:readuntil(sep) end

---A line with its `"\n"`; at EOF the last partial line, then `""`.
---@async
---@return string
function StreamReader:readline() end

---An iterator over the lines (each with its `"\n"`), ending at EOF:
---`for line in reader:lines() do ... end` inside a task.
---@async
---@return fun(): string
function StreamReader:lines() end

---Appends `data` and wakes a waiting read; an error after `feed_eof`.
---@param data string
function StreamReader:feed_data(data) end

---Marks the end of the data and wakes a waiting read.
function StreamReader:feed_eof() end

---Whether `feed_eof` was called and the buffer is empty.
---@return boolean
function StreamReader:at_eof() end

---Stores `e` for every later read, and fails a waiting read with it.
---@param e any
function StreamReader:set_exception(e) end

---The error given to `set_exception`, or `nil`.
---@return any
function StreamReader:exception() end

---The transport to pause and resume (set once).
---@param transport loom.TCPTransport|loom.TLSTransport
function StreamReader:set_transport(transport) end

---The write side of a stream.
---@class loom.StreamWriter
---@field transport loom.TCPTransport|loom.TLSTransport the transport (read only): a `loom.TLSTransport` over TLS, and after `start_tls`
local StreamWriter = {}

---Writes `data` (the transport's `write`); ignored once closed.
---@param data string
function StreamWriter:write(data) end

---Writes the strings of `list`.
---@param list string[]
function StreamWriter:writelines(list) end

---Waits while the transport is paused for writing; raises the error the
---connection was lost with (`OSError` `ECONNRESET` once lost).
---@async
function StreamWriter:drain() end

---Closes the write side after the queued data.
function StreamWriter:write_eof() end

---@return boolean
function StreamWriter:can_write_eof() end

---Closes the transport (queued data is still sent). Also `<close>`.
function StreamWriter:close() end

---@return boolean
function StreamWriter:is_closing() end

---Waits until the connection is lost; raises its error, if any.
---@async
function StreamWriter:wait_closed() end

---Upgrades the connection to TLS in place (STARTTLS): drains, then
---`loop:start_tls`; the writer and its reader go on over TLS. Bytes the
---reader has buffered already stay plain.
---@async
---@param ctx loom.tls.Context
---@param opts? loom.StartTLSOptions
function StreamWriter:start_tls(ctx, opts) end

---The transport's `get_extra_info`.
---@param name string
---@param default? any
---@return any
function StreamWriter:get_extra_info(name, default) end

---The protocol that feeds a StreamReader from a transport
---(`loom.StreamReaderProtocol(reader, [client_connected_cb])`).
---@class loom.StreamReaderProtocol: loom.Protocol
local StreamReaderProtocol = {}

---@param transport loom.TCPTransport|loom.TLSTransport
function StreamReaderProtocol:connection_made(transport) end

---@param data string
function StreamReaderProtocol:data_received(data) end

---Feeds EOF to the reader and returns `true` (the writer closes).
---@return boolean
function StreamReaderProtocol:eof_received() end

---@param err any
function StreamReaderProtocol:connection_lost(err) end

function StreamReaderProtocol:pause_writing() end

function StreamReaderProtocol:resume_writing() end
