-- busted-results.lua - a busted output handler for scripts/run-tests.sh.
--
-- Prints what busted's usual handler prints (utfTerminal, or the one named
-- by LOOM_BUSTED_OUTPUT), and appends one line per event to the file named
-- by LOOM_BUSTED_RESULTS, flushed as it goes:
--
--   start <test name>
--   end <success|failure|error|pending> <test name>
--   summary <successes> <failures> <errors> <pendings>
--
-- The summary line comes from the suite's end. A run without one crashed,
-- and the last `start` names the test it crashed in.
-- Use: busted -o scripts/busted-results.lua ...

return function(options)
  local busted = require 'busted'
  local name = os.getenv 'LOOM_BUSTED_OUTPUT' or 'utfTerminal'
  local handler = require('busted.outputHandlers.' .. name)(options)

  local path = os.getenv 'LOOM_BUSTED_RESULTS'
  local out = path and assert(io.open(path, 'w'))

  local function emit(line)
    if out then
      out:write((line:gsub('\n', ' ')), '\n')
      out:flush()
    end
  end

  busted.subscribe({ 'test', 'start' }, function(element)
    emit('start ' .. handler.getFullName(element))
    return nil, true
  end)

  busted.subscribe({ 'test', 'end' }, function(element, _, status)
    emit('end ' .. tostring(status) .. ' ' .. handler.getFullName(element))
    return nil, true
  end)

  -- Errors outside an `it` (a spec file that does not load, a failing
  -- before_each in a describe) have no test of their own; busted counts
  -- them as errors and so does the summary.
  busted.subscribe({ 'suite', 'end' }, function()
    emit(('summary %d %d %d %d'):format(handler.successesCount,
      handler.failuresCount, handler.errorsCount, handler.pendingsCount))
    return nil, true
  end)

  -- busted does not flush its summary; a sanitizer that ends the process
  -- at exit (a leak report) would lose it.
  busted.subscribe({ 'exit' }, function()
    io.stdout:flush()
    return nil, true
  end)

  return handler
end
