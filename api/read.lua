-- Reads one hour across every partition in the live generation, in one round trip.
-- KEYS: the generation key. ARGV: the generation a missing key means, n partitions, the hour token,
-- then n users-key templates, n counts-key templates and n cold-hash templates, each with {gen}
-- where the generation goes.
-- Returns {unique users, clicks, impressions}, or {-1} when the hour is cold in some partition (it
-- left Redis for the snapshot store): the caller then reads it through.
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local n = tonumber(ARGV[2])
local token = ARGV[3]
for i = 1, n do
  if redis.call('HEXISTS', (string.gsub(ARGV[3 + 2 * n + i], '{gen}', gen)), token) == 1 then
    return {-1}
  end
end
local users = {}
local clicks, impressions = 0, 0
for i = 1, n do
  users[i] = string.gsub(ARGV[3 + i], '{gen}', gen)
  local counts = redis.call('HMGET', (string.gsub(ARGV[3 + n + i], '{gen}', gen)), 'clicks', 'impressions')
  clicks = clicks + tonumber(counts[1] or '0')
  impressions = impressions + tonumber(counts[2] or '0')
end
return {redis.call('PFCOUNT', unpack(users)), clicks, impressions}
