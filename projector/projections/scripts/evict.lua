-- Moves hours out of Redis once a durable snapshot holds them: their keys go, the cold hash names the
-- snapshot entry that holds each one. An hour changed since its snapshot (still dirty) stays.
-- KEYS: generation, fence, watermark, dirty, cold, then per hour: users HLL, counts hash.
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
    redis.call('DEL', KEYS[6 + 2 * h], KEYS[7 + 2 * h])
    redis.call('HSET', KEYS[5], token, at)
    moved = moved + 1
  end
  h = h + 1
end
return moved
