-- lifetime_spec.lua: transports, servers, streams and tasks (TCP, Unix,
-- TLS), datagram endpoints and children's pipes, written to, closed,
-- aborted, paused, upgraded to TLS, given new protocols, cancelled and
-- forgotten in random orders (one seed per spec), then the loop closed,
-- dropped or wound down. Nothing may crash, no action may fail with
-- anything but loom's own errors, and no descriptor, anchor or registry
-- reference may be left behind.
local H = require "helper"
local loom = require "loom"
H.setup()

local nfds = require("loom.core")._nfds

-- A throw-away certificate for the TLS servers, made once.
local sctx, cctx
lazy_setup(function()
  local p = assert(io.popen("unset LD_PRELOAD; mktemp -d"))
  local dir = p:read("l")
  p:close()
  assert(H.sh("cd '" .. dir .. "' && openssl req -x509 -newkey ec "
    .. "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout k.pem "
    .. "-out c.pem -days 2 -subj /CN=localhost >/dev/null 2>&1"),
    "openssl could not make a certificate")
  sctx = loom.tls.context{ server = true, cert = dir .. "/c.pem",
                           key = dir .. "/k.pem" }
  cctx = loom.tls.context{ verify = "none" }
  H.sh("rm -rf '" .. dir .. "'")
end)

local function echo_proto()
  return {
    connection_made = function(self, t) self.t = t end,
    data_received = function(self, d) self.t:write(d) end,
  }
end

local function sink_proto()
  return {
    connection_made = function(self, t) self.t = t end,
    data_received = function() end,
  }
end

local function stream_echo(r, w)
  while true do
    local d = r:read(65536)
    if d == "" then break end
    w:write(d)
    w:drain()
  end
  w:close()
end

-- Errors an action may meet on objects in any state: loom's own, never
-- a Lua error of loom's code (indexing nil, calling nil, ...).
local function allowed(err)
  local s = tostring(err)
  if type(err) == "table" and err.message then s = tostring(err.message) end
  return not s:find("attempt to", 1, true)
end

local warmed = false

local function scenario(seed, finish)
  if not warmed then  -- libuv's one-time descriptors open here, unmeasured
    warmed = true
    pcall(scenario, seed, "close")
  end
  local rng = seed
  local function rnd(n)  -- an LCG of our own: math.random is left alone
    rng = (rng * 1103515245 + 12345) % 2147483648
    return rng % n + 1
  end
  local bad = {}
  local function try(fn, ...)
    local ok, err = pcall(fn, ...)
    if not ok and not allowed(err) then bad[#bad + 1] = tostring(err) end
  end

  collectgarbage(); collectgarbage()
  local before = nfds()
  local weak = setmetatable({}, { __mode = "k" })
  local loop = loom.new_event_loop()
  weak[loop] = true
  loop:set_exception_handler(function(_, ctx)  -- resets, cancels: expected
    local err = ctx.exception
    if err ~= nil and not allowed(err) then bad[#bad + 1] = tostring(err) end
  end)
  local ends, tasks, servers, tls, udp, procs = {}, {}, {}, {}, {}, {}
  local unixpath = os.tmpname()
  os.remove(unixpath)
  local all = setmetatable({}, { __mode = "v" })  -- every transport
  local allprocs = setmetatable({}, { __mode = "v" })  -- and child

  local function pick(list)
    if #list > 0 then return list[rnd(#list)], rnd(#list) end
  end

  local actions = {
    function()  -- write some bytes
      local e = pick(ends)
      if not e then return end
      local data = ("x"):rep(rnd(4) == 1 and 200000 or rnd(3000))
      if e.t then e.t:write(data) else e.w:write(data) end
    end,
    function()  -- close
      local e = pick(ends)
      if e then if e.t then e.t:close() else e.w:close() end end
    end,
    function()  -- abort
      local e = pick(ends)
      if e then (e.t or e.w.transport):abort() end
    end,
    function()  -- pause or resume reading
      local e = pick(ends)
      if not e then return end
      local t = e.t or e.w.transport
      if rnd(2) == 1 then t:pause_reading() else t:resume_reading() end
    end,
    function()  -- half-close
      local e = pick(ends)
      if e then if e.t then e.t:write_eof() else e.w:write_eof() end end
    end,
    function()  -- a task reading a stream
      local e = pick(ends)
      if e and e.r then
        tasks[#tasks + 1] = loom.create_task(function()
          return e.r:read(rnd(100000))
        end)
      end
    end,
    function()  -- a task draining a writer, for a while at most
      local e = pick(ends)
      if e and e.w then
        tasks[#tasks + 1] = loom.create_task(function()
          return loom.wait_for(function() return e.w:drain() end, 0.01)
        end)
      end
    end,
    function()  -- cancel a task
      local t = pick(tasks)
      if t then t:cancel() end
    end,
    function()  -- forget an end (its transport stays the loop's), collect
      if #ends > 0 then table.remove(ends, rnd(#ends)) end
      collectgarbage()
    end,
    function()  -- a server closes, or drops its clients
      local s = pick(servers)
      if not s then return end
      local k = rnd(3)
      if k == 1 then s:close() elseif k == 2 then s:close_clients()
      else s:abort_clients() end
    end,
    function()  -- a new connection, by protocol or streams
      local s = pick(servers)
      if not s or not s:is_serving() then return end
      local opts = tls[s] and { ssl = cctx, ssl_handshake_timeout = 5 } or nil
      local where = s:sockets()[1]
      if rnd(2) == 1 then
        local t
        if type(where) == "string" then
          t = loop:create_unix_connection(sink_proto, where)
        else
          t = loop:create_connection(sink_proto, "127.0.0.1", where.port, opts)
        end
        ends[#ends + 1] = { t = t }
        weak[t], all[#all + 1] = true, t
      else
        local r, w
        if type(where) == "string" then
          r, w = loom.open_unix_connection(where)
        else
          r, w = loom.open_connection("127.0.0.1", where.port, opts)
        end
        ends[#ends + 1] = { r = r, w = w }
        weak[r], weak[w], all[#all + 1] = true, true, w.transport
      end
    end,
    function() loom.sleep(rnd(3) == 1 and 0.002 or 0) end,
    function()  -- a child: started, fed, its stdin closed, killed, closed
      local p = pick(procs)
      local k = rnd(6)
      if (k == 1 or not p) and #procs < 3 then
        -- cat without the sanitizer runtime the specs' interpreter may
        -- have preloaded: killed while that runtime checks for leaks at
        -- its exit, it would report its own failure to do so
        p = loom.create_subprocess_exec("sh", "-c",
          "unset LD_PRELOAD; exec cat",
          { stdin = loom.PIPE, stdout = loom.PIPE })
        procs[#procs + 1] = p
        weak[p], allprocs[#allprocs + 1] = true, p
        ends[#ends + 1] = { r = p.stdout, w = p.stdin }
        all[#all + 1] = p.stdin.transport
        all[#all + 1] = p._transport:get_pipe_transport(1)
      elseif not p then return
      elseif k == 2 then p.stdin:write(("c"):rep(rnd(70000)))
      elseif k == 3 then p.stdin:close()
      elseif k == 4 then p:kill()
      elseif k == 5 then p:close()
      else table.remove(procs, rnd(#procs)) end
    end,
    function()  -- start_tls on a stream (the echo fails it), or set_protocol
      local e = pick(ends)
      if e and e.w and rnd(2) == 1 then
        tasks[#tasks + 1] = loom.create_task(function()
          return e.w:start_tls(cctx, { ssl_handshake_timeout = 0.05 })
        end)
      elseif e and e.t then
        e.t:set_protocol(sink_proto())
      end
    end,
    function()  -- a datagram: sent, or its endpoint closed or aborted
      local u = pick(udp)
      if not u then return end
      local k = rnd(6)
      if k == 1 then u:close() elseif k == 2 then u:abort()
      else u:sendto(("d"):rep(rnd(1400)), udp.addr) end
    end,
  }

  loop:run_until_complete(function()
    return loom.wait_for(loom.create_task(function()
      servers[1] = loop:create_server(echo_proto, "127.0.0.1", 0)
      servers[2] = loom.start_server(stream_echo, "127.0.0.1", 0)
      servers[3] = loop:create_server(echo_proto, "127.0.0.1", 0,
                                      { ssl = sctx })
      servers[4] = loom.start_server(stream_echo, "127.0.0.1", 0,
                                     { ssl = sctx })
      tls[servers[3]], tls[servers[4]] = true, true
      servers[5] = loop:create_unix_server(echo_proto, unixpath)
      local echo = loop:create_datagram_endpoint(function()
        return {
          connection_made = function(self, t) self.t = t end,
          datagram_received = function(self, d, a) self.t:sendto(d, a) end,
        }
      end, { local_addr = { host = "127.0.0.1", port = 0 } })
      udp.addr = echo:get_extra_info("sockname")
      udp[1] = echo
      for i = 2, 3 do
        udp[i] = loop:create_datagram_endpoint(function() return {} end,
          { local_addr = { host = "127.0.0.1", port = 0 } })
      end
      for _, u in ipairs(udp) do weak[u], all[#all + 1] = true, u end
      for _, s in ipairs(servers) do weak[s] = true end
      for _ = 1, 8 do try(actions[11]) end
      for _ = 1, 120 do try(actions[rnd(#actions)]) end
    end), 20)
  end)
  -- with the loop stopped: whatever still works must not break
  for _ = 1, 10 do
    local k = rnd(5)
    if k <= 5 then try(actions[k]) end
  end

  if finish == "wind down" then
    -- everything closed, the loop run until it settles: nothing anchored
    loop:run_until_complete(function()
      for _, t in pairs(all) do t:abort() end
      for _, s in ipairs(servers) do s:close(); s:abort_clients() end
      for _, t in ipairs(tasks) do t:cancel() end
      for _, p in pairs(allprocs) do p:close() end
      for _ = 1, 100 do
        if loop:_counts().anchors == 0 and #loop:_handles() == 0 then break end
        loom.sleep(0.005)
      end
    end)
    assert.are.equal(0, loop:_counts().anchors)
    loop:close()
  elseif finish == "close" then
    loop:close()
  end
  ends, tasks, servers, all, tls, udp, procs, allprocs, loop = nil, nil,
    nil, nil, nil, nil, nil, nil, nil
  os.remove(unixpath)
  H.capture_stderr(function()  -- tasks collected pending say so
    collectgarbage(); collectgarbage(); collectgarbage()
  end)
  assert.are.same({}, bad)
  assert.is_nil(next(weak), "something of the loop is still alive")
  assert.are.equal(before, nfds())
end

describe("lifetime", function()
  for seed = 1, 30 do
    for _, finish in ipairs{ "wind down", "close", "drop" } do
      it(("seed %d, then %s"):format(seed, finish), function()
        scenario(seed, finish)
      end)
    end
  end
end)
