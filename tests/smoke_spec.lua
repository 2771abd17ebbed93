-- smoke_spec.lua - the harness works: loom loads, from where the mode says.

describe("smoke", function()
  local mode = os.getenv "LOOM_TEST_MODE"

  it("require 'loom' returns a table", function()
    assert.is_table(require "loom")
  end)

  it("require 'loom.core' loads", function()
    assert.is_not_nil(require "loom.core")
  end)

  it("LOOM_EXE names the executable", function()
    local exe = os.getenv "LOOM_EXE"
    assert.is_string(exe)
    assert.equal("/", exe:sub(1, 1))
    assert.is_true(os.execute("test -x '" .. exe .. "'") == true)
  end)

  if mode == "exe" then
    it("takes loom from the executable, not from lua/", function()
      local lua_dir = (os.getenv "PWD" or ".") .. "/lua/"
      assert.is_nil(package.path:find(lua_dir, 1, true))
      assert.is_nil(package.path:find("^%.?/?lua/"))
    end)
  elseif mode == "module" then
    it("takes loom from lua/ and loom.core from build/lib", function()
      local init = package.searchpath("loom", package.path)
      assert.truthy(init and init:find("/lua/loom/init.lua", 1, true))
      local so = package.searchpath("loom.core", package.cpath)
      assert.truthy(so and so:find("/lib/loom/core.so", 1, true))
    end)
  elseif mode == "rock" then
    it("takes loom and loom.core from where they are installed", function()
      local init = package.searchpath("loom", package.path)
      assert.truthy(init and init:find("/share/lua/5.4/loom/init.lua", 1, true))
      local so = package.searchpath("loom.core", package.cpath)
      assert.truthy(so and so:find("/lib/lua/5.4/loom/core.so", 1, true))
    end)
  end
end)
