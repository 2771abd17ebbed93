-- loom.dns
local M = {}
return M
