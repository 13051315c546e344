-- Rebuilds one day rollup of one partition from its components (contract.buckets.day_components): the
-- union of their users, the sums of their counts. One atomic step, so the day equals its components
-- at this instant whatever applies come before or after; the day is marked for the next snapshot.
-- Cells (cells.lua): the day, then its components. Named keys: dirty, cold. The guard checks the
-- generation (unless it is being built) and the fence.
-- Own ARGV: the day token, then per component the token of the hour whose snapshot entry holds it when
-- cold.
-- Returns {1} rebuilt, {0} fenced, {-1} the generation moved, or {2, token, entry watermark, ...}: the
-- hours holding components that are cold; nothing is written then (the caller thaws them first).
local DIRTY, COLD = named(1), named(2)
local status, _, wm = guard()
if status == 2 then return {-1} end
if status == 3 then return {0} end
if redis.call('HLEN', COLD) > 0 then
  local cold, seen = {2}, {}
  for a = OWN + 1, #ARGV do
    local at = redis.call('HGET', COLD, ARGV[a])
    if at and not seen[ARGV[a]] then
      seen[ARGV[a]] = true
      cold[#cold + 1] = ARGV[a]
      cold[#cold + 1] = at
    end
  end
  if #cold > 1 then return cold end
end
redis.call('DEL', keys_of(1, 1))
local sources = {}
local clicks, impressions = 0, 0
for c = 2, CELLS do
  if redis.call('EXISTS', users_of(c)) == 1 then sources[#sources + 1] = users_of(c) end
  local found = redis.call('HMGET', counts_of(c), 'clicks', 'impressions')
  clicks = clicks + tonumber(found[1] or '0')
  impressions = impressions + tonumber(found[2] or '0')
end
if #sources > 0 then redis.call('PFMERGE', users_of(1), unpack(sources)) end
if clicks > 0 then redis.call('HSET', counts_of(1), 'clicks', clicks) end
if impressions > 0 then redis.call('HSET', counts_of(1), 'impressions', impressions) end
redis.call('ZADD', DIRTY, wm, ARGV[OWN])
return {1}
