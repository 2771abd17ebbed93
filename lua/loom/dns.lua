-- loom.dns: name resolution on libuv's thread pool (host/dns.c).
--
-- loom.getaddrinfo(host, port, [hints]) and loom.getnameinfo(addr, [flags])
-- resolve on the running loop, inside a task: they await the request's
-- future. The loop methods of the same names are C (loop:getaddrinfo,
-- loop:getnameinfo); see docs/dns.md.

local core = require "loom.core"

local M = {}

M.getaddrinfo = core.getaddrinfo
M.getnameinfo = core.getnameinfo

return M
