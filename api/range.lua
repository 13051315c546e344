-- Reads a range of buckets in the live generation, in one round trip and one consistent view.
-- KEYS: the generation key. ARGV: the generation a missing key means, n partitions, the number of
-- cold-hash templates and then those templates, then the range's hour tokens count and tokens, the
-- number of buckets, then per bucket: k, k users-key templates, k counts-key templates (each template
-- with {gen} where the generation goes).
-- Returns per bucket {unique users, clicks, impressions}, then the unique users of the whole range:
-- PFCOUNT over many keys counts their union without writing anything. Returns {-1} when any hour of
-- the range is cold in some partition: the caller then reads the range through.
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local a = 2
local colds = tonumber(ARGV[a])
local tokens = tonumber(ARGV[a + colds + 1])
for c = 1, colds do
  local cold = string.gsub(ARGV[a + c], '{gen}', gen)
  if redis.call('HLEN', cold) > 0 then
    local found = redis.call('HMGET', cold, unpack(ARGV, a + colds + 2, a + colds + 1 + tokens))
    for t = 1, tokens do
      if found[t] then return {-1} end
    end
  end
end
a = a + colds + 2 + tokens
local out, every = {}, {}
local buckets = tonumber(ARGV[a])
a = a + 1
for b = 1, buckets do
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
