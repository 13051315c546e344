-- Writes a snapshot into a generation that has lost the partition, in chunks; the watermark goes last.
-- KEYS: generation, fence, watermark, dedup, cold, then per hour: users HLL, counts hash.
-- ARGV: gen ("" = a generation being built, not checked), epoch ("" = unfenced), op, watermark, then
--       for "hours", per hour: token, HLL bytes ("" = none), clicks, impressions (the hour goes to Redis);
--       for "cold", per hour: token, entry watermark (the hour stays in the store: only named here);
--       for "commit": dedup entries as score, member pairs.
-- Returns 1 when written, 0 when refused: the generation moved, the fence moved, or the partition
-- already has a watermark (someone else restored it, or applied to it).
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if ARGV[3] == 'hours' then
  local h = 0
  for a = 5, #ARGV, 4 do
    local users, counts = KEYS[6 + 2 * h], KEYS[7 + 2 * h]
    redis.call('DEL', users, counts)
    redis.call('HDEL', KEYS[5], ARGV[a])
    if ARGV[a + 1] ~= '' then redis.call('SET', users, ARGV[a + 1]) end
    if tonumber(ARGV[a + 2]) > 0 then redis.call('HSET', counts, 'clicks', ARGV[a + 2]) end
    if tonumber(ARGV[a + 3]) > 0 then redis.call('HSET', counts, 'impressions', ARGV[a + 3]) end
    h = h + 1
  end
  return 1
end
if ARGV[3] == 'cold' then
  local h = 0
  for a = 5, #ARGV, 2 do
    redis.call('DEL', KEYS[6 + 2 * h], KEYS[7 + 2 * h])
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
