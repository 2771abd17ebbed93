-- loom.queues
local M = {}
return M
