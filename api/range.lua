-- Reads rows of a range, each a union of stored cells (hours, quarter-hours, day rollups), in the live
-- generation of each partition named: one bounded step of a range read (api/range_read.py cuts a long
-- range into steps, each checking the generations and phases it was planned with).
-- Partitions hold disjoint users (a user's partition is a hash of the user), so a row's unique users are
-- the sum over partitions of the union of that partition's cells: PFCOUNT over one partition's keys.
-- KEYS: the n partitions' generation keys. ARGV: the generation a missing key means, the mode ("count":
-- count here; "raw": return the parts, for a caller that counts itself), n, then per partition 8 values:
-- the generation and the phases text the caller planned with, its group (partitions of one group share
-- their cells), the cell key head template (`...:g{gen}:`), the users and counts key tails, the
-- cold-hash template and the phases-key template. Then the number of groups, and per group three texts
-- of space-separated words (a few long arguments cost far less to send than many short ones): its
-- cells' tokens; each row as k then k cell indices (0-based), or `-1 k r` for r rows of k cells each in
-- the order of the cells; the cell indices of the range's total, or -1 (no total in this step).
-- Returns, when a partition's generation or phases are not what the caller planned with, {-2} and then
-- per partition {generation, phases text}: the caller plans again. Else per row {unique users, clicks,
-- impressions}, then the unique users of the total (-1 when there is none). When a cell's hour is cold
-- in some partition, or in "raw" mode, {-1} and then per partition and cell {cold entry watermark or '',
-- HyperLogLog bytes or '', clicks, impressions}.
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
local function numbers(text)
  local found = {}
  for word in string.gmatch(text, '%S+') do found[#found + 1] = tonumber(word) end
  return found
end
local groups = {}
local a = 4 + 8 * n
for g = 1, tonumber(ARGV[a]) do
  local cells = {}
  for token in string.gmatch(ARGV[a + g * 3 - 2], '%S+') do cells[#cells + 1] = token end
  local flat, rows, i = numbers(ARGV[a + g * 3 - 1]), {}, 1
  local group = {cells = cells, c = #cells, rows = rows}
  if flat[1] == -1 then  -- -1 k r: r rows of k cells each, in the order of the cells
    group.k, group.r = flat[2], flat[3]
    i = #flat + 1
  end
  while i <= #flat do
    local row = {}
    for j = 1, flat[i] do row[j] = flat[i + j] + 1 end
    rows[#rows + 1] = row
    i = i + flat[i] + 1
  end
  group.r = group.r or #rows
  if ARGV[a + g * 3] ~= '-1' then
    group.total = numbers(ARGV[a + g * 3])
    for j = 1, #group.total do group.total[j] = group.total[j] + 1 end
  end
  groups[g] = group
end
local any = ARGV[2] == 'raw'
for p = 1, n do
  local part, group = parts[p], groups[parts[p].group]
  part.at = {}
  if part.cold then
    local seen = {}
    for i = 1, group.c do
      local token = group.cells[i]
      if string.sub(token, 1, 1) ~= 'd' then  -- a day rollup is never cold
        local hour = string.sub(token, 1, 10)
        if seen[hour] == nil then seen[hour] = redis.call('HGET', part.cold, hour) end
        part.at[i] = seen[hour]
        if seen[hour] then any = true end
      end
    end
  end
end
if any then
  local raw = {-1}
  for p = 1, n do
    local part, group = parts[p], groups[parts[p].group]
    for i = 1, group.c do
      local token = group.cells[i]
      local found = redis.call('HMGET', part.head .. token .. part.counts, 'clicks', 'impressions')
      if part.at[i] then
        raw[#raw + 1] = part.at[i]
        raw[#raw + 1] = ''
      else
        raw[#raw + 1] = ''
        raw[#raw + 1] = redis.call('GET', part.head .. token .. part.users) or ''
      end
      raw[#raw + 1] = tonumber(found[1] or '0')
      raw[#raw + 1] = tonumber(found[2] or '0')
    end
  end
  return raw
end
local out = {}
for r = 1, groups[parts[1].group].r do
  local m, clicks, impressions = 0, 0, 0
  for p = 1, n do
    local part = parts[p]
    local group = groups[part.group]
    local k, row = group.k, group.rows[r]
    local users, u = {}, 0
    for j = 1, k or #row do
      local token = group.cells[k and (r - 1) * k + j or row[j]]
      local found = redis.call('HMGET', part.head .. token .. part.counts, 'clicks', 'impressions')
      local c, i = tonumber(found[1]), tonumber(found[2])
      if c or i then  -- no counters, no users: every counted user came with a click or impression
        clicks, impressions = clicks + (c or 0), impressions + (i or 0)
        u = u + 1
        users[u] = part.head .. token .. part.users
      end
    end
    if u > 0 then m = m + redis.call('PFCOUNT', unpack(users, 1, u)) end
  end
  out[#out + 1] = m
  out[#out + 1] = clicks
  out[#out + 1] = impressions
end
local total = -1
if groups[parts[1].group].total then
  total = 0
  for p = 1, n do
    local part, group = parts[p], groups[parts[p].group]
    local every = {}
    for _, i in ipairs(group.total) do every[#every + 1] = part.head .. group.cells[i] .. part.users end
    if #every > 0 then total = total + redis.call('PFCOUNT', unpack(every)) end
  end
end
out[#out + 1] = total
return out
