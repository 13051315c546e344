-- Moves hours out of Redis once a durable snapshot holds them: their keys and their quarter-hours' go,
-- the cold hash names the snapshot entry that holds each one. Their axis cells go too (the snapshot
-- store keeps none). An hour changed since its snapshot (still
-- dirty) stays. Day rollups are never moved out.
-- Cells (cells.lua): each hour's cells (the hour, its quarter-hours), hour after hour. Named keys:
-- dirty, cold. The guard checks the generation, the fence and the watermark.
-- Own ARGV: per hour: its token, the watermark of its snapshot entry, its number of cells.
-- Returns the number of hours moved out, or -1 when the generation, fence or watermark moved.
local DIRTY, COLD = named(1), named(2)
if guard() ~= 0 then return -1 end
local moved = 0
local first = 1
for a = OWN, #ARGV, 3 do
  local token, at, last = ARGV[a], ARGV[a + 1], first + tonumber(ARGV[a + 2]) - 1
  if not redis.call('ZSCORE', DIRTY, token) and redis.call('HEXISTS', COLD, token) == 0 then
    for c = first, last do drop_axes(c) end  -- the hour's, and its quarter-hours' in a split hour
    redis.call('DEL', keys_of(first, last))
    redis.call('HSET', COLD, token, at)
    moved = moved + 1
  end
  first = last + 1
end
return moved
