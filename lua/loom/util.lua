-- loom.util: small helpers the Lua modules share (not part of the public
-- module).

local getmetatable, rawget, type = getmetatable, rawget, type

local M = {}

-- The type name of v for messages, as luaL_typeerror prints it: its
-- metatable's __name, else type(v).
function M.typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" then
    local name = rawget(mt, "__name")
    if type(name) == "string" then return name end
  end
  return type(v)
end

-- Whether v can be called: a function, or a value whose metatable has
-- __call.
function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__call") ~= nil
end

return M
