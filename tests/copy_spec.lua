-- copy_spec.lua: copying values between Lua states (host/copy.c), through
-- loom.core._copy, which encodes its arguments into a buffer and decodes
-- them back in the same state: what to_thread, channels and threads do
-- between two states.

local H = require "helper"
local loom = require "loom"
H.setup()

local copy = loom._core._copy
local raised, contains = H.raised, H.contains

describe("copying values", function()
  it("keeps nil, booleans, integers and floats apart, and strings byte for byte", function()
    local big = string.rep("\0\255xy", 10000)
    local n = select("#", copy(nil, true, false, 3, 3.0, -0.0, 1/0, "a\0b", big, nil))
    assert.are.equal(10, n)
    local a, b, c, d, e, f, g, h, i, j = copy(nil, true, false, 3, 3.0, -0.0, 1/0, "a\0b", big, nil)
    assert.is_nil(a)
    assert.is_true(b)
    assert.is_false(c)
    assert.are.equal("integer", math.type(d))
    assert.are.equal("float", math.type(e))
    assert.are.equal(3, d)
    assert.are.equal(3.0, e)
    assert.are.equal("-0.0", tostring(f))
    assert.are.equal(math.huge, g)
    assert.are.equal("a\0b", h)
    assert.are.equal(big, i)
    assert.is_nil(j)
    local nan = copy(0/0)
    assert.is_true(nan ~= nan)
    assert.are.equal(math.maxinteger, (copy(math.maxinteger)))
    assert.are.equal(math.mininteger, (copy(math.mininteger)))
  end)

  it("copies nested tables, with any keys, into new tables", function()
    local t = { 1, 2, { x = "y", [true] = false, [2.5] = "f", [3] = { deep = { deeper = {} } } } }
    local c = copy(t)
    assert.are_not.equal(t, c)
    assert.are.same(t, c)
    assert.are.equal("y", c[3].x)
    assert.is_false(c[3][true])
    assert.are.equal("f", c[3][2.5])
    assert.are.equal("table", type(c[3][3].deep.deeper))
  end)

  it("keeps shared subtables shared and cycles cyclic, also across arguments", function()
    local shared = { n = 1 }
    local t = { a = shared, b = shared }
    t.self = t
    local keyt = {}
    t[keyt] = keyt
    local c, d = copy(t, shared)
    assert.are.equal(c.a, c.b)
    assert.are.equal(c, c.self)
    assert.are.equal(c.a, d)
    local k = next({}) -- find the table key
    for key, v in pairs(c) do
      if type(key) == "table" then k = key; assert.are.equal(key, v) end
    end
    assert.is_not_nil(k)
    assert.are_not.equal(keyt, k)
  end)

  it("keeps sharing among many tables", function()
    local nodes = {}
    for i = 1, 500 do nodes[i] = { id = i } end
    for i = 1, 500 do nodes[i].next = nodes[i % 500 + 1]; nodes[i].prev = nodes[(i - 2) % 500 + 1] end
    local c = copy(nodes)
    for i = 1, 500 do
      assert.are.equal(i, c[i].id)
      assert.are.equal(c[i % 500 + 1], c[i].next)
      assert.are.equal(c[i], c[i].next.prev)
    end
  end)

  it("copies functions as bytecode: _ENV becomes the target's globals", function()
    local function add(a, b) return a + b end
    local function greet(name) return string.format("hi %s", name) end
    local c1, c2, c3 = copy(add, greet, add)
    assert.are_not.equal(add, c1)
    assert.are.equal(5, c1(2, 3))
    assert.are.equal("hi you", c2("you"))
    assert.are.equal(c1, c3)  -- the same function twice is one copy
    local t = copy({ f = add, g = { add } })
    assert.are.equal(t.f, t.g[1])
  end)

  it("gives modules captured as upvalues back by name", function()
    local str, lm = string, loom
    local function f(x) return str.upper(x), lm.version end
    local c = copy(f)
    assert.are.same({ "ABC", loom.version }, { c("abc") })
  end)

  it("keeps debug information, so errors name the file and line", function()
    local function fails() error("boom") end
    local line = H.line(fails)
    local c = copy(fails)
    local e = raised(c)
    contains(("copy_spec.lua:%d: boom"):format(line), e)
  end)

  it("copies loom's error values with their class", function()
    local e = loom.TimeoutError("late", { extra = 1 })
    local c = copy(e)
    assert.are_not.equal(e, c)
    assert.is_true(loom.TimeoutError:is(c))
    assert.is_true(loom.Error:is(c))
    assert.are.equal("TimeoutError: late", tostring(c))
    assert.are.equal(1, c.extra)
  end)

  it("refuses a function with upvalues, naming it, where it is and the upvalue", function()
    local count = 0
    local function counter() count = count + 1 end
    local line = H.line(counter)
    local e = raised(copy, 1, counter)
    assert.are.equal(("bad argument #2 to '%s' (function 'counter' (%s:%d) has upvalue "
      .. "'count' and cannot be copied to another thread)")
      :format(e:match("to '([^']+)'"), debug.getinfo(1, "S").short_src, line), e)
    e = raised(copy, { list = { 1, 2, counter } })
    contains("bad argument #1", e)
    contains(("function 'counter' (%s:%d) at list[3] has upvalue 'count' and cannot be copied to another thread")
      :format(debug.getinfo(1, "S").short_src, line), e)
  end)

  it("refuses userdata, coroutines, C functions and light userdata, naming the key path", function()
    contains("(a FILE* cannot be copied to another thread)", raised(copy, io.stdout))
    contains("bad argument #3", raised(copy, 1, 2, io.stdout))
    contains("(a FILE* at a.b cannot be copied to another thread)",
      raised(copy, { a = { b = io.stdout } }))
    contains("(a coroutine at co cannot be copied to another thread)",
      raised(copy, { co = coroutine.create(print) }))
    contains("(C function 'print' at [\"two words\"][2] cannot be copied to another thread)",
      raised(copy, { ["two words"] = { 1, print } }))
    contains("(a C function cannot be copied to another thread)",
      raised(copy, string.gmatch("", "")))
    contains("(a FILE* used as a key in t cannot be copied to another thread)",
      raised(copy, { t = { [io.stdout] = 1 } }))
    contains("(a loom.Future cannot be copied to another thread)",
      raised(copy, H.loop():create_future()))
    contains("(a table with a metatable at x cannot be copied to another thread)",
      raised(copy, { x = setmetatable({}, {}) }))
  end)

  it("refuses tables nested too deeply, without overflowing the C stack", function()
    local t = {}
    local cur = t
    for _ = 1, 3000 do cur.next = {}; cur = cur.next end
    contains("nested more than 1000 levels", raised(copy, t))
    cur = {}
    local t2 = cur
    for _ = 1, 900 do cur.next = {}; cur = cur.next end
    local c = copy(t2)
    local depth = 0
    while c.next do c = c.next; depth = depth + 1 end
    assert.are.equal(900, depth)
  end)

  it("copies channels and loops as handles to the same object", function()
    local ch = loom.channel()
    local c = copy(ch)
    assert.are.equal(ch, c)
    assert.are.equal(rawequal(ch, c), false)
    local loop = H.loop()
    local r1, r2 = copy(loop, { loop })
    assert.are.equal("loom.RemoteLoop", tostring(r1):match("^%S+"))
    assert.are.equal(r1, r2[1])
    assert.is_false(r1:is_closed())
    loop:close()
    assert.is_true(r1:is_closed())
    contains("event loop is closed", raised(copy, loop))
  end)
end)
