-- Reads one hour's axis cells of ONE partition (a call per partition, pipelined: on a cluster a script
-- touches one slot), in the partition's live generation: what a filter and a breakdown read.
-- KEYS: the partition's generation key. ARGV: the generation a missing key means, the hour token, the
-- partition's cold-hash template and the hour's key head template (contract.cells: `...:<hour>:`),
-- each with {gen} where the generation goes; then the mode and its arguments:
--   "counts", a dimension: every axis of it the axes hash names, each with its clicks and impressions;
--   "users", axes: each with PFCOUNT of its users, clicks, impressions; an axis "a|b" is the union of
--   the two (PFCOUNT of both keys, counts summed).
-- Returns {state, ...}: state 0 and the rows (axis, clicks, impressions for "counts"; users, clicks,
-- impressions per asked axis for "users"); 1 when the hour's axis cells are not all here (it is cold
-- or came back from the snapshot store, which keeps none); 2 when the hour has events but no axis
-- cells (counted before breakdowns, or with no dimensions declared).
local gen = redis.call('GET', KEYS[1]) or ARGV[1]
local token = ARGV[2]
local function with_gen(template) return (string.gsub(template, '{gen}', gen)) end
if redis.call('HEXISTS', with_gen(ARGV[3]), token) == 1 then return {1} end
local head = with_gen(ARGV[4])
local axes = head .. 'axes'
if redis.call('HEXISTS', axes, '!partial') == 1 then return {1} end
if redis.call('EXISTS', axes) == 0 then
  if redis.call('EXISTS', head .. 'counts') == 1 then return {2} end
end
local found = {0}
if ARGV[5] == 'counts' then
  local prefix = ARGV[6] .. '='
  for _, field in ipairs(redis.call('HKEYS', axes)) do
    if string.sub(field, 1, #prefix) == prefix then
      local counts = redis.call('HMGET', head .. field .. ':counts', 'clicks', 'impressions')
      found[#found + 1] = field
      found[#found + 1] = tonumber(counts[1] or '0')
      found[#found + 1] = tonumber(counts[2] or '0')
    end
  end
  return found
end
for a = 6, #ARGV do
  local users, clicks, impressions = {}, 0, 0
  for axis in string.gmatch(ARGV[a], '[^|]+') do
    users[#users + 1] = head .. axis .. ':users'
    local counts = redis.call('HMGET', head .. axis .. ':counts', 'clicks', 'impressions')
    clicks = clicks + tonumber(counts[1] or '0')
    impressions = impressions + tonumber(counts[2] or '0')
  end
  found[#found + 1] = redis.call('PFCOUNT', unpack(users))
  found[#found + 1] = clicks
  found[#found + 1] = impressions
end
return found
