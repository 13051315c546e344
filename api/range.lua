-- Reads a range of buckets in the live generation, in one round trip and one consistent view.
-- KEYS: the generation key. ARGV: the generation a missing key means, the number of buckets, then per
-- bucket: n, n users-key templates, n counts-key templates (each with {gen} where the generation goes).
-- Returns per bucket {unique users, clicks, impressions}, then the unique users of the whole range:
-- PFCOUNT over many keys counts their union without writing anything.
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local out, every = {}, {}
local a = 3
for b = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a])
  local users = {}
  local clicks, impressions = 0, 0
  for i = 1, n do
    users[i] = string.gsub(ARGV[a + i], '{gen}', gen)
    every[#every + 1] = users[i]
    local counts = redis.call('HMGET', (string.gsub(ARGV[a + n + i], '{gen}', gen)), 'clicks', 'impressions')
    clicks = clicks + tonumber(counts[1] or '0')
    impressions = impressions + tonumber(counts[2] or '0')
  end
  out[#out + 1] = redis.call('PFCOUNT', unpack(users))
  out[#out + 1] = clicks
  out[#out + 1] = impressions
  a = a + 1 + 2 * n
end
out[#out + 1] = redis.call('PFCOUNT', unpack(every))
return out
