---@meta _

-- Context variables (docs/manual.md, "Context variables").

---A task-local value, as Python's `contextvars.ContextVar`: each task
---has its own context, a copy of its creator's.
---`loom.ContextVar(name [, default])` makes one.
---@class loom.ContextVar
---@field name string
---@field default any the default given to the constructor, if any
---@field has_default? boolean whether a default was given
---@overload fun(name: string, default?: any): loom.ContextVar
local ContextVar = {}

---The value in the current context, else `default`, else the
---variable's default; an error when there is none.
---@param default? any
---@return any
function ContextVar:get(default) end

---Sets the value in the current context only; returns a token for
---`reset`.
---@param value any
---@return loom.ContextToken
function ContextVar:set(value) end

---Restores the value the variable had before the `set` that made the
---token; once per token, in the same context.
---@param token loom.ContextToken
function ContextVar:reset(token) end

---What `ContextVar:set` returns.
---@class loom.ContextToken
---@field var loom.ContextVar the variable it was made by
---@field old any the value before the set
---@field ctx table the context it was made in
---@field used? boolean set once `reset` used it
