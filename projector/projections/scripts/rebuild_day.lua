-- Rebuilds one day rollup of one partition from its components (contract.buckets.day_components): the
-- union of their users, the sums of their counts. One atomic step, so the day equals its components
-- at this instant whatever applies come before or after; the day is marked for the next snapshot.
-- KEYS: generation, fence, watermark, dirty, cold, day users, day counts, then per component: users
--       HLL, counts hash.
-- ARGV: gen ("" = a generation being built, not checked), epoch ("" = unfenced), day token, then per
--       component: the token of the hour whose snapshot entry holds it when cold.
-- Returns {1} rebuilt, {0} fenced, {-1} the generation moved, or {2, token, entry watermark, ...}: the
-- hours holding components that are cold; nothing is written then (the caller thaws them first).
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0} end
if redis.call('HLEN', KEYS[5]) > 0 then
  local cold, seen = {2}, {}
  for a = 4, #ARGV do
    local at = redis.call('HGET', KEYS[5], ARGV[a])
    if at and not seen[ARGV[a]] then
      seen[ARGV[a]] = true
      cold[#cold + 1] = ARGV[a]
      cold[#cold + 1] = at
    end
  end
  if #cold > 1 then return cold end
end
redis.call('DEL', KEYS[6], KEYS[7])
local sources = {}
local clicks, impressions = 0, 0
for c = 0, #ARGV - 4 do
  local users, counts = KEYS[8 + 2 * c], KEYS[9 + 2 * c]
  if redis.call('EXISTS', users) == 1 then sources[#sources + 1] = users end
  local found = redis.call('HMGET', counts, 'clicks', 'impressions')
  clicks = clicks + tonumber(found[1] or '0')
  impressions = impressions + tonumber(found[2] or '0')
end
if #sources > 0 then redis.call('PFMERGE', KEYS[6], unpack(sources)) end
if clicks > 0 then redis.call('HSET', KEYS[7], 'clicks', clicks) end
if impressions > 0 then redis.call('HSET', KEYS[7], 'impressions', impressions) end
redis.call('ZADD', KEYS[4], tonumber(redis.call('GET', KEYS[3]) or '0'), ARGV[3])
return {1}
