-- loom.combinators
local M = {}
return M
