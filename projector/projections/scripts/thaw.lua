-- Brings cold hours back into Redis from their snapshot entries, with their quarter-hours, so late events
-- add to them instead of starting them over. An hour is thawed only if the cold hash still names the
-- entry that was read.
-- KEYS: generation, fence, watermark, cold, dirty, then per hour 10 keys: users HLL, counts hash of the
--       hour, then of each of its 4 quarter-hours.
-- ARGV: gen ("" = a generation being built, not checked), epoch ("" = unfenced), expected watermark,
--       "mark" (mark each hour thawed changed, scored by the watermark) or "", then per hour: token,
--       entry watermark, then for the hour and each quarter-hour: HLL bytes ("" = none), clicks,
--       impressions (an entry from before quarter-hours: all quarters empty).
-- Returns the number of hours thawed, or -1 when the generation, fence or watermark moved.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then return -1 end
local thawed = 0
local h = 0
for a = 5, #ARGV, 17 do
  if redis.call('HGET', KEYS[4], ARGV[a]) == ARGV[a + 1] then
    for c = 0, 4 do
      local users, counts = KEYS[6 + 10 * h + 2 * c], KEYS[7 + 10 * h + 2 * c]
      local v = a + 2 + 3 * c
      redis.call('DEL', users, counts)
      if ARGV[v] ~= '' then redis.call('SET', users, ARGV[v]) end
      if tonumber(ARGV[v + 1]) > 0 then redis.call('HSET', counts, 'clicks', ARGV[v + 1]) end
      if tonumber(ARGV[v + 2]) > 0 then redis.call('HSET', counts, 'impressions', ARGV[v + 2]) end
    end
    redis.call('HDEL', KEYS[4], ARGV[a])
    if ARGV[4] == 'mark' then redis.call('ZADD', KEYS[5], ARGV[3], ARGV[a]) end
    thawed = thawed + 1
  end
  h = h + 1
end
return thawed
