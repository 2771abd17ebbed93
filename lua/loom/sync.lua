-- loom.sync
local M = {}
return M
