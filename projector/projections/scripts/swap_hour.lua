-- Swaps one hour's rebuilt projections in for the live ones of ONE partition (a call per partition:
-- in a Redis Cluster a script touches one slot, and each partition's keys share one).
-- KEYS: the partition's generation key, fence, live users, live counts, rebuilt users, rebuilt counts,
--       live cold hash, live dirty set.
-- ARGV: the generation the rebuild was made for, the hour token, the epoch the rebuild holds, and the
--       partition's watermark.
-- The hour is in Redis afterwards (no longer cold) and marked changed, so the next snapshot takes it.
-- Returns 1 if swapped, 0 if the fence moved, -1 if the live generation is no longer the one rebuilt for.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
for i = 3, 4 do
  local live, rebuilt = KEYS[i], KEYS[i + 2]
  if redis.call('EXISTS', rebuilt) == 1 then
    redis.call('RENAME', rebuilt, live)
  else
    redis.call('DEL', live)
  end
end
redis.call('HDEL', KEYS[7], ARGV[2])
redis.call('ZADD', KEYS[8], ARGV[4], ARGV[2])
return 1
