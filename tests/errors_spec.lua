-- errors_spec.lua
-- The error classes (lua/loom/errors.lua) and the error values the core
-- raises with them.

local H = require "helper"
local loom = require "loom"
H.setup()

local NAMES = {
  "CancelledError", "TimeoutError", "InvalidStateError",
  "IncompleteReadError", "LimitOverrunError", "QueueEmpty", "QueueFull",
  "QueueShutDown", "BrokenBarrierError", "ExceptionGroup",
  "SendfileNotAvailableError",
}

describe("error classes", function()
  it("every class of the contract is a table on the loom module, all distinct", function()
    local seen = {}
    for _, name in ipairs(NAMES) do
      local cls = loom[name]
      assert.is_table(cls, name)
      assert.is_nil(seen[cls], name .. " is the same table as another class")
      seen[cls] = true
      assert.is_function(cls.is, name)
    end
  end)

  for _, name in ipairs(NAMES) do
    describe(name, function()
      local cls = loom[name]

      it("Class(msg) makes an instance with .message", function()
        local e = cls("something happened")
        assert.is_table(e)
        assert.equal("something happened", e.message)
        assert.is_true(cls:is(e))
      end)

      it("Class(msg, fields) takes a table of fields, nothing else", function()
        assert.equal(7, cls("m", { extra = 7 }).extra)
        local e = H.raised(function() local _ = cls("m", true) end)
        assert.matches("^[^:]*errors_spec%.lua:%d+: bad argument #2 to '" .. name
          .. "' %(table expected, got boolean%)", e)
      end)

      it("tostring reads 'Name: message', or just 'Name' with no message", function()
        assert.equal(name .. ": bad thing", tostring(cls("bad thing")))
        assert.equal(name, tostring(cls()))
        assert.is_nil(cls().message)
      end)

      it("Class:is is false for other classes' instances and for other values", function()
        for _, other in ipairs(NAMES) do
          if other ~= name then
            assert.is_false(cls:is(loom[other]("x")), other)
          end
        end
        assert.is_false(cls:is(name .. ": x"))
        assert.is_false(cls:is(name))
        assert.is_false(cls:is(nil))
        assert.is_false(cls:is(42))
        assert.is_false(cls:is(true))
        assert.is_false(cls:is({ message = "x" }))
        assert.is_false(cls:is(setmetatable({}, { __index = cls })))
        assert.is_false(cls:is(setmetatable({}, { __metatable = "locked" })))
        assert.is_false(cls:is(print))
        assert.is_false(cls:is(coroutine.create(print)))
        assert.is_false(cls:is(cls))
      end)

      it("an instance survives error() and pcall unchanged", function()
        local e = cls("thrown")
        local ok, got = pcall(error, e)
        assert.is_false(ok)
        assert.is_true(rawequal(e, got))
        assert.is_true(cls:is(got))
      end)
    end)
  end

  it("Class:is is false for a future and a loop", function()
    local loop = H.loop()
    local f = loop:create_future()
    assert.is_false(loom.CancelledError:is(f))
    assert.is_false(loom.InvalidStateError:is(loop))
  end)

  it("Class(msg, fields) copies the fields onto the instance", function()
    local e = loom.IncompleteReadError("short read", { partial = "ab", expected = 5 })
    assert.equal("ab", e.partial)
    assert.equal(5, e.expected)
    assert.equal("short read", e.message)
    assert.equal("IncompleteReadError: short read", tostring(e))
    local l = loom.LimitOverrunError("too long", { consumed = 12 })
    assert.equal(12, l.consumed)
    assert.is_true(loom.LimitOverrunError:is(l))
  end)

  it("the fields table is not the instance: changing one leaves the other", function()
    local fields = { partial = "x" }
    local e = loom.IncompleteReadError("m", fields)
    e.partial = "y"
    assert.equal("x", fields.partial)
    assert.is_nil(rawget(fields, "message"))
  end)

  it("instances are distinct tables", function()
    local a, b = loom.TimeoutError("t"), loom.TimeoutError("t")
    assert.is_false(rawequal(a, b))
    assert.equal(tostring(a), tostring(b))
  end)

  it("a non-string message is shown through tostring", function()
    assert.equal("QueueFull: 3", tostring(loom.QueueFull(3)))
    local inner = loom.TimeoutError("inner")
    assert.equal("CancelledError: TimeoutError: inner",
      tostring(loom.CancelledError(inner)))
  end)

  describe("ExceptionGroup", function()
    it("ExceptionGroup(msg, {e1, e2}).errors lists the errors", function()
      local e1, e2 = loom.TimeoutError("t"), "plain"
      local g = loom.ExceptionGroup("several", { e1, e2 })
      assert.is_true(loom.ExceptionGroup:is(g))
      assert.equal("several", g.message)
      assert.equal(2, #g.errors)
      assert.is_true(rawequal(e1, g.errors[1]))
      assert.equal("plain", g.errors[2])
      assert.equal("ExceptionGroup: several", tostring(g))
    end)

    it("with no errors given, .errors is an empty list", function()
      local g = loom.ExceptionGroup("none")
      assert.same({}, g.errors)
    end)

    it("is not any of its members' classes", function()
      local g = loom.ExceptionGroup("g", { loom.CancelledError() })
      assert.is_false(loom.CancelledError:is(g))
    end)
  end)

  describe("raised by the core", function()
    it("result() of a pending future raises an InvalidStateError instance", function()
      local loop = H.loop()
      local f = loop:create_future()
      local ok, e = pcall(f.result, f)
      assert.is_false(ok)
      assert.is_true(loom.InvalidStateError:is(e))
      assert.matches("^InvalidStateError: ", tostring(e))
    end)

    it("a cancelled task raises a CancelledError instance", function()
      local loop = H.loop()
      local t = loop:create_task(function() loom.sleep(1) end)
      t:cancel("msg")
      local ok, e = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(loom.CancelledError:is(e))
      assert.equal("CancelledError: msg", tostring(e))
    end)

    it("a task may raise one itself; it then ends cancelled, as in asyncio", function()
      local loop = H.loop()
      local e = loom.CancelledError("by hand")
      local t = loop:create_task(function() error(e, 0) end)
      local ok, got = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(rawequal(e, got))
      assert.is_true(t:cancelled())
    end)

    it("a TimeoutError raised in a task is not a cancellation", function()
      local loop = H.loop()
      local t = loop:create_task(function() error(loom.TimeoutError("late"), 0) end)
      local ok, got = pcall(loop.run_until_complete, loop, t)
      assert.is_false(ok)
      assert.is_true(loom.TimeoutError:is(got))
      assert.is_false(t:cancelled())
    end)
  end)
end)
