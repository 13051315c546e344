-- Writes a snapshot into a generation that has lost the partition, in chunks; the watermark goes last.
-- KEYS: generation, fence, watermark, dedup, cold, then per entry: users HLL, counts hash of each of its
--       cells (an hour: the hour, then its 4 quarter-hours; a day rollup: itself).
-- ARGV: gen ("" = a generation being built, not checked), epoch ("" = unfenced), op, watermark, then
--       for "cells", per entry: token, number of cells, then per cell: HLL bytes ("" = none), clicks,
--       impressions (the entry goes to Redis);
--       for "cold", per hour: token, entry watermark (the hour stays in the store: only named here; its
--       keys are 10 as for "cells");
--       for "commit": dedup entries as score, member pairs.
-- Returns 1 when written, 0 when refused: the generation moved, the fence moved, or the partition
-- already has a watermark (someone else restored it, or applied to it).
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if ARGV[3] == 'cells' then
  local k, a = 6, 5
  while a <= #ARGV do
    redis.call('HDEL', KEYS[5], ARGV[a])
    local cells = tonumber(ARGV[a + 1])
    a = a + 2
    for _ = 1, cells do
      local users, counts = KEYS[k], KEYS[k + 1]
      redis.call('DEL', users, counts)
      if ARGV[a] ~= '' then redis.call('SET', users, ARGV[a]) end
      if tonumber(ARGV[a + 1]) > 0 then redis.call('HSET', counts, 'clicks', ARGV[a + 1]) end
      if tonumber(ARGV[a + 2]) > 0 then redis.call('HSET', counts, 'impressions', ARGV[a + 2]) end
      k, a = k + 2, a + 3
    end
  end
  return 1
end
if ARGV[3] == 'cold' then
  local h = 0
  for a = 5, #ARGV, 2 do
    redis.call('DEL', unpack(KEYS, 6 + 10 * h, 15 + 10 * h))
    redis.call('HSET', KEYS[5], ARGV[a], ARGV[a + 1])
    h = h + 1
  end
  return 1
end
redis.call('DEL', KEYS[4])
for c = 5, #ARGV, 4000 do
  redis.call('ZADD', KEYS[4], unpack(ARGV, c, math.min(c + 3999, #ARGV)))
end
redis.call('SET', KEYS[3], ARGV[4])
return 1
