-- Swaps one hour's rebuilt projections in for the live ones, for every partition at once.
-- KEYS: per partition: fence, live users, live counts, rebuilt users, rebuilt counts.
-- ARGV: per partition, the epoch the rebuild holds. Returns 1 if swapped, 0 if a fence moved.
local n = #ARGV
for p = 1, n do
  if redis.call('GET', KEYS[5 * (p - 1) + 1]) ~= ARGV[p] then return 0 end
end
for p = 1, n do
  local base = 5 * (p - 1)
  for i = 2, 3 do
    local live, rebuilt = KEYS[base + i], KEYS[base + i + 2]
    if redis.call('EXISTS', rebuilt) == 1 then
      redis.call('RENAME', rebuilt, live)
    else
      redis.call('DEL', live)
    end
  end
end
return 1
