-- Brings cold hours back into Redis from their snapshot entries, with their quarter-hours, so late events
-- add to them instead of starting them over. An hour is thawed only if the cold hash still names the
-- entry that was read. Its axis cells left with it for good: its axes hash is marked "!partial".
-- Cells (cells.lua): each hour's cells (the hour, its quarter-hours), hour after hour. Named keys: cold,
-- dirty. The guard checks the generation (unless it is being built), the fence and the watermark.
-- Own ARGV: "mark" (mark each hour thawed changed, scored by the watermark) or "", then per hour: its
--       token, the watermark of its entry, its number of cells, then per cell: HLL bytes ("" = none),
--       clicks, impressions (an entry from before quarter-hours: all quarters empty).
-- Returns the number of hours thawed, or -1 when the generation, fence or watermark moved.
local COLD, DIRTY = named(1), named(2)
local status, _, wm = guard()
if status ~= 0 then return -1 end
local thawed = 0
local first, a = 1, OWN + 1
while a <= #ARGV do
  local token, at, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if redis.call('HGET', COLD, token) == at then
    for c = first, first + n - 1 do
      put_cell(c, ARGV[a], ARGV[a + 1], ARGV[a + 2])
      a = a + 3
    end
    redis.call('HDEL', COLD, token)
    redis.call('HSET', axes_hash(first), '!partial', 1)
    if ARGV[OWN] == 'mark' then redis.call('ZADD', DIRTY, wm, token) end
    thawed = thawed + 1
  else
    a = a + 3 * n
  end
  first = first + n
end
return thawed
