-- loom.signals
local M = {}
return M
