-- Reads one hour across every partition in the live generation, in one round trip.
-- KEYS: the generation key. ARGV: the generation a missing key means, n partitions, then n users-key
-- templates, then n counts-key templates, each with {gen} where the generation goes.
-- Returns {unique users, clicks, impressions}.
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local n = tonumber(ARGV[2])
local users = {}
local clicks, impressions = 0, 0
for i = 1, n do
  users[i] = string.gsub(ARGV[2 + i], '{gen}', gen)
  local counts = redis.call('HMGET', (string.gsub(ARGV[2 + n + i], '{gen}', gen)), 'clicks', 'impressions')
  clicks = clicks + tonumber(counts[1] or '0')
  impressions = impressions + tonumber(counts[2] or '0')
end
return {redis.call('PFCOUNT', unpack(users)), clicks, impressions}
