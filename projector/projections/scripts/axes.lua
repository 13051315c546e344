-- The axes of one apply (contract.cells), a prelude of apply.lua: which new dimension values get cells
-- of their own under the bound, and which axes the hour's axes hash records.
-- ARGV from `at`: the bound, then the new values to admit in the order they first appear in the stream
-- (so live and replay admit the same ones), each: its axes hash (a named key's number past the four),
-- its dimension, its axis, its cell, the dimension's (other) cell and axis. A value already in the
-- hash, or admitted while the dimension has fewer than the bound, keeps its cell; any other goes to
-- (other). Then the other axes to record in the hash: (none) ones, each: its hash, its axis.
-- Returns the route (cell -> the cell it counts in instead), the new values past the bound per
-- "<hour token> <dimension>" and those keys in order, and the next argument's index.
local function admit_axes(tokens, at)
  local arg = at
  local MAX_VALUES, admits = tonumber(ARGV[arg]), tonumber(ARGV[arg + 1])
  arg = arg + 2
  local route, overflow, told = {}, {}, {}
  for _ = 1, admits do
    local index, dimension, axis = named(4 + tonumber(ARGV[arg])), ARGV[arg + 1], ARGV[arg + 2]
    if redis.call('HEXISTS', index, axis) == 0 then
      if tonumber(redis.call('HGET', index, '#' .. dimension) or '0') < MAX_VALUES then
        redis.call('HSET', index, axis, 1)
        redis.call('HINCRBY', index, '#' .. dimension, 1)
      else
        local cell = tonumber(ARGV[arg + 3])
        route[cell] = tonumber(ARGV[arg + 4])
        redis.call('HSET', index, ARGV[arg + 5], 1)
        local where = ARGV[tokens + cell] .. ' ' .. dimension
        if not overflow[where] then told[#told + 1] = where end
        overflow[where] = (overflow[where] or 0) + 1
      end
    end
    arg = arg + 6
  end
  local records = tonumber(ARGV[arg])
  arg = arg + 1
  for _ = 1, records do
    redis.call('HSET', named(4 + tonumber(ARGV[arg])), ARGV[arg + 1], 1)
    arg = arg + 2
  end
  return route, overflow, told, arg
end
