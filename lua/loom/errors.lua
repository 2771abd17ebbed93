-- loom.errors: the error classes. A class is a table: Class(msg [, fields])
-- makes an instance, Class:is(e) tests a caught value (subclasses count),
-- tostring(e) reads "Name: message".

local M = {}

local function is(cls, e)
  local mt = getmetatable(e)
  while mt ~= nil do
    if mt == cls then return true end
    mt = type(mt) == "table" and rawget(mt, "_parent") or nil
  end
  return false
end

local function class(name, parent)
  local cls = { name = name, _parent = parent, is = is }
  cls.__index = cls
  cls.__name = "loom." .. name
  function cls.__tostring(e)
    local msg = rawget(e, "message")
    if msg == nil then return name end
    return name .. ": " .. tostring(msg)
  end
  setmetatable(cls, {
    __index = parent,
    __call = function(c, msg, fields)
      local e = {}
      if fields ~= nil and type(fields) ~= "table" then
        error(("bad argument #2 to '%s' (table expected, got %s)")
          :format(name, type(fields)), 2)
      end
      if fields ~= nil then
        for k, v in pairs(fields) do e[k] = v end
      end
      e.message = msg
      return setmetatable(e, c)
    end,
    __tostring = function() return "loom." .. name end,
  })
  M[name] = cls
  return cls
end

local Error = class("Error")
class("CancelledError", Error)
class("TimeoutError", Error)
class("InvalidStateError", Error)
class("IncompleteReadError", Error)
class("LimitOverrunError", Error)
class("QueueEmpty", Error)
class("QueueFull", Error)
class("QueueShutDown", Error)
class("BrokenBarrierError", Error)
class("SendfileNotAvailableError", Error)
-- OSError(msg, {code = "ECONNREFUSED", errno = -111}): what the system
-- or libuv reported; message reads "ECONNREFUSED: connection refused".
class("OSError", Error)
-- SSLError(msg, {reason = "WRONG_VERSION_NUMBER", library = "SSL"}): a
-- TLS failure; SSLCertVerificationError adds .verify_code and
-- .verify_message (the peer's certificate did not verify).
local SSLError = class("SSLError", M.OSError)
class("SSLCertVerificationError", SSLError)
local EG = class("ExceptionGroup", Error)
-- ExceptionGroup(msg, errors): .errors is the list of errors it carries.
getmetatable(EG).__call = function(c, msg, errs)
  if errs ~= nil and type(errs) ~= "table" then
    error(("bad argument #2 to 'ExceptionGroup' (table expected, got %s)")
      :format(type(errs)), 2)
  end
  local e = setmetatable({ message = msg, errors = errs or {} }, c)
  if type(errs) == "table" and errs.errors == nil and #errs == 0 then
    for k, v in pairs(errs) do e[k] = v end
  end
  return e
end

M.class = class
return M
