-- context_spec.lua - ContextVar (lua/loom/context.lua) and the copy of the
-- creating task's context that the core gives every new task.

local H = require "helper"
local loom = require "loom"
H.setup()

describe("ContextVar", function()
  it("get returns the default, a given default, or raises without one", function()
    local a = loom.ContextVar("a", 1)
    local b = loom.ContextVar("b")
    assert.equal(1, a:get())
    assert.equal(5, b:get(5))
    assert.has_error(function() b:get() end, 'ContextVar "b" has no value')
    assert.equal(nil, loom.ContextVar("n", nil):get())
  end)

  it("its methods check self, at the caller's line", function()
    local v = loom.ContextVar("v")
    for _, c in ipairs { { "get", nil, "nil" }, { "set", {}, "table" },
                         { "reset", 5, "number" } } do
      local e = H.raised(function() v[c[1]](c[2], 1) end)
      assert.matches("^[^:]*context_spec%.lua:%d+: bad argument #1 to '" .. c[1]
        .. "' %(loom.ContextVar expected, got " .. c[3] .. "%)", e)
    end
  end)

  it("set returns a token and reset restores the old value, once", function()
    local v = loom.ContextVar("v", "d")
    H.run(function()
      local t1 = v:set("x")
      local t2 = v:set("y")
      assert.equal("y", v:get())
      v:reset(t2)
      assert.equal("x", v:get())
      v:reset(t1)
      assert.equal("d", v:get())
      assert.has_error(function() v:reset(t1) end, "reset: the token has already been used")
      assert.has_error(function() loom.ContextVar("w"):reset(t1) end)
    end)
  end)

  it("a new task starts with a copy of its creator's context", function()
    local v = loom.ContextVar("v", "none")
    local trace, add = H.tracer()
    H.run(function()
      v:set("parent")
      local child = loom.create_task(function()
        add("child sees " .. v:get())
        v:set("child")
        loom.sleep(0)
        add("child has " .. v:get())
        local grandchild = loom.create_task(function() return v:get() end)
        add("grandchild sees " .. grandchild:await())
      end)
      loom.sleep(0)
      add("parent has " .. v:get())
      child:await()
      add("parent still " .. v:get())
    end)
    assert.same({ "child sees parent", "parent has parent", "child has child",
                  "grandchild sees child", "parent still parent" }, trace)
  end)

  it("tasks made outside any task copy the root context", function()
    local v = loom.ContextVar("rootvar", "none")
    local tok = v:set("root")
    local loop = H.loop()
    local t = loop:create_task(function() return v:get() end)
    assert.equal("root", loop:run_until_complete(t))
    v:reset(tok)
    assert.equal("none", v:get())
  end)

  it("a value set to nil reads as nil, not as the default", function()
    local v = loom.ContextVar("v", "d")
    H.run(function()
      v:set(nil)
      assert.is_nil(v:get())
    end)
  end)

  it("rejects a name that is not a string", function()
    assert.has_error(function() loom.ContextVar(42) end,
      "bad argument #1 to 'ContextVar' (string expected, got number)")
  end)

  it("a token from another task cannot reset here", function()
    local v = loom.ContextVar("v", 0)
    H.run(function()
      local tok = loom.create_task(function() return v:set(1) end):await()
      assert.has_error(function() v:reset(tok) end,
        "reset: the token was made in a different context")
    end)
  end)
end)
