-- Reads one hour across partitions in the live generation of each, in one round trip.
-- Partitions hold disjoint users (a user's partition is a hash of the user), so the hour's unique users
-- are the sum of each partition's own count: PFCOUNT of one key, which Redis answers from the count it
-- caches in the HyperLogLog, on one node and per partition on a cluster alike.
-- KEYS: the n partitions' generation keys. ARGV: the generation a missing key means, n, the hour token,
-- then n users-key templates, n counts-key templates and n cold-hash templates, each with {gen} where the
-- generation goes (contract.cells, contract.keys).
-- Returns {unique users, clicks, impressions}. When the hour is cold in some partition (it left Redis
-- for the snapshot store) it returns {-1} and then per partition {cold entry watermark or '', unique
-- users, clicks, impressions}: the caller counts the cold partitions from their entries.
local n = tonumber(ARGV[2])
local token = ARGV[3]
local users, clicks, impressions, any = 0, 0, 0, false
local parts = {-1}
for i = 1, n do
  local gen = redis.call('GET', KEYS[i]) or ARGV[1]
  local cold = redis.call('HGET', (string.gsub(ARGV[3 + 2 * n + i], '{gen}', gen)), token)
  local counts = redis.call('HMGET', (string.gsub(ARGV[3 + n + i], '{gen}', gen)), 'clicks', 'impressions')
  local c, m = tonumber(counts[1] or '0'), tonumber(counts[2] or '0')
  local u = 0
  if cold then
    any = true
  else
    u = redis.call('PFCOUNT', (string.gsub(ARGV[3 + i], '{gen}', gen)))
  end
  users, clicks, impressions = users + u, clicks + c, impressions + m
  parts[#parts + 1] = cold or ''
  parts[#parts + 1] = u
  parts[#parts + 1] = c
  parts[#parts + 1] = m
end
if any then return parts end
return {users, clicks, impressions}
