-- Brings cold hours back into Redis from their snapshot entries, so late events add to them instead of
-- starting them over. An hour is thawed only if the cold hash still names the entry that was read.
-- KEYS: generation, fence, watermark, cold, then per hour: users HLL, counts hash.
-- ARGV: gen ("" = a generation being built, not checked), epoch ("" = unfenced), expected watermark,
--       then per hour: token, entry watermark, HLL bytes ("" = none), clicks, impressions.
-- Returns the number of hours thawed, or -1 when the generation, fence or watermark moved.
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then return -1 end
local thawed = 0
local h = 0
for a = 4, #ARGV, 5 do
  local users, counts = KEYS[5 + 2 * h], KEYS[6 + 2 * h]
  if redis.call('HGET', KEYS[4], ARGV[a]) == ARGV[a + 1] then
    redis.call('DEL', users, counts)
    if ARGV[a + 2] ~= '' then redis.call('SET', users, ARGV[a + 2]) end
    if tonumber(ARGV[a + 3]) > 0 then redis.call('HSET', counts, 'clicks', ARGV[a + 3]) end
    if tonumber(ARGV[a + 4]) > 0 then redis.call('HSET', counts, 'impressions', ARGV[a + 4]) end
    redis.call('HDEL', KEYS[4], ARGV[a])
    thawed = thawed + 1
  end
  h = h + 1
end
return thawed
