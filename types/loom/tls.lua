---@meta _

-- TLS (docs/tls.md): contexts, the TLS transport a protocol sees over an
-- encrypted connection, the protocol under it, and the facts
-- `get_extra_info` reads from a session. The ssl options of the
-- connection and server methods are in net.lua; `loop:start_tls` is in
-- loop.lua, `writer:start_tls` in streams.lua.

---`loom.tls`: TLS contexts.
---@class loom.tls
local tls = {}

---A context: for clients, or with `server = true` for servers. A bad or
---unknown option raises `bad argument #1 to 'context' (option: what is
---wrong)`.
---@param opts? loom.tls.ContextOptions
---@return loom.tls.Context
function tls.context(opts) end

---Whether `v` is a context.
---@param v any
---@return boolean
function tls.is_context(v) end

---@alias loom.tls.Version "TLSv1"|"TLSv1.1"|"TLSv1.2"|"TLSv1.3"

---Options of `loom.tls.context`; unknown fields are errors.
---@class loom.tls.ContextOptions
---@field server? boolean a context for servers (default: for clients)
---@field cert? string the certificate chain: PEM text (told by its `-----BEGIN` line) or the path of a PEM file, the certificate first; required for servers
---@field key? string the private key, PEM text or a file; default: taken from `cert`
---@field password? string the password of an encrypted key
---@field cafile? string a PEM file of CAs to trust
---@field capath? string a directory of hashed CA certificates (as `c_rehash` makes)
---@field cadata? string PEM text of CAs to trust
---@field verify? "none"|"optional"|"required" default `"required"` for clients, `"none"` for servers; with none of `cafile`, `capath`, `cadata`, the system's store
---@field check_hostname? boolean clients: check the server's certificate against the name connected to; default: on when verifying; needs `verify`
---@field min_version? loom.tls.Version default `"TLSv1.2"`
---@field max_version? loom.tls.Version
---@field ciphers? string OpenSSL's cipher list for TLS 1.2 and below
---@field ciphersuites? string the TLS 1.3 suites
---@field alpn? string[] protocol names (1..255 bytes each): offered by a client, chosen from in this order by a server
---@field sni? fun(name: string): loom.tls.Context|nil servers: called during the handshake with the name the client asked for; returns the server context to use, or nil to keep this one; an error fails the handshake
---@field session_cache? boolean default `true`; `false` turns session reuse off
---@field ragged_eof? boolean a peer that closes without close_notify ends the stream instead of raising `SSLError`

---Options of `loop:start_tls` and `writer:start_tls`.
---@class loom.StartTLSOptions
---@field server_side? boolean default: whether `ctx` is a server context (it must agree)
---@field server_hostname? string clients: the name to send (SNI) and check the certificate against; needed when the context checks host names
---@field ssl_handshake_timeout? number seconds the handshake may take (default 60); then `TimeoutError`
---@field ssl_shutdown_timeout? number seconds to wait for the peer's close_notify after `close()` (default 30)

---A TLS context (`loom.tls.Context`), made by `loom.tls.context`.
---@class loom.tls.Context
local Context = {}

---Whether it was made with `server = true`.
---@return boolean
function Context:is_server() end

---Whether it checks host names.
---@return boolean
function Context:check_hostname() end

---The names `get_extra_info` of a TLS transport answers itself, once the
---handshake is done (before it: the default).
---@alias loom.tls.ExtraInfo
---| "peercert" # a `loom.tls.PeerCert`, or the default when the peer sent none
---| "cipher" # a `loom.tls.Cipher`
---| "alpn_protocol" # the protocol ALPN chose (a string), or the default
---| "ssl_object" # a `loom.tls.SSLObject`
---| "sslcontext" # the `loom.tls.Context` in use (the one `sni` chose, if any)
---| "compression" # always the default (compression is off)

---The peer's certificate, `get_extra_info("peercert")`.
---@class loom.tls.PeerCert
---@field subject string the subject as one line, `"CN=localhost,O=Example"`
---@field issuer string the issuer as one line
---@field not_before string e.g. `"Nov 21 11:56:27 2026 GMT"`
---@field not_after string
---@field serial? string the serial number in hex
---@field subject_alt_names string[] `"DNS:name"` and `"IP:address"` entries
---@field pem? string the certificate as PEM text

---`get_extra_info("cipher")`.
---@class loom.tls.Cipher
---@field name string e.g. `"TLS_AES_256_GCM_SHA384"`
---@field protocol string e.g. `"TLSv1.3"`
---@field bits integer the secret bits of the cipher

---The facts of a TLS session, `get_extra_info("ssl_object")`: a table
---read when asked, not an object.
---@class loom.tls.SSLObject
---@field version string the protocol version, e.g. `"TLSv1.3"`
---@field cipher? loom.tls.Cipher
---@field alpn_protocol? string
---@field server_side boolean
---@field server_hostname? string the name sent (SNI), or on a server the name asked for
---@field session_reused boolean whether the session was resumed
---@field peercert? loom.tls.PeerCert

---The transport a protocol gets over TLS (`loom.TLSTransport`). Writes
---go, encrypted, to the plain transport's queue: the write buffer limits
---and `pause_writing` / `resume_writing` are the plain transport's.
---@class loom.TLSTransport
local TLSTransport = {}

---Encrypts and sends `data`; written at the end of the handshake when
---it is not done yet. Ignored once closing.
---@param data string|loom.Buffer the string, or a Buffer whose bytes `i..j` are sent
---@param i? integer
---@param j? integer
function TLSTransport:write(data, i, j) end

---Writes the strings of `list`, concatenated.
---@param list string[]
function TLSTransport:writelines(list) end

---Raises: TLS has no half-close.
function TLSTransport:write_eof() end

---Always `false`.
---@return false
function TLSTransport:can_write_eof() end

---Sends close_notify and waits for the peer's (at most
---`ssl_shutdown_timeout`), then closes the connection;
---`connection_lost(nil)` follows. During the handshake: `abort()`.
---Idempotent; also `<close>`.
function TLSTransport:close() end

---Closes the connection now.
function TLSTransport:abort() end

---@return boolean
function TLSTransport:is_closing() end

---Stops `data_received` calls.
function TLSTransport:pause_reading() end

---Restarts `data_received` calls (and delivers what was decrypted).
function TLSTransport:resume_reading() end

---@return boolean
function TLSTransport:is_reading() end

---The TLS names (`loom.tls.ExtraInfo`); any other name is the plain
---transport's (`"peername"`, `"sockname"`, `"socket"`); else `default`.
---@param name loom.tls.ExtraInfo|"peername"|"sockname"|"socket"|string
---@param default? any
---@return any
function TLSTransport:get_extra_info(name, default) end

---The plain transport's limits.
---@param high? integer
---@param low? integer
function TLSTransport:set_write_buffer_limits(high, low) end

---The plain transport's limits (16 KiB and 64 KiB once it is gone).
---@return integer low
---@return integer high
function TLSTransport:get_write_buffer_limits() end

---The plain transport's queue, plus what was written during the
---handshake.
---@return integer
function TLSTransport:get_write_buffer_size() end

---The application's protocol.
---@return table protocol
function TLSTransport:get_protocol() end

---@param protocol table
function TLSTransport:set_protocol(protocol) end

---@return loom.Loop
function TLSTransport:get_loop() end

---The protocol of the plain transport under a TLS transport
---(`loom.TLSProtocol`): it runs the record layer and calls the
---application's protocol with the plain text.
---@class loom.TLSProtocol: loom.Protocol
local TLSProtocol = {}

---@param transport loom.TCPTransport
function TLSProtocol:connection_made(transport) end

---@param data string
function TLSProtocol:data_received(data) end

---Returns `false`: the plain transport closes (TLS has no half-close).
---@return false
function TLSProtocol:eof_received() end

---@param err any
function TLSProtocol:connection_lost(err) end

function TLSProtocol:pause_writing() end

function TLSProtocol:resume_writing() end
