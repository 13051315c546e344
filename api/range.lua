-- Reads a range of rows, each a union of stored cells (hours, quarter-hours, day rollups), in the live
-- generation of each partition, in one round trip and one consistent view.
-- KEYS: the n partitions' generation keys. ARGV: the generation a missing key means, the mode ("count":
-- count here; "raw": return the parts, for a caller that reads one partition per call, as on a Redis
-- Cluster, and counts the unions itself), n, then per partition 8 values: the generation and the phases
-- text the caller planned with, its group (partitions of one group share their cells), the cell key
-- head template (`...:g{gen}:`), the users and counts key tails, the cold-hash template and the
-- phases-key template. Then the number of groups, and per group: c cells and their tokens, r rows each
-- as k then k cell indices (1-based), then t and t cell indices of the range's total (t = -1: the
-- caller counts the total itself).
-- Returns, when a partition's generation or phases are not what the caller planned with, {-2} and then
-- per partition {generation, phases text}: the caller plans again. Else per row {unique users, clicks,
-- impressions}, then the unique users of the whole range (-1 when t = -1): PFCOUNT over many keys counts
-- their union without writing anything. When a cell's hour is cold in some partition, or in "raw" mode,
-- {-1} and then per partition and cell {cold entry watermark or '', HyperLogLog bytes or '', clicks,
-- impressions}.
local n = tonumber(ARGV[3])
local parts, stale = {}, false
for p = 1, n do
  local a = 4 + (p - 1) * 8
  local gen = redis.call('GET', KEYS[p]) or ARGV[1]
  local phases = redis.call('GET', (string.gsub(ARGV[a + 7], '{gen}', gen))) or ''
  if gen ~= ARGV[a] or phases ~= ARGV[a + 1] then stale = true end
  local cold = (string.gsub(ARGV[a + 6], '{gen}', gen))
  if redis.call('HLEN', cold) == 0 then cold = false end  -- nothing cold: skip the lookups
  parts[p] = {gen = gen, phases = phases, group = tonumber(ARGV[a + 2]), cold = cold,
    head = (string.gsub(ARGV[a + 3], '{gen}', gen)), users = ARGV[a + 4], counts = ARGV[a + 5]}
end
if stale then
  local out = {-2}
  for p = 1, n do
    out[#out + 1] = parts[p].gen
    out[#out + 1] = parts[p].phases
  end
  return out
end
local function indices(a, k)
  local found = {}
  for j = 1, k do found[j] = tonumber(ARGV[a + j - 1]) end
  return found
end
local groups = {}
local a = 4 + 8 * n
for g = 1, tonumber(ARGV[a]) do
  local c = tonumber(ARGV[a + 1])
  local group = {first = a + 2, c = c, rows = {}}
  a = a + 2 + c
  local r = tonumber(ARGV[a])
  a = a + 1
  for i = 1, r do
    local k = tonumber(ARGV[a])
    group.rows[i] = indices(a + 1, k)
    a = a + 1 + k
  end
  local t = tonumber(ARGV[a])
  if t >= 0 then group.total = indices(a + 1, t) else t = 0 end
  a = a + 1 + t
  groups[g] = group
end
local any = ARGV[2] == 'raw'
for p = 1, n do
  local part, group = parts[p], groups[parts[p].group]
  part.at = {}
  if part.cold then
    local seen = {}
    for i = 1, group.c do
      local token = ARGV[group.first + i - 1]
      if string.sub(token, 1, 1) ~= 'd' then  -- a day rollup is never cold
        local hour = string.sub(token, 1, 10)
        if seen[hour] == nil then seen[hour] = redis.call('HGET', part.cold, hour) end
        part.at[i] = seen[hour]
        if seen[hour] then any = true end
      end
    end
  end
end
local function counts(part, token)
  local found = redis.call('HMGET', part.head .. token .. part.counts, 'clicks', 'impressions')
  return tonumber(found[1] or '0'), tonumber(found[2] or '0')
end
if any then
  local raw = {-1}
  for p = 1, n do
    local part, group = parts[p], groups[parts[p].group]
    for i = 1, group.c do
      local token = ARGV[group.first + i - 1]
      local clicks, impressions = counts(part, token)
      if part.at[i] then
        raw[#raw + 1] = part.at[i]
        raw[#raw + 1] = ''
      else
        raw[#raw + 1] = ''
        raw[#raw + 1] = redis.call('GET', part.head .. token .. part.users) or ''
      end
      raw[#raw + 1] = clicks
      raw[#raw + 1] = impressions
    end
  end
  return raw
end
local out = {}
for r = 1, #groups[parts[1].group].rows do
  local users, clicks, impressions = {}, 0, 0
  for p = 1, n do
    local part = parts[p]
    for _, i in ipairs(groups[part.group].rows[r]) do
      local token = ARGV[groups[part.group].first + i - 1]
      local c, m = counts(part, token)
      clicks, impressions = clicks + c, impressions + m
      users[#users + 1] = part.head .. token .. part.users
    end
  end
  out[#out + 1] = redis.call('PFCOUNT', unpack(users))
  out[#out + 1] = clicks
  out[#out + 1] = impressions
end
local every = {}
for p = 1, n do
  local part, group = parts[p], groups[parts[p].group]
  if not group.total then every = false break end
  for _, i in ipairs(group.total) do every[#every + 1] = part.head .. ARGV[group.first + i - 1] .. part.users end
end
out[#out + 1] = every and redis.call('PFCOUNT', unpack(every)) or -1
return out
