---@meta _

-- Traces of the loop in Chrome's trace-event JSON (docs/tracing.md).

---`loom.trace`: one trace per thread, of every loop that runs in it.
---@class loom.trace
local trace = {}

---Starts writing to the file at `path` (replaced); raises when a trace
---is being written already or the file cannot be made.
---@param path string
---@return true
function trace.start(path) end

---Ends the trace and closes the file; the number of events, or `nil`
---when none was being written.
---@return integer|nil
function trace.stop() end

---Whether a trace is being written.
---@return boolean
function trace.active() end
