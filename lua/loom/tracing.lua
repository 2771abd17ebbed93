-- loom.tracing: loom.trace.start(path) / loom.trace.stop(), a trace of
-- the loop in Chrome's trace-event JSON (host/trace.c writes it; open it
-- in https://ui.perfetto.dev or chrome://tracing).

local core = require "loom.core"

local trace = {}

-- trace.start(path): starts writing the trace of every loop of this
-- thread to the file at path (replaced). Raises when a trace is being
-- written already or the file cannot be made.
function trace.start(path)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'start' (string expected, got %s)")
      :format(type(path)), 2)
  end
  if path:find("\0", 1, true) then
    error("bad argument #1 to 'start' (path contains a zero byte)", 2)
  end
  local ok, err = core._trace_start(path)
  if not ok then error("trace.start: " .. tostring(err), 2) end
  return true
end

-- trace.stop(): ends the trace and closes the file; returns the number of
-- events written, or nil when no trace was being written.
function trace.stop()
  return core._trace_stop()
end

-- trace.active(): whether a trace is being written.
trace.active = core._trace_active

return { trace = trace }
