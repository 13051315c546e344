-- Reads the axis cells of hours (and of quarter-hours of split hours) of ONE partition (a call per
-- partition, pipelined: on a cluster a script touches one slot), in the partition's live generation:
-- what a filter and a breakdown read.
-- KEYS: the partition's generation key. ARGV: the generation a missing key means, the partition's
-- cold-hash template and its cell key head template (contract.cells: `...:g{gen}:`), each with {gen}
-- where the generation goes, the number of hours and their tokens; then the mode and its arguments:
--   "counts", a prefix ("campaign="): every axis starting with it the hours' axes hashes name, each
--   with its clicks and impressions summed over the hours;
--   "users", axes: each with PFCOUNT of its users over the hours (a union), and its clicks and
--   impressions summed; an axis "a|b" is the union of the two.
-- Returns {state, ...}: state 0 and the rows (axis, clicks, impressions for "counts"; users, clicks,
-- impressions per asked axis for "users"); 1 and the hour token when an hour's axis cells are not all
-- here (it is cold, or came back from the snapshot store, which keeps none); 2 and the token when an
-- hour (or quarter-hour) has events but no axis cells (counted before breakdowns, with no
-- dimensions declared, or, for a quarter-hour, before its zone's day was kept).
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local function with_gen(template) return (string.gsub(template, '{gen}', gen)) end
local cold, head = with_gen(ARGV[2]), with_gen(ARGV[3])
local n = tonumber(ARGV[4])
local hours = {}
for i = 1, n do
  local token = ARGV[4 + i]
  local hour = string.sub(token, 1, 10)  -- a quarter-hour's (of a split hour) goes with its hour
  hours[i] = head .. token .. ':'
  if redis.call('HEXISTS', cold, hour) == 1 then return {1, hour} end
  if redis.call('HEXISTS', head .. hour .. ':axes', '!partial') == 1 then return {1, hour} end
  if redis.call('EXISTS', hours[i] .. 'axes') == 0 and redis.call('EXISTS', hours[i] .. 'counts') == 1 then
    return {2, token}
  end
end
local mode, at = ARGV[5 + n], 6 + n
local found = {0}
local function counted(raw)
  local clicks, impressions = string.match(raw or '0 0', '(%d+) (%d+)')
  return tonumber(clicks), tonumber(impressions)
end
if mode == 'counts' then
  local prefix, order, sums = ARGV[at], {}, {}
  -- The hash holds every dimension's and pair's axes: the server picks the prefix's (HSCAN's MATCH, in C;
  -- values and names hold no glob character), so only those reach Lua.
  for _, hour in ipairs(hours) do
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', hour .. 'axes', cursor, 'MATCH', prefix .. '*', 'COUNT', 20000)
      cursor = page[1]
      local fields = page[2]
      for f = 1, #fields, 2 do
        local field = fields[f]
        local clicks, impressions = counted(fields[f + 1])
        local sum = sums[field]
        if not sum then
          sum = {0, 0}
          sums[field], order[#order + 1] = sum, field
        end
        sum[1], sum[2] = sum[1] + clicks, sum[2] + impressions
      end
    until cursor == '0'
  end
  for _, field in ipairs(order) do
    found[#found + 1] = field
    found[#found + 1] = sums[field][1]
    found[#found + 1] = sums[field][2]
  end
  return found
end
for a = at, #ARGV do
  local users, clicks, impressions = {}, 0, 0
  for axis in string.gmatch(ARGV[a], '[^|]+') do
    for _, hour in ipairs(hours) do
      users[#users + 1] = hour .. axis .. ':users'
      local c, i = counted(redis.call('HGET', hour .. 'axes', axis))
      clicks, impressions = clicks + c, impressions + i
    end
  end
  found[#found + 1] = #users > 0 and redis.call('PFCOUNT', unpack(users)) or 0
  found[#found + 1] = clicks
  found[#found + 1] = impressions
end
return found
