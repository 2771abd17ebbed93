---@meta _

-- Error classes (docs/manual.md, "Errors"). A class is a table:
-- `Class(msg [, fields])` makes an instance, `Class:is(e)` tests a caught
-- value (subclasses count), `tostring(e)` reads "Name: message".

---The base of loom's error classes.
---@class loom.Error
---@field name string the class name, e.g. `"TimeoutError"`
---@field message any the message given to the constructor
---@overload fun(message?: any, fields?: table): loom.Error
local Error = {}

---Whether `e` is an instance of this class or of a subclass.
---@param e any a caught error value
---@return boolean
function Error:is(e) end

---The task (or future) was cancelled; `message` is the cancel message.
---@class loom.CancelledError: loom.Error
---@overload fun(message?: any, fields?: table): loom.CancelledError

---A deadline passed.
---@class loom.TimeoutError: loom.Error
---@overload fun(message?: any, fields?: table): loom.TimeoutError

---A future was used in a state that does not allow it (the result of a
---pending future, a second `set_result`).
---@class loom.InvalidStateError: loom.Error
---@overload fun(message?: any, fields?: table): loom.InvalidStateError

---The end of the stream came before the bytes expected.
---@class loom.IncompleteReadError: loom.Error
---@field partial string the bytes read before the end
---@field expected integer|nil the bytes expected; `nil` for `readuntil`
---@overload fun(message?: any, fields?: {partial: string, expected: integer|nil}): loom.IncompleteReadError

---A separator was not found within the reader's limit.
---@class loom.LimitOverrunError: loom.Error
---@field consumed integer the bytes to consume to get past the overrun
---@overload fun(message?: any, fields?: {consumed: integer}): loom.LimitOverrunError

---`get_nowait` on an empty queue.
---@class loom.QueueEmpty: loom.Error
---@overload fun(message?: any, fields?: table): loom.QueueEmpty

---`put_nowait` on a full queue.
---@class loom.QueueFull: loom.Error
---@overload fun(message?: any, fields?: table): loom.QueueFull

---The queue was shut down.
---@class loom.QueueShutDown: loom.Error
---@overload fun(message?: any, fields?: table): loom.QueueShutDown

---The barrier is broken, or was reset or aborted while the task waited.
---@class loom.BrokenBarrierError: loom.Error
---@overload fun(message?: any, fields?: table): loom.BrokenBarrierError

---sendfile(2) cannot send this file, and `opts.fallback` is `false`.
---@class loom.SendfileNotAvailableError: loom.Error
---@overload fun(message?: any, fields?: table): loom.SendfileNotAvailableError

---What the system or libuv reported; the message reads
---`"ECONNREFUSED: connection refused"`.
---@class loom.OSError: loom.Error
---@field code? string the error's name, e.g. `"ECONNREFUSED"`, `"ENOENT"`, `"EAI_NONAME"`
---@field errno? integer libuv's (negative) error number
---@field filename? string the path, for the errors of files
---@field filename2? string the second path of `rename` and `copyfile`
---@field errors? any[] for "Multiple exceptions" of a connection: the error of each address tried
---@overload fun(message?: any, fields?: {code?: string, errno?: integer, filename?: string, filename2?: string, errors?: any[]}): loom.OSError

---A TLS failure; the message reads `[SSL: REASON] what: detail`.
---@class loom.SSLError: loom.OSError
---@field reason? string the failure as Python names it, e.g. `"WRONG_VERSION_NUMBER"`, `"UNEXPECTED_EOF_WHILE_READING"`
---@field library? string OpenSSL's library that reported it, e.g. `"SSL"`
---@overload fun(message?: any, fields?: {reason?: string, library?: string}): loom.SSLError

---A certificate that did not verify (reason `"CERTIFICATE_VERIFY_FAILED"`).
---@class loom.SSLCertVerificationError: loom.SSLError
---@field verify_code integer OpenSSL's verification result (`X509_V_ERR_*`)
---@field verify_message string the reason, e.g. `"certificate has expired"`
---@overload fun(message?: any, fields?: {reason?: string, library?: string, verify_code?: integer, verify_message?: string}): loom.SSLCertVerificationError

---Several errors at once: a task group's children that failed.
---@class loom.ExceptionGroup: loom.Error
---@field errors any[] the errors it carries
---@overload fun(message?: any, errors?: any[]): loom.ExceptionGroup
