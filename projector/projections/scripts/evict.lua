-- Moves hours out of Redis once a durable snapshot holds them: their keys and their quarter-hours' go,
-- the cold hash names the snapshot entry that holds each one. An hour changed since its snapshot (still
-- dirty) stays. Day rollups are never moved out.
-- KEYS: generation, fence, watermark, dirty, cold, then per hour 10 keys: users HLL, counts hash of the
--       hour, then of each of its 4 quarter-hours.
-- ARGV: gen, epoch ("" = unfenced), expected watermark, then per hour: token, entry watermark.
-- Returns the number of hours moved out, or -1 when the generation, fence or watermark moved.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[3]) then return -1 end
local moved = 0
local h = 0
for a = 4, #ARGV, 2 do
  local token, at = ARGV[a], ARGV[a + 1]
  if not redis.call('ZSCORE', KEYS[4], token) and redis.call('HEXISTS', KEYS[5], token) == 0 then
    redis.call('DEL', unpack(KEYS, 6 + 10 * h, 15 + 10 * h))
    redis.call('HSET', KEYS[5], token, at)
    moved = moved + 1
  end
  h = h + 1
end
return moved
