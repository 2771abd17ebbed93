---@meta _

-- Files on libuv's thread pool (docs/fs.md). Every function and method
-- that touches the file system suspends the running task.

---`loom.fs`: files and directories.
---@class loom.fs
local fs = {}

---@alias loom.fs.Mode
---| "r" # read (default)
---| "w" # write, created or truncated
---| "a" # append
---| "r+" # read and write
---| "w+" # read and write, created or truncated
---| "a+" # read and append
---| "wx" # write, created: fails with EEXIST when it exists
---| "ax" # append, created exclusively
---| string # the same with "b" (ignored) or "x"

---A permission mode: an integer 0..4095 or a string of octal digits
---(`"755"`).
---@alias loom.fs.Perm integer|string

---@alias loom.fs.Type "file"|"directory"|"link"|"fifo"|"socket"|"char"|"block"|"unknown"

---Options of `fs.open`.
---@class loom.fs.OpenOptions
---@field mode? loom.fs.Perm the permissions of a file it creates (default 0666, less the umask)

---Options of `fs.write_file`.
---@class loom.fs.WriteFileOptions
---@field atomic? boolean write a temporary file, sync it, then rename it over `path`
---@field mode? loom.fs.Perm the permissions of a file it creates

---Options of `fs.mkdir`.
---@class loom.fs.MkdirOptions
---@field mode? loom.fs.Perm default 0777, less the umask
---@field parents? boolean make the missing parents too, as `mkdir -p`

---Options of `fs.copyfile`.
---@class loom.fs.CopyfileOptions
---@field exclusive? boolean fail with `EEXIST` when `dst` exists
---@field ficlone? boolean try a copy-on-write clone first

---Options of `loop:sendfile`.
---@class loom.SendfileOptions
---@field fallback? boolean `false`: raise `SendfileNotAvailableError` instead of reading and writing

---What `stat`, `lstat` and `file:stat()` return.
---@class loom.fs.Stat
---@field type loom.fs.Type
---@field size integer bytes
---@field mode integer the whole `st_mode`
---@field perm integer the permission bits, `mode & 0xfff`
---@field atime number seconds since the epoch
---@field mtime number
---@field ctime number
---@field birthtime? number only where the file system records it
---@field ino integer
---@field dev integer
---@field rdev integer
---@field nlink integer
---@field uid integer
---@field gid integer
---@field blksize integer
---@field blocks integer

---Opens a file (modes as `io.open`, plus `"x"`).
---@async
---@param path string
---@param mode? loom.fs.Mode
---@param opts? loom.fs.OpenOptions
---@return loom.File
function fs.open(path, mode, opts) end

---The whole file.
---@async
---@param path string
---@return string
function fs.read_file(path) end

---Writes `data` as the whole file (created or truncated).
---@async
---@param path string
---@param data string
---@param opts? loom.fs.WriteFileOptions
---@return true
function fs.write_file(path, data, opts) end

---Follows symbolic links.
---@async
---@param path string
---@return loom.fs.Stat
function fs.stat(path) end

---The stat table of a link itself.
---@async
---@param path string
---@return loom.fs.Stat
function fs.lstat(path) end

---@async
---@param path string
---@param opts? loom.fs.MkdirOptions
---@return true
function fs.mkdir(path, opts) end

---Removes an empty directory.
---@async
---@param path string
---@return true
function fs.rmdir(path) end

---Removes a file.
---@async
---@param path string
---@return true
function fs.unlink(path) end

---Renames (replacing `to` when it exists).
---@async
---@param from string
---@param to string
---@return true
function fs.rename(from, to) end

---An iterator of `name, type` over the entries of a directory, sorted by
---name, without `.` and `..`.
---@async
---@param path string
---@return fun(): string, loom.fs.Type
function fs.scandir(path) end

---Makes a new directory from `template` (ending in `XXXXXX`); returns
---its path.
---@async
---@param template string
---@return string
function fs.mkdtemp(template) end

---@async
---@param src string
---@param dst string
---@param opts? loom.fs.CopyfileOptions
---@return true
function fs.copyfile(src, dst, opts) end

---The target of a symbolic link.
---@async
---@param path string
---@return string
function fs.readlink(path) end

---The canonical absolute path.
---@async
---@param path string
---@return string
function fs.realpath(path) end

---@async
---@param path string
---@param mode loom.fs.Perm
---@return true
function fs.chmod(path, mode) end

---@alias loom.fs.Format integer|"a"|"l"|"L"|"*a"|"*l"|"*L"

---An open file (`loom.File`). `<close>` closes it.
---@class loom.File
local File = {}

---Reads by `io.read`'s formats (a count, `"a"`, `"l"`, `"L"`; default
---`"l"`), one value per format; `nil` at the end.
---@async
---@param ... loom.fs.Format
---@return string|nil ...
function File:read(...) end

---An iterator calling `file:read(...)` each time.
---@async
---@param ... loom.fs.Format
---@return fun(): string
function File:lines(...) end

---Writes strings and numbers in order, as one request; returns the file.
---@async
---@param ... string|number
---@return loom.File
function File:write(...) end

---Sets and returns the position, as `io`'s seek.
---@async
---@param whence? "set"|"cur"|"end"
---@param offset? integer
---@return integer
function File:seek(whence, offset) end

---fsync(2); returns the file.
---@async
---@return loom.File
function File:sync() end

---Returns the file: writes are not buffered.
---@return loom.File
function File:flush() end

---The stat table of the open file.
---@async
---@return loom.fs.Stat
function File:stat() end

---@return integer
function File:fileno() end

---Closes; inside a task it waits for close(2) and raises its error.
---Closing a closed file does nothing.
---@return true
function File:close() end
