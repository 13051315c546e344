-- Swaps one hour's rebuilt projections in for the live ones, for every partition at once.
-- KEYS: the generation key, then per partition: fence, live users, live counts, rebuilt users,
--       rebuilt counts, live cold hash, live dirty set.
-- ARGV: the generation the rebuild was made for, the hour token, then per partition the epoch the
--       rebuild holds and its watermark.
-- The hour is in Redis afterwards (no longer cold) and marked changed, so the next snapshot takes it.
-- Returns 1 if swapped, 0 if a fence moved, -1 if the live generation is no longer the one rebuilt for.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local n = (#ARGV - 2) / 2
for p = 1, n do
  if redis.call('GET', KEYS[1 + 7 * (p - 1) + 1]) ~= ARGV[1 + 2 * p] then return 0 end
end
for p = 1, n do
  local base = 1 + 7 * (p - 1)
  for i = 2, 3 do
    local live, rebuilt = KEYS[base + i], KEYS[base + i + 2]
    if redis.call('EXISTS', rebuilt) == 1 then
      redis.call('RENAME', rebuilt, live)
    else
      redis.call('DEL', live)
    end
  end
  redis.call('HDEL', KEYS[base + 6], ARGV[2])
  redis.call('ZADD', KEYS[base + 7], ARGV[2 + 2 * p], ARGV[2])
end
return 1
