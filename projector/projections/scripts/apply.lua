-- Applies one partition's folded deltas and advances its watermark in one atomic step.
-- KEYS: generation, fence, watermark, dedup (sorted set), dirty (sorted set), cold (hash), then
--       (users HLL, counts hash) per hour.
-- ARGV: gen, epoch ("" = unfenced), expected watermark, new watermark, mode ("live" | "build"),
--       hour count, dedup window ms, newest stream ms of the deltas,
--       then per hour: clicks, impressions, users joined by "\n"
--       (user names cannot hold control characters, so the newline is a safe separator), hour token,
--       then the keyed events, all in one string (see below).
-- Returns {status, watermark, generation}: 0 applied, 1 watermark moved, 2 generation moved, 3 fenced;
-- 4: some hours are cold (in the snapshot store, not in Redis), followed by their token, entry
-- watermark pairs. Nothing is written then: the caller thaws those hours and applies again.
local gen = ARGV[1]
local current_gen = redis.call('GET', KEYS[1])
if ARGV[5] == 'live' and current_gen ~= gen then
  return {2, 0, current_gen or ''}
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {3, 0, current_gen or ''}
end
local wm = tonumber(redis.call('GET', KEYS[3]) or '0')
if wm ~= tonumber(ARGV[3]) then
  return {1, wm, current_gen or ''}
end
local hours = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local newest = tonumber(ARGV[8])
local arg = 9
if redis.call('HLEN', KEYS[6]) > 0 then
  local cold = {4, wm, current_gen or ''}
  for h = 0, hours - 1 do
    local token = ARGV[arg + 4 * h + 3]
    local at = redis.call('HGET', KEYS[6], token)
    if at then
      cold[#cold + 1] = token
      cold[#cold + 1] = at
    end
  end
  if #cold > 3 then return cold end
end
local dirty = {}
for h = 0, hours - 1 do
  local k = 7 + 2 * h
  local clicks = tonumber(ARGV[arg])
  local impressions = tonumber(ARGV[arg + 1])
  -- One string instead of one argument per user: far cheaper to send than 100k arguments.
  -- unpack() is limited by the Lua stack, so users go to PFADD in chunks.
  local chunk, n = {}, 0
  for user in string.gmatch(ARGV[arg + 2], '[^\n]+') do
    n = n + 1
    chunk[n] = user
    if n == 4000 then
      redis.call('PFADD', KEYS[k], unpack(chunk, 1, n))
      n = 0
    end
  end
  if n > 0 then redis.call('PFADD', KEYS[k], unpack(chunk, 1, n)) end
  -- The snapshot writer takes every hour changed since its last cut; the score says by which apply.
  dirty[#dirty + 1] = ARGV[4]
  dirty[#dirty + 1] = ARGV[arg + 3]
  arg = arg + 4
  if clicks > 0 then redis.call('HINCRBY', KEYS[k + 1], 'clicks', clicks) end
  if impressions > 0 then redis.call('HINCRBY', KEYS[k + 1], 'impressions', impressions) end
end
-- A keyed event counts (its user and its click or impression) only if its user did not send its key
-- within the window, measured on stream time, so live, rebuild and replay decide exactly alike.
-- Scores are read in one ZMSCORE and writes grouped per hour: a handful of calls, not four per event.
local CHUNK = 4000
-- Keyed events come as one string, not five arguments each (arguments cost the client far more):
-- per event "stream ms \31 hour number (1-based) \31 c|i \31 user \31 key \30". Neither a user
-- nor a key can hold a control character, so the separators are safe.
local ats, slots, kinds, kusers, members = {}, {}, {}, {}, {}
local keyed = 0
for at, slot, kind, user, key in string.gmatch(ARGV[arg] or '', '(%d+)\31(%d+)\31(%a)\31([^\31]*)\31([^\30]*)\30') do
  keyed = keyed + 1
  ats[keyed] = tonumber(at)
  slots[keyed] = 7 + 2 * (tonumber(slot) - 1)
  kinds[keyed] = kind
  kusers[keyed] = user
  members[keyed] = user .. '\n' .. key
end
if keyed > 0 then
  local last = {}
  for c = 1, keyed, CHUNK do
    local upto = math.min(c + CHUNK - 1, keyed)
    local scores = redis.call('ZMSCORE', KEYS[4], unpack(members, c, upto))
    for j = c, upto do
      if scores[j - c + 1] then last[members[j]] = tonumber(scores[j - c + 1]) end
    end
  end
  local zadd, users, clicks, impressions = {}, {}, {}, {}
  for i = 1, keyed do
    local at = ats[i]
    local member = members[i]
    local seen = last[member]
    if not seen or at - seen > window then
      last[member] = at
      zadd[#zadd + 1] = at
      zadd[#zadd + 1] = member
      local slot = slots[i]
      users[slot] = users[slot] or {}
      table.insert(users[slot], kusers[i])
      if kinds[i] == 'c' then
        clicks[slot] = (clicks[slot] or 0) + 1
      else
        impressions[slot] = (impressions[slot] or 0) + 1
      end
    end
  end
  for c = 1, #zadd, CHUNK do  -- CHUNK is even, so score and member stay together
    redis.call('ZADD', KEYS[4], unpack(zadd, c, math.min(c + CHUNK - 1, #zadd)))
  end
  for slot, list in pairs(users) do
    for c = 1, #list, CHUNK do
      redis.call('PFADD', KEYS[slot], unpack(list, c, math.min(c + CHUNK - 1, #list)))
    end
  end
  for slot, n in pairs(clicks) do redis.call('HINCRBY', KEYS[slot + 1], 'clicks', n) end
  for slot, n in pairs(impressions) do redis.call('HINCRBY', KEYS[slot + 1], 'impressions', n) end
end
for c = 1, #dirty, CHUNK do
  redis.call('ZADD', KEYS[5], unpack(dirty, c, math.min(c + CHUNK - 1, #dirty)))
end
-- Entries older than the window can no longer refuse anything: keep only the window's keys.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', newest - window))
redis.call('SET', KEYS[3], ARGV[4])
return {0, tonumber(ARGV[4]), current_gen or ''}
