-- Writes a snapshot into a generation that has lost the partition, in chunks; the watermark goes last.
-- Cells (cells.lua): each entry's cells (an hour: the hour, then its quarter-hours; a day rollup:
-- itself), entry after entry. Named keys: dedup, cold. The guard checks the generation (unless it is
-- being built) and the fence; the watermark must not exist yet.
-- Own ARGV: op, watermark, then
--       for "cells", per entry: its token, its number of cells, then per cell: HLL bytes ("" = none),
--       clicks, impressions (the entry goes to Redis; an hour's axes hash is marked "!partial": the
--       snapshot store keeps no axis cells);
--       for "cold", per hour: its token, its entry watermark, its number of cells (the hour stays in the
--       store: only named here, its cells emptied);
--       for "commit": dedup entries as score, member pairs.
-- Returns 1 when written, 0 when refused: the generation moved, the fence moved, or the partition
-- already has a watermark (someone else restored it, or applied to it).
local DEDUP, COLD = named(1), named(2)
if guard() ~= 0 then return 0 end
if redis.call('EXISTS', WATERMARK) == 1 then return 0 end
local op = ARGV[OWN]
if op == 'cells' then
  local c, a = 1, OWN + 2
  while a <= #ARGV do
    redis.call('HDEL', COLD, ARGV[a])
    if #ARGV[a] == 10 then redis.call('HSET', axes_hash(c), '!partial', 1) end
    local n = tonumber(ARGV[a + 1])
    a = a + 2
    for _ = 1, n do
      put_cell(c, ARGV[a], ARGV[a + 1], ARGV[a + 2])
      c, a = c + 1, a + 3
    end
  end
  return 1
end
if op == 'cold' then
  local first = 1
  for a = OWN + 2, #ARGV, 3 do
    local last = first + tonumber(ARGV[a + 2]) - 1
    redis.call('DEL', keys_of(first, last))
    redis.call('HSET', COLD, ARGV[a], ARGV[a + 1])
    first = last + 1
  end
  return 1
end
redis.call('DEL', DEDUP)
for c = OWN + 2, #ARGV, 4000 do
  redis.call('ZADD', DEDUP, unpack(ARGV, c, math.min(c + 3999, #ARGV)))
end
redis.call('SET', WATERMARK, ARGV[OWN + 1])
return 1
