-- Swaps one hour's rebuilt projections, with its quarter-hours, in for the live ones of ONE partition (a
-- call per partition: in a Redis Cluster a script touches one slot, and each partition's keys share one).
-- Cells (cells.lua): the live hour's cells (the hour, then its quarter-hours), then the rebuilt ones in
-- the same order. Named keys: the live cold hash, the live dirty set. The guard checks the live
-- generation and the fence the rebuild holds. Own ARGV: the hour token, the partition's watermark.
-- The hour is in Redis afterwards (no longer cold) and marked changed, so the next snapshot takes it.
-- Its axis cells and axes hash are swapped too (its quarter-hours' too, in a split hour).
-- The day rollups overlapping the hour are rebuilt next (rebuild_day.lua), under the same fence.
-- Returns 1 if swapped, 0 if the fence moved, -1 if the live generation is no longer the one rebuilt for.
local status = guard()
if status == 2 then return -1 end
if status == 3 then return 0 end
local half = CELLS / 2
for c = 1, half do
  local rebuilt = c + half
  for role = 1, PER_CELL do
    if redis.call('EXISTS', key_of(rebuilt, role)) == 1 then
      redis.call('RENAME', key_of(rebuilt, role), key_of(c, role))
    else
      redis.call('DEL', key_of(c, role))
    end
  end
end
for c = 1, half do  -- the hour's axis cells, and its quarter-hours' in a split hour
  drop_axes(c)
  local built, live_head = hour_head(half + c), hour_head(c)
  for _, axis in ipairs(axis_fields(half + c)) do
    if redis.call('EXISTS', built .. axis .. ':users') == 1 then
      redis.call('RENAME', built .. axis .. ':users', live_head .. axis .. ':users')
    end
  end
  if redis.call('EXISTS', axes_hash(half + c)) == 1 then
    redis.call('RENAME', axes_hash(half + c), axes_hash(c))
  end
end
redis.call('HDEL', named(1), ARGV[OWN])
redis.call('ZADD', named(2), ARGV[OWN + 1], ARGV[OWN])
return 1
