-- loom.fds
local M = {}
return M
