-- Swaps one hour's rebuilt projections, with its quarter-hours, in for the live ones of ONE partition (a
-- call per partition: in a Redis Cluster a script touches one slot, and each partition's keys share one).
-- KEYS: the partition's generation key, fence, live cold hash, live dirty set, then 10 (live, rebuilt)
--       pairs: users, counts of the hour, then of each of its 4 quarter-hours.
-- ARGV: the generation the rebuild was made for, the hour token, the epoch the rebuild holds, and the
--       partition's watermark.
-- The hour is in Redis afterwards (no longer cold) and marked changed, so the next snapshot takes it.
-- The day rollups overlapping the hour are rebuilt next (rebuild_day.lua), under the same fence.
-- Returns 1 if swapped, 0 if the fence moved, -1 if the live generation is no longer the one rebuilt for.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
for i = 5, #KEYS, 2 do
  local live, rebuilt = KEYS[i], KEYS[i + 1]
  if redis.call('EXISTS', rebuilt) == 1 then
    redis.call('RENAME', rebuilt, live)
  else
    redis.call('DEL', live)
  end
end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
return 1
