-- Reads a range of buckets in the live generation of each partition, in one round trip and one
-- consistent view.
-- KEYS: the n partitions' generation keys. ARGV: the generation a missing key means, the mode ("count":
-- count here; "raw": return the parts, for a caller that reads one partition per call, as on a Redis
-- Cluster, and counts the unions itself), n partitions, n cold-hash templates, the number of buckets,
-- then per bucket: k hours, then per hour its token, then n users-key templates and n counts-key
-- templates (each template with {gen} where the generation goes).
-- Returns per bucket {unique users, clicks, impressions}, then the unique users of the whole range:
-- PFCOUNT over many keys counts their union without writing anything. When any hour of the range is
-- cold in some partition, or in "raw" mode, it returns {-1} and then, per bucket, hour and partition,
-- {cold entry watermark or '', the HyperLogLog's bytes or '', clicks, impressions}.
local n = tonumber(ARGV[3])
local gens, colds = {}, {}
for p = 1, n do
  gens[p] = redis.call('GET', KEYS[p]) or ARGV[1]
  colds[p] = string.gsub(ARGV[3 + p], '{gen}', gens[p])
  if redis.call('HLEN', colds[p]) == 0 then colds[p] = false end  -- nothing cold: skip the lookups
end
local buckets = tonumber(ARGV[4 + n])
local cells = {}  -- per hour and partition: cold entry (or false), users key, counts key
local per_bucket = {}
local a = 5 + n
for b = 1, buckets do
  local k = tonumber(ARGV[a])
  per_bucket[b] = k
  a = a + 1
  for h = 1, k do
    local token = ARGV[a]
    for p = 1, n do
      cells[#cells + 1] = {
        colds[p] and redis.call('HGET', colds[p], token),
        (string.gsub(ARGV[a + p], '{gen}', gens[p])),
        (string.gsub(ARGV[a + n + p], '{gen}', gens[p])),
      }
    end
    a = a + 1 + 2 * n
  end
end
local any = ARGV[2] == 'raw'
for _, cell in ipairs(cells) do
  if cell[1] then any = true break end
end
if any then
  local raw = {-1}
  for _, cell in ipairs(cells) do
    local counts = redis.call('HMGET', cell[3], 'clicks', 'impressions')
    if cell[1] then
      raw[#raw + 1] = cell[1]
      raw[#raw + 1] = ''
    else
      raw[#raw + 1] = ''
      raw[#raw + 1] = redis.call('GET', cell[2]) or ''
    end
    raw[#raw + 1] = tonumber(counts[1] or '0')
    raw[#raw + 1] = tonumber(counts[2] or '0')
  end
  return raw
end
local out, every = {}, {}
local c = 1
for b = 1, buckets do
  local users = {}
  local clicks, impressions = 0, 0
  for i = 1, per_bucket[b] * n do
    local cell = cells[c]
    c = c + 1
    users[i] = cell[2]
    every[#every + 1] = cell[2]
    local counts = redis.call('HMGET', cell[3], 'clicks', 'impressions')
    clicks = clicks + tonumber(counts[1] or '0')
    impressions = impressions + tonumber(counts[2] or '0')
  end
  out[#out + 1] = redis.call('PFCOUNT', unpack(users))
  out[#out + 1] = clicks
  out[#out + 1] = impressions
end
out[#out + 1] = redis.call('PFCOUNT', unpack(every))
return out
