-- Reads one hour across partitions in the live generation of each, in one round trip.
-- KEYS: the n partitions' generation keys. ARGV: the generation a missing key means, the mode
-- ("count": count here; "raw": return every partition's parts, for a caller that reads one partition
-- per call, as on a Redis Cluster, and counts the union itself), n, the hour token, then n users-key
-- templates, n counts-key templates and n cold-hash templates, each with {gen} where the generation goes.
-- Returns {unique users, clicks, impressions}. When the hour is cold in some partition (it left Redis
-- for the snapshot store), or in "raw" mode, it returns {-1} and then per partition {cold entry
-- watermark or '', the HyperLogLog's bytes or '', clicks, impressions}: the caller counts the union.
local n = tonumber(ARGV[3])
local token = ARGV[4]
local gens, cold, any = {}, {}, ARGV[2] == 'raw'
for i = 1, n do
  gens[i] = redis.call('GET', KEYS[i]) or ARGV[1]
  cold[i] = redis.call('HGET', (string.gsub(ARGV[4 + 2 * n + i], '{gen}', gens[i])), token)
  if cold[i] then any = true end
end
local users, raw = {}, {-1}
local clicks, impressions = 0, 0
for i = 1, n do
  users[i] = string.gsub(ARGV[4 + i], '{gen}', gens[i])
  local counts = redis.call('HMGET', (string.gsub(ARGV[4 + n + i], '{gen}', gens[i])), 'clicks', 'impressions')
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
