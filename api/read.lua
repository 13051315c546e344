-- Reads one hour across every partition in the live generation, in one round trip.
-- KEYS: the generation key. ARGV: the generation a missing key means, n partitions, the hour token,
-- then n users-key templates, n counts-key templates and n cold-hash templates, each with {gen}
-- where the generation goes.
-- Returns {unique users, clicks, impressions}. When the hour is cold in some partition (it left Redis
-- for the snapshot store) it returns {-1} and then per partition {cold entry watermark or '', the
-- HyperLogLog's bytes or '', clicks, impressions}: the caller reads the cold parts through.
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local n = tonumber(ARGV[2])
local token = ARGV[3]
local cold, any = {}, false
for i = 1, n do
  cold[i] = redis.call('HGET', (string.gsub(ARGV[3 + 2 * n + i], '{gen}', gen)), token)
  if cold[i] then any = true end
end
local users, raw = {}, {-1}
local clicks, impressions = 0, 0
for i = 1, n do
  users[i] = string.gsub(ARGV[3 + i], '{gen}', gen)
  local counts = redis.call('HMGET', (string.gsub(ARGV[3 + n + i], '{gen}', gen)), 'clicks', 'impressions')
  clicks = clicks + tonumber(counts[1] or '0')
  impressions = impressions + tonumber(counts[2] or '0')
  if any then
    if cold[i] then
      raw[#raw + 1] = cold[i]
      raw[#raw + 1] = ''
    else
      raw[#raw + 1] = ''
      raw[#raw + 1] = redis.call('GET', users[i]) or ''
    end
    raw[#raw + 1] = tonumber(counts[1] or '0')
    raw[#raw + 1] = tonumber(counts[2] or '0')
  end
end
if any then return raw end
return {redis.call('PFCOUNT', unpack(users)), clicks, impressions}
