-- Applies one partition's folded deltas and advances its watermark in one atomic step.
-- Cells (cells.lua): the buckets the deltas touch (contract.buckets: hours, quarter-hours, day rollups).
-- Named keys: dedup (sorted set), dirty (sorted set), cold (hash), scratch (see add_users), then the
-- axes hash (contract.cells.AXES) of each hour with axis cells. The guard checks the generation only
-- when live (one being built is not live yet), the fence, the watermark.
-- Own ARGV: the new watermark, the dedup window ms, the newest stream ms of the deltas, one token per
--       cell, the group count and per group (one quarter-hour's events: its quarter, hour and day
--       rollups): its cell numbers joined by ",", its unkeyed clicks, impressions, users joined by
--       "\n" (user names hold no control characters); then the axes (axes.lua), then the keyed events
--       in one string (see below).
-- Returns {status, watermark, generation}: 0 applied, 1 watermark moved, 2 generation moved, 3 fenced;
-- 4: some hours are cold (in the snapshot store, not in Redis), followed by their token, entry
-- watermark pairs. Nothing is written then: the caller thaws those hours and applies again. Applied, it
-- is followed by "<hour token> <dimension>", count pairs of new values that went to (other).
local DEDUP, DIRTY, COLD, SCRATCH = named(1), named(2), named(3), named(4)
local status, live, wm = guard()
if status ~= 0 then return {status, wm, live} end
local new_wm = ARGV[OWN]
local window, newest = tonumber(ARGV[OWN + 1]), tonumber(ARGV[OWN + 2])
local TOKENS = OWN + 2  -- the token of cell c is ARGV[TOKENS + c]
-- Tokens: an hour is YYYYMMDDHH (10 characters), a quarter-hour YYYYMMDDHHMM (12), a day rollup dYYYYMMDDHHMM.
if redis.call('HLEN', COLD) > 0 then
  local cold, asked = {4, wm, live}, {}
  for c = 1, CELLS do
    local token = ARGV[TOKENS + c]
    -- Only hours go cold (with their quarter-hours and axes); day rollups never do.
    if #token == 10 and not asked[token] then
      asked[token] = true
      local at = redis.call('HGET', COLD, token)
      if at then
        cold[#cold + 1] = token
        cold[#cold + 1] = at
      end
    end
  end
  if #cold > 3 then return cold end
end
local CHUNK = 4000
local clicks, impressions = {}, {}
for c = 1, CELLS do
  clicks[c], impressions[c] = 0, 0
end
local function add_counts(targets, c_n, i_n)
  for _, c in ipairs(targets) do
    clicks[c] = clicks[c] + c_n
    impressions[c] = impressions[c] + i_n
  end
end
local arg = TOKENS + CELLS + 1
local groups = tonumber(ARGV[arg])
arg = arg + 1
local targets, group_users, group_counts = {}, {}, {}
for g = 1, groups do
  local list = {}
  for c in string.gmatch(ARGV[arg], '%d+') do list[#list + 1] = tonumber(c) end
  targets[g] = list
  -- One string instead of one argument per user: far cheaper to send than 100k arguments.
  local users, n = {}, 0
  for user in string.gmatch(ARGV[arg + 3], '[^\n]+') do
    n = n + 1
    users[n] = user
  end
  if n > 0 then add_users(users_keys(list), users, n, SCRATCH) end
  group_users[g], group_counts[g] = users, {tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])}
  add_counts(list, group_counts[g][1], group_counts[g][2])
  arg = arg + 4
end
local max_values, axis_hours, axis_entries
max_values, axis_hours, axis_entries, arg = read_axes(arg)
-- A keyed event counts (its user and its click or impression, in every cell of its group) only if
-- its user did not send its key within the window, measured on stream time, so live, rebuild and
-- replay decide exactly alike. Scores are read in one ZMSCORE and writes grouped per group.
-- Keyed events come as one string (arguments cost the client far more), per event "stream ms \31
-- its quarter-hour's group number \31 its axes' numbers (1-based in the order the axes argument
-- names them, joined by ",") \31 c|i \31 user \31 key \30" (users and keys hold no control
-- characters).
local KEYED = '(%d+)\31(%d+)\31([%d,]*)\31(%a)\31([^\31]*)\31([^\30]*)\30'
local ats, kgroups, kaxes, kinds, kusers, members = {}, {}, {}, {}, {}, {}
local keyed = 0
for at, group, axes, kind, user, key in string.gmatch(ARGV[arg] or '', KEYED) do
  keyed = keyed + 1
  ats[keyed] = tonumber(at)
  kgroups[keyed] = tonumber(group)
  kaxes[keyed] = axes
  kinds[keyed] = kind
  kusers[keyed] = user
  members[keyed] = user .. '\n' .. key
end
if keyed > 0 then
  local last = {}
  for c = 1, keyed, CHUNK do
    local upto = math.min(c + CHUNK - 1, keyed)
    local scores = redis.call('ZMSCORE', DEDUP, unpack(members, c, upto))
    for j = c, upto do
      if scores[j - c + 1] then last[members[j]] = tonumber(scores[j - c + 1]) end
    end
  end
  local zadd, users, kclicks, kimpressions = {}, {}, {}, {}
  for i = 1, keyed do
    local at = ats[i]
    local member = members[i]
    local seen = last[member]
    if not seen or at - seen > window then
      last[member] = at
      zadd[#zadd + 1] = at
      zadd[#zadd + 1] = member
      local g = kgroups[i]
      users[g] = users[g] or {}
      table.insert(users[g], kusers[i])
      if kinds[i] == 'c' then
        kclicks[g] = (kclicks[g] or 0) + 1
      else
        kimpressions[g] = (kimpressions[g] or 0) + 1
      end
      for e in string.gmatch(kaxes[i], '%d+') do axis_keyed(axis_entries[tonumber(e)], kusers[i], kinds[i]) end
    end
  end
  for c = 1, #zadd, CHUNK do  -- CHUNK is even, so score and member stay together
    redis.call('ZADD', DEDUP, unpack(zadd, c, math.min(c + CHUNK - 1, #zadd)))
  end
  for g, list in pairs(users) do
    add_users(users_keys(targets[g]), list, #list, SCRATCH)
    add_counts(targets[g], kclicks[g] or 0, kimpressions[g] or 0)
  end
end
local overflow, told = write_axes(max_values, axis_hours, group_users, group_counts, SCRATCH)
-- The snapshot writer takes the hours and day rollups changed since its last cut (by which apply).
local dirty, marked = {}, {}
for c = 1, CELLS do
  local token = ARGV[TOKENS + c]
  if clicks[c] > 0 then redis.call('HINCRBY', counts_of(c), 'clicks', clicks[c]) end
  if impressions[c] > 0 then redis.call('HINCRBY', counts_of(c), 'impressions', impressions[c]) end
  if #token ~= 12 and not marked[token] then
    marked[token] = true
    dirty[#dirty + 1] = new_wm
    dirty[#dirty + 1] = token
  end
end
for c = 1, #dirty, CHUNK do
  redis.call('ZADD', DIRTY, unpack(dirty, c, math.min(c + CHUNK - 1, #dirty)))
end
redis.call('ZREMRANGEBYSCORE', DEDUP, '-inf', '(' .. string.format('%d', newest - window))  -- past the window
redis.call('SET', WATERMARK, new_wm)
local applied = {0, tonumber(new_wm), live}
for _, where in ipairs(told) do
  applied[#applied + 1] = where
  applied[#applied + 1] = overflow[where]
end
return applied
