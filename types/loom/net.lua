---@meta _

-- Transports, protocols and servers (docs/net.md, docs/udp.md), the
-- socket of a transport, and address tables (docs/dns.md).

---An address table. `host` is a numeric IPv4 or IPv6 address.
---@class loom.Address
---@field host string
---@field port? integer 0..65535
---@field family? "inet"|"inet6"
---@field scope_id? integer IPv6 only

---An address table as `getaddrinfo` returns it.
---@class loom.AddrInfo: loom.Address
---@field port integer
---@field family "inet"|"inet6"
---@field socktype "stream"|"dgram"|"raw"|"seqpacket"|integer
---@field protocol integer IPPROTO_*, 0 when unspecified
---@field canonname? string first entry only, with `flags.canonname`

---Hints of `getaddrinfo`; unknown fields are errors.
---@class loom.AddrinfoHints
---@field family? "inet"|"inet6"|"unspec"
---@field socktype? "stream"|"dgram"|"raw"|"seqpacket"
---@field protocol? "tcp"|"udp"|integer
---@field flags? loom.AddrinfoFlags

---The `AI_*` flags of getaddrinfo(3), by name.
---@class loom.AddrinfoFlags
---@field passive? boolean
---@field canonname? boolean
---@field numerichost? boolean
---@field numericserv? boolean
---@field v4mapped? boolean
---@field all? boolean
---@field addrconfig? boolean

---The `NI_*` flags of getnameinfo(3), by name.
---@class loom.NameinfoFlags
---@field namereqd? boolean
---@field numerichost? boolean
---@field numericserv? boolean
---@field dgram? boolean name the UDP service
---@field nofqdn? boolean

---Options of `loop:create_server`.
---@class loom.CreateServerOptions
---@field backlog? integer default 100
---@field reuse_address? boolean accepted; always on
---@field reuse_port? boolean `SO_REUSEPORT`
---@field start_serving? boolean default `true`; `false` binds without listening
---@field ssl? loom.tls.Context|false a server context: every connection is TLS (docs/tls.md)
---@field ssl_handshake_timeout? number seconds each handshake may take (default 60), with `ssl`
---@field ssl_shutdown_timeout? number seconds to wait for the peer's close_notify after `close()` (default 30), with `ssl`

---Options of `loop:create_connection`.
---@class loom.CreateConnectionOptions
---@field local_addr? {host: string, port?: integer} binds the local side first
---@field timeout? number seconds for the whole call; then `TimeoutError`
---@field ssl? loom.tls.Context|boolean a client context, or `true` for the default one (docs/tls.md); returns once the handshake is done
---@field server_hostname? string the name to send (SNI) and check the certificate against, with `ssl`; default: the host
---@field ssl_handshake_timeout? number seconds the handshake may take (default 60), with `ssl`; then `TimeoutError`
---@field ssl_shutdown_timeout? number seconds to wait for the peer's close_notify after `close()` (default 30), with `ssl`

---Options of `loop:create_unix_server`.
---@class loom.CreateUnixServerOptions
---@field backlog? integer default 100
---@field start_serving? boolean
---@field ssl? loom.tls.Context|false a server context: every connection is TLS (docs/tls.md)
---@field ssl_handshake_timeout? number seconds each handshake may take (default 60), with `ssl`
---@field ssl_shutdown_timeout? number seconds to wait for the peer's close_notify after `close()` (default 30), with `ssl`

---Options of `loop:create_unix_connection`.
---@class loom.CreateUnixConnectionOptions
---@field timeout? number
---@field ssl? loom.tls.Context|boolean a client context, or `true` for the default one (docs/tls.md); returns once the handshake is done
---@field server_hostname? string the name to send (SNI) and check the certificate against, with `ssl`; needed when the context checks host names
---@field ssl_handshake_timeout? number seconds the handshake may take (default 60), with `ssl`; then `TimeoutError`
---@field ssl_shutdown_timeout? number seconds to wait for the peer's close_notify after `close()` (default 30), with `ssl`

---Options of `loop:create_datagram_endpoint`.
---@class loom.DatagramEndpointOptions
---@field local_addr? loom.Address bind to this address (port 0: any free one)
---@field remote_addr? loom.Address connect the socket
---@field family? "inet"|"inet6" needed only when neither address is given
---@field reuse_port? boolean `SO_REUSEPORT`
---@field allow_broadcast? boolean `SO_BROADCAST`

---A stream protocol: a table of callbacks the loop calls on a TCP or
---Unix connection, plain or TLS. Every method is optional.
---@class loom.Protocol
---@field connection_made? fun(self: loom.Protocol, transport: loom.TCPTransport|loom.TLSTransport) the connection is up (over TLS: after the handshake)
---@field data_received? fun(self: loom.Protocol, data: string) bytes arrived (a non-empty string)
---@field eof_received? fun(self: loom.Protocol): boolean? the peer closed its write side; return true to keep the transport half-open
---@field connection_lost? fun(self: loom.Protocol, err: any) closed: `nil`, or the error
---@field pause_writing? fun(self: loom.Protocol) the write buffer went above the high-water mark
---@field resume_writing? fun(self: loom.Protocol) it drained to the low-water mark
---@field get_buffer? fun(self: loom.Protocol, sizehint: integer): loom.Buffer, integer? makes the protocol buffered: the Buffer to read into, and the position to read to (default 1)
---@field buffer_updated? fun(self: loom.Protocol, nbytes: integer) a buffered protocol's `nbytes` arrived at the position `get_buffer` gave

---A datagram protocol: the callbacks of a UDP endpoint. Every method is
---optional.
---@class loom.DatagramProtocol
---@field connection_made? fun(self: loom.DatagramProtocol, transport: loom.DatagramTransport)
---@field datagram_received? fun(self: loom.DatagramProtocol, data: string, addr: loom.Address)
---@field error_received? fun(self: loom.DatagramProtocol, err: loom.OSError)
---@field connection_lost? fun(self: loom.DatagramProtocol, err: any)

---A stream transport (`loom.TCPTransport`): TCP and Unix connections and
---the pipes of child processes.
---@class loom.TCPTransport
local Transport = {}

---Sends `data`, or the bytes `i..j` of a Buffer (string.sub's rules):
---tries at once, queues the rest (a Buffer's rest as a copy). Ignored
---once closed.
---@param data string|loom.Buffer
---@param i? integer
---@param j? integer
function Transport:write(data, i, j) end

---Writes the strings of `list`, concatenated.
---@param list string[]
function Transport:writelines(list) end

---Closes the write side once queued data is sent; reading goes on.
function Transport:write_eof() end

---@return boolean
function Transport:can_write_eof() end

---Stops reading, sends what is queued, then closes; `connection_lost(nil)`
---follows. Idempotent; also `<close>`.
function Transport:close() end

---Closes now, dropping queued data.
function Transport:abort() end

---@return boolean
function Transport:is_closing() end

---Stops `data_received` calls.
function Transport:pause_reading() end

---Restarts `data_received` calls.
function Transport:resume_reading() end

---@return boolean
function Transport:is_reading() end

---`"peername"`, `"sockname"` (address tables, paths for Unix sockets),
---`"socket"` (a `loom.TransportSocket`); else `default`.
---@param name "peername"|"sockname"|"socket"|string
---@param default? any
---@return any
function Transport:get_extra_info(name, default) end

---`high` defaults to 64 KiB (or `4 * low`), `low` to `high // 4`.
---@param high? integer
---@param low? integer
function Transport:set_write_buffer_limits(high, low) end

---@return integer low
---@return integer high
function Transport:get_write_buffer_limits() end

---Bytes queued and not yet sent.
---@return integer
function Transport:get_write_buffer_size() end

---@return table protocol
function Transport:get_protocol() end

---@param protocol table
function Transport:set_protocol(protocol) end

---@return loom.Loop
function Transport:get_loop() end

---`TCP_NODELAY` on or off (on by default); a no-op for Unix sockets.
---@param on boolean
function Transport:set_nodelay(on) end

---A listening server (`loom.Server`).
---@class loom.Server
local Server = {}

---Stops listening; transports already accepted stay open. Idempotent;
---also `<close>`.
function Server:close() end

---Waits until the server is closed and every transport it accepted is
---closed.
---@async
function Server:wait_closed() end

---`close()` on every transport of the server.
function Server:close_clients() end

---`abort()` on every transport of the server.
function Server:abort_clients() end

---Starts accepting (after `start_serving = false`).
function Server:start_serving() end

---Starts serving if not yet, then waits until `close()`.
---@async
function Server:serve_forever() end

---@return boolean
function Server:is_serving() end

---The address tables it listens on (paths for Unix servers).
---@return (loom.Address|string)[]
function Server:sockets() end

---@return loom.Loop
function Server:get_loop() end

---The socket under a transport, `transport:get_extra_info("socket")`.
---@class loom.TransportSocket
---@field family "inet"|"inet6"|"unix"
---@field type "stream"|"dgram"
local TransportSocket = {}

---The file descriptor (do not close it); -1 once the transport is closed.
---@return integer
function TransportSocket:fileno() end

---@return loom.Address|string
function TransportSocket:getsockname() end

---@return loom.Address|string
function TransportSocket:getpeername() end

---@param name loom.SocketOption
---@return boolean|integer
function TransportSocket:getsockopt(name) end

---@param name loom.SocketOption
---@param value boolean|integer
function TransportSocket:setsockopt(name, value) end

---@alias loom.SocketOption
---| "so_keepalive"
---| "so_reuseaddr"
---| "so_reuseport"
---| "so_broadcast"
---| "so_rcvbuf"
---| "so_sndbuf"
---| "so_error"
---| "tcp_nodelay"
---| "tcp_keepidle"
---| "tcp_keepintvl"
---| "tcp_keepcnt"
---| "ip_ttl"
---| "ipv6_v6only"

---A UDP endpoint's transport (`loom.DatagramTransport`).
---@class loom.DatagramTransport
local DatagramTransport = {}

---Sends `data` as one datagram to `addr`, or to the `remote_addr` of a
---connected endpoint. System errors go to `error_received`.
---@param data string
---@param addr? loom.Address
function DatagramTransport:sendto(data, addr) end

---Closes once the queued datagrams are sent. Idempotent; also `<close>`.
function DatagramTransport:close() end

---Closes now, dropping queued datagrams.
function DatagramTransport:abort() end

---@return boolean
function DatagramTransport:is_closing() end

---`"sockname"`, `"peername"`, `"socket"`; else `default`.
---@param name "sockname"|"peername"|"socket"|string
---@param default? any
---@return any
function DatagramTransport:get_extra_info(name, default) end

---Bytes of datagrams queued, not yet sent.
---@return integer
function DatagramTransport:get_write_buffer_size() end

---A fixed-size mutable byte buffer (`loom.Buffer(size)`), zero-filled;
---`#buf` is its size. Positions follow string.sub's rules.
---@class loom.Buffer
local Buffer = {}

---The bytes `i..j` (default: all) as a string.
---@param i? integer
---@param j? integer
---@return string
function Buffer:tostring(i, j) end

---The bytes `i..j` (default `i`, `i` default 1) as integers, as
---string.byte.
---@param i? integer
---@param j? integer
---@return integer ...
function Buffer:byte(i, j) end

---Copies the bytes `i..j` of `s` (a string or a Buffer) to `pos`;
---raises rather than go past the end. Returns the position after them.
---@param pos integer
---@param s string|loom.Buffer
---@param i? integer
---@param j? integer
---@return integer
function Buffer:set(pos, s, i, j) end

---The first occurrence of the bytes of `s` (no patterns) from `init`,
---ending by `last`: its start and end, or nil.
---@param s string|loom.Buffer
---@param init? integer
---@param last? integer
---@return integer? start
---@return integer? end
function Buffer:find(s, init, last) end

---Moves `n` bytes from `from` to `to` (they may overlap).
---@param to integer
---@param from integer
---@param n integer
function Buffer:move(to, from, n) end
