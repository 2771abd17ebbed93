-- loom.context: ContextVar, task-local values in the manner of Python's
-- contextvars. Each task has a context (a table keyed by ContextVar); a
-- new task starts with a copy of the context of the task that created it
-- (the core copies it), and code outside any task uses the root context.

local core = require "loom.core"

local M = {}

local root = {}
core._context(nil, root)

local NIL = setmetatable({}, { __name = "loom.context.nil" })

-- The context of the running task, or the root one; nil when the task has
-- none yet and create is false.
local function current(create)
  local loop = core._get_running_loop()
  local task = loop and core.current_task(loop)
  if task then return core._context(task, create) end
  return root
end

local ContextVar = {}
ContextVar.__index = ContextVar
ContextVar.__name = "loom.ContextVar"

function ContextVar:__tostring()
  return ("<ContextVar name=%q>"):format(self.name)
end

-- ContextVar(name [, default])
local function new(_, name, ...)
  if type(name) ~= "string" then
    error("bad argument #1 to 'ContextVar' (string expected, got "
      .. type(name) .. ")", 2)
  end
  local v = setmetatable({ name = name }, ContextVar)
  if select("#", ...) > 0 then
    v.has_default, v.default = true, (...)
  end
  return v
end

-- Raises the bad-self error of method fname at the caller's line.
local function checkself(self, fname)
  if getmetatable(self) ~= ContextVar then
    local t = type(self)
    error(("bad argument #1 to '%s' (loom.ContextVar expected, got %s)")
      :format(fname, t == "table" and (getmetatable(self) or {}).__name or t),
      3)
  end
end

-- var:get([default]): the value in the current context, else default,
-- else the variable's default; an error when there is none.
function ContextVar:get(...)
  checkself(self, "get")
  local ctx = current(false)
  local v = ctx and ctx[self]
  if v ~= nil then
    if v == NIL then return nil end
    return v
  end
  if select("#", ...) > 0 then return (...) end
  if self.has_default then return self.default end
  error(("ContextVar %q has no value"):format(self.name), 2)
end

-- var:set(value) -> token: sets the value in the current context only.
function ContextVar:set(value)
  checkself(self, "set")
  local ctx = current(true)
  local token = { var = self, old = ctx[self], ctx = ctx }
  if value == nil then value = NIL end
  ctx[self] = value
  return token
end

-- var:reset(token): restores the value the variable had before the set
-- that made the token; once per token, in the same context.
function ContextVar:reset(token)
  checkself(self, "reset")
  if type(token) ~= "table" or token.var ~= self then
    error("bad argument #1 to 'reset' (token of this ContextVar expected)", 2)
  end
  if token.used then error("reset: the token has already been used", 2) end
  if token.ctx ~= current(false) then
    error("reset: the token was made in a different context", 2)
  end
  token.used = true
  token.ctx[self] = token.old
end

M.ContextVar = setmetatable({}, {
  __call = new,
  __index = ContextVar,
  __name = "loom.ContextVar",
})

return M
