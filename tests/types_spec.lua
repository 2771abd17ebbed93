-- types_spec.lua
-- scripts/check-types.lua, the check of the annotations in types/: it
-- passes on types/ as it is, and each kind of mismatch in a copy of it
-- makes it fail, naming the culprit. The check runs in a child
-- `loom --plain` (LOOM_EXE), bounded by `timeout`.

local H = require "helper"
local _ = require "loom"
H.setup()

-- Commands run through a shell that first drops LD_PRELOAD (set for the
-- interpreter under the sanitizer run; the executable needs none).
local function popen(cmd) return io.popen("unset LD_PRELOAD; " .. cmd) end

local ROOT = (function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  local p = popen("cd '" .. here:gsub("'", [['\'']]) .. "/..' && pwd")
  local dir = p:read("l")
  p:close()
  return dir
end)()
local EXE = os.getenv("LOOM_EXE") or (ROOT .. "/build/bin/loom")

local function shquote(s)
  return "'" .. s:gsub("'", [['\'']]) .. "'"
end

local readfile = H.readfile

local writefile = H.writefile

-- Runs the check on dir; returns its exit status and its output.
local function check(dir)
  local p = popen(("cd %s && timeout -s KILL 60 %s --plain scripts/check-types.lua %s 2>&1; echo \"status $?\"")
    :format(shquote(ROOT), shquote(EXE), shquote(dir)))
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("status (%d+)\n$"))
  return status, out
end

-- A copy of types/ in a new temporary directory, removed after the test.
local copies = {}
local function copy()
  local p = popen("mktemp -d")
  local dir = p:read("l")
  p:close()
  copies[#copies + 1] = dir
  assert(os.execute(("cp -r %s/types %s/"):format(shquote(ROOT), shquote(dir))))
  return dir .. "/types"
end

after_each(function()
  for _, dir in ipairs(copies) do
    os.execute("rm -rf " .. shquote(dir))
  end
  copies = {}
end)

-- Replaces the one occurrence of old in file (under dir) with new.
local function edit(dir, file, old, new)
  local path = dir .. "/" .. file
  local s = readfile(path)
  local i, j = s:find(old, 1, true)
  assert(i, "not found in " .. file .. ": " .. old)
  assert(not s:find(old, j + 1, true), "found twice in " .. file .. ": " .. old)
  writefile(path, s:sub(1, i - 1) .. new .. s:sub(j + 1))
end

describe("types/", function()
  it("annotates the module exactly", function()
    local status, out = check("types")
    assert.are.equal(0, status, out)
    assert.truthy(out:find("all annotated", 1, true), out)
  end)

  it("is definitions only: every file is a ---@meta file", function()
    local p = popen("cd " .. shquote(ROOT) .. " && find types -name '*.lua'")
    local n = 0
    for f in p:lines() do
      n = n + 1
      local first = readfile(ROOT .. "/" .. f):match("^[^\n]*")
      if f == "types/loom.lua" then
        -- the file `require "loom"` resolves to, returning the module
        assert.are.equal("---@meta loom", first)
        assert.truthy(readfile(ROOT .. "/" .. f):find("\nreturn loom\n$"))
      else
        assert.are.equal("---@meta _", first, f)
      end
    end
    p:close()
    assert.is_true(n > 1)
  end)
end)

describe("check-types.lua fails", function()
  it("on a public name without an annotation", function()
    local dir = copy()
    edit(dir, "loom/loop.lua", "function Loop:stop() end\n", "")
    edit(dir, "loom.lua", "function loom.wait_readable(fd) end\n", "")
    edit(dir, "loom/errors.lua", "---@field partial string the bytes read before the end\n", "")
    -- the names of the TLS objects come from a real TLS connection too
    edit(dir, "loom/tls.lua", "function TLSTransport:get_loop() end\n", "")
    edit(dir, "loom/tls.lua", "---@field session_reused boolean whether the session was resumed\n", "")
    edit(dir, "loom/errors.lua", "---@field verify_code integer OpenSSL's verification result (`X509_V_ERR_*`)\n", "")
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    assert.truthy(out:find("loom.Loop.stop: not annotated", 1, true), out)
    assert.truthy(out:find("loom.wait_readable: not annotated", 1, true), out)
    assert.truthy(out:find("loom.IncompleteReadError.partial: not annotated", 1, true), out)
    assert.truthy(out:find("loom.TLSTransport.get_loop: not annotated", 1, true), out)
    assert.truthy(out:find("loom.tls.SSLObject.session_reused: not annotated", 1, true), out)
    assert.truthy(out:find("loom.SSLCertVerificationError.verify_code: not annotated", 1, true), out)
  end)

  it("on an annotation of a name that does not exist", function()
    local dir = copy()
    edit(dir, "loom/sync.lua", "function Lock:locked() end",
         "function Lock:locked() end\nfunction Lock:try_acquire() end")
    edit(dir, "loom/net.lua", "---@field family \"inet\"|\"inet6\"|\"unix\"",
         "---@field family \"inet\"|\"inet6\"|\"unix\"\n---@field proto integer")
    edit(dir, "loom/subprocess.lua", "---@field cwd? string",
         "---@field cwd? string\n---@field user? string")
    edit(dir, "loom/net.lua", "---@field resume_writing? fun(self: loom.Protocol)",
         "---@field bytes_received? fun(self: loom.Protocol)\n---@field resume_writing? fun(self: loom.Protocol)")
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    for _, name in ipairs { "loom.Lock.try_acquire", "loom.TransportSocket.proto",
                            "loom.SubprocessTransportOptions.user",
                            "loom.Protocol.bytes_received" } do
      assert.truthy(out:find(name .. ": annotated, but not found at runtime", 1, true),
        out)
    end
  end)

  it("on a value of an alias that the C source does not have, or lacks", function()
    local dir = copy()
    edit(dir, "loom/net.lua", '---| "ip_ttl"', '---| "ip_tll"')
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    assert.truthy(out:find('loom.SocketOption: "ip_tll" annotated, but not in host/socket.c', 1, true), out)
    assert.truthy(out:find('loom.SocketOption: "ip_ttl" (host/socket.c) not annotated', 1, true), out)
  end)

  it("on a type that is not declared, a class declared twice, a class with nothing real behind it", function()
    local dir = copy()
    edit(dir, "loom/loop.lua", "---@return loom.TimerHandle\nfunction Loop:call_later",
         "---@return loom.TimerHandel\nfunction Loop:call_later")
    writefile(dir .. "/loom/extra.lua",
      "---@meta _\n---@class loom.Lock\n---@class loom.Gadget\n---@field size integer\n")
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    assert.truthy(out:find("unknown type loom.TimerHandel", 1, true), out)
    assert.truthy(out:find("class loom.Lock declared again", 1, true), out)
    assert.truthy(out:find("loom.Gadget: annotated", 1, true), out)
  end)

  it("on a @param that names no parameter of its function", function()
    local dir = copy()
    edit(dir, "loom/loop.lua", "---@param delay number seconds, >= 0\n---@param cb fun(...: any)\n---@param ... any arguments for `cb`\n---@return loom.TimerHandle\nfunction Loop:call_later",
         "---@param dealy number seconds, >= 0\n---@param cb fun(...: any)\n---@param ... any arguments for `cb`\n---@return loom.TimerHandle\nfunction Loop:call_later")
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    assert.truthy(out:find("@param dealy names no parameter of the function below", 1, true), out)
  end)

  it("on a file that is not Lua", function()
    local dir = copy()
    writefile(dir .. "/loom/broken.lua", "---@meta _\nlocal x = = 1\n")
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    assert.truthy(out:find("broken.lua does not load as Lua", 1, true), out)
  end)

  it("on a function annotated as such that is not callable at runtime", function()
    local dir = copy()
    edit(dir, "loom.lua", "---@field version string the version of loom\n", "")
    edit(dir, "loom.lua", "function loom.get_event_loop() end",
         "function loom.get_event_loop() end\nfunction loom.version() end")
    local status, out = check(dir)
    assert.are.equal(1, status, out)
    assert.truthy(out:find("loom.version: annotated as a function, but is a string", 1, true),
      out)
  end)
end)
