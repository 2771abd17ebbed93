-- docs_spec.lua: the code of the manual runs, and prints what the manual
-- says it prints.
--
-- Every ```lua block of docs/*.md is one of:
--   ```lua            a program: it is run, and must exit with status 0;
--   ```lua fragment   a piece of a program (names it does not define,
--                     `-->` results): it is not run, and is counted here
--                     so that the number of blocks left unrun is visible.
-- A program followed by a ```text (or ```output) block, with nothing but
-- blank lines between them, must print exactly that text on stdout.
--
-- A program that drives its own loop (it calls loom.run,
-- run_until_complete or run_forever) runs as a plain Lua program under
-- `loom --plain`; any other runs as a script, `loom file.lua`, whose chunk
-- is the main task and may await at top level. Each runs in a fresh
-- directory of its own, with the executable of the build under test
-- (LOOM_EXE, default build/bin/loom), through a shell that drops
-- LD_PRELOAD (under the asan-module run the interpreter has the sanitizer
-- runtime preloaded; the programs run here must not inherit it), bounded
-- by `timeout`.

local ROOT = (function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  local p = io.popen("cd '" .. here:gsub("'", [['\'']]) .. "/..' && pwd")
  local dir = p:read("l")
  p:close()
  return dir
end)()
local function shquote(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

-- The programs run in directories of their own: the path must be absolute.
local EXE = os.getenv("LOOM_EXE") or (ROOT .. "/build/bin/loom")
if EXE:sub(1, 1) ~= "/" then
  local p = io.popen("unset LD_PRELOAD; realpath " .. shquote(EXE))
  EXE = p:read("l") or EXE
  p:close()
end

local function readfile(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Every command drops LD_PRELOAD (see above): mktemp, ls and rm must not
-- run with the sanitizer runtime either.
local function lines_of(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; " .. cmd))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- The fenced blocks of a page: {info =, body =, line =} in order.
local function blocks(text)
  local out, cur, n = {}, nil, 0
  for line in (text .. "\n"):gmatch("(.-)\n") do
    n = n + 1
    local fence, info = line:match("^(```+)%s*(.-)%s*$")
    if cur then
      if fence and info == "" then
        out[#out + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    elseif fence then
      cur = { info = info, lines = {}, line = n }
    else
      -- prose between two blocks separates them, blank lines do not
      if line:match("%S") and out[#out] then out[#out].followed = true end
    end
  end
  assert(cur == nil, "a fence left open at line " .. (cur and cur.line or 0))
  for _, b in ipairs(out) do
    b.body = table.concat(b.lines, "\n") .. "\n"
    b.lines = nil
  end
  return out
end

local pages = lines_of("ls " .. shquote(ROOT) .. "/docs/*.md")

describe("docs/", function()
  it("has pages to check", function()
    assert.is_true(#pages > 10)
  end)
end)

local totals = { run = 0, checked = 0, fragments = 0 }

for _, path in ipairs(pages) do
  local page = "docs/" .. path:match("[^/]*$")
  local bs = blocks(readfile(path))
  local programs, fragments = {}, {}
  for i, b in ipairs(bs) do
    local kind = b.info:match("^lua%f[%W]") and b.info
    if kind == "lua" then
      local out = bs[i + 1]
      if out and not b.followed and (out.info == "text" or out.info == "output") then
        b.expected = out.body
      end
      programs[#programs + 1] = b
    elseif kind == "lua fragment" then
      fragments[#fragments + 1] = b.line
    elseif kind then
      b.bad = true
      programs[#programs + 1] = b
    end
  end

  describe(page:sub(6), function()
    it(("marks its fragments (%d block(s) not run%s)"):format(#fragments,
        #fragments > 0 and ", at lines " .. table.concat(fragments, ", ") or ""), function()
      for _, b in ipairs(programs) do
        assert(not b.bad, ("%s:%d: ```%s: a lua block is ```lua or ```lua fragment")
          :format(page, b.line, b.info))
      end
      totals.fragments = totals.fragments + #fragments
    end)

    for _, b in ipairs(programs) do
      if not b.bad then
        local plain = b.body:find("loom%.run%(") or b.body:find("run_until_complete%(")
          or b.body:find("run_forever%(")
        it(("line %d runs%s%s"):format(b.line, plain and " (--plain)" or "",
            b.expected and ", printing what the page shows" or ""), function()
          local dir = lines_of("mktemp -d")[1]
          finally(function() os.execute("unset LD_PRELOAD; rm -rf " .. shquote(dir)) end)
          writefile(dir .. "/block.lua", b.body)
          local cmd = ("cd %s && timeout -s KILL 120 %s %s block.lua </dev/null >out 2>err; echo $?")
            :format(shquote(dir), shquote(EXE), plain and "--plain" or "")
          local status = tonumber(lines_of(cmd)[1])
          local out, err = readfile(dir .. "/out"), readfile(dir .. "/err")
          local where = ("%s:%d"):format(page, b.line)
          assert(status == 0, ("%s exited with status %s\n--- stdout\n%s--- stderr\n%s")
            :format(where, status, out, err))
          totals.run = totals.run + 1
          if b.expected then
            assert.are.equal(b.expected, out, where .. " printed something else")
            totals.checked = totals.checked + 1
          end
        end)
      end
    end
  end)
end

describe("docs/ code blocks", function()
  it("were all run or counted as fragments", function()
    local n = 0
    for _, path in ipairs(pages) do
      for _, b in ipairs(blocks(readfile(path))) do
        if b.info:match("^lua%f[%W]") then n = n + 1 end
      end
    end
    assert.are.equal(n, totals.run + totals.fragments,
      "every lua block is run (and passes) or is a marked fragment")
    assert.is_true(totals.checked > 0)
  end)
end)
