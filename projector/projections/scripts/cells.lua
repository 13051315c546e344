-- The cell header, shared by every script that writes cells (contract/cells.py builds it; each such
-- script is this prelude followed by its own text).
-- KEYS: the guard (the partition's generation pointer, its fence, the generation's watermark), then
--       NAMED keys of the script's own (named(1), named(2), ...), then each cell's keys in the order of
--       contract.cells.ROLES: users_of(c), counts_of(c) for cell c = 1 .. CELLS.
-- ARGV: the generation to check ('' = none), the epoch ('' = unfenced), the watermark to check
--       ('' = none), NAMED, the keys per cell; the script's own arguments start at ARGV[OWN].
local NAMED, PER_CELL = tonumber(ARGV[4]), tonumber(ARGV[5])
local OWN = 6
local FIRST_CELL = 4 + NAMED
local CELLS = (#KEYS - FIRST_CELL + 1) / PER_CELL
local GENERATION, FENCE, WATERMARK = KEYS[1], KEYS[2], KEYS[3]
local function named(i) return KEYS[3 + i] end
-- Key `role` (1-based, in the order of ROLES) of cell c.
local function key_of(c, role) return KEYS[FIRST_CELL + (c - 1) * PER_CELL + role - 1] end
local function users_of(c) return key_of(c, 1) end
local function counts_of(c) return key_of(c, 2) end
-- Every key of cells first .. last, for one DEL.
local function keys_of(first, last)
  return unpack(KEYS, FIRST_CELL + (first - 1) * PER_CELL, FIRST_CELL + last * PER_CELL - 1)
end
-- The one guard: 0 passed, 1 the watermark moved, 2 the generation moved, 3 fenced; then the live
-- generation ('' when none) and the watermark read (0 when it was not reached).
local function guard()
  local live = redis.call('GET', GENERATION)
  if ARGV[1] ~= '' and live ~= ARGV[1] then return 2, live or '', 0 end
  if ARGV[2] ~= '' and redis.call('GET', FENCE) ~= ARGV[2] then return 3, live or '', 0 end
  local wm = tonumber(redis.call('GET', WATERMARK) or '0')
  if ARGV[3] ~= '' and wm ~= tonumber(ARGV[3]) then return 1, live or '', wm end
  return 0, live or '', wm
end
-- Writes a cell as a snapshot entry holds it: HyperLogLog bytes ('' = none), clicks, impressions.
local function put_cell(c, hll, clicks, impressions)
  redis.call('DEL', users_of(c), counts_of(c))
  if hll ~= '' then redis.call('SET', users_of(c), hll) end
  if tonumber(clicks) > 0 then redis.call('HSET', counts_of(c), 'clicks', clicks) end
  if tonumber(impressions) > 0 then redis.call('HSET', counts_of(c), 'impressions', impressions) end
end
-- An hour's axis cells (contract.cells): their users follow the hour cell's key, `<hour>:<axis>:users`,
-- and the hour's axes hash `<hour>:axes` holds each axis's counters (fields starting with "#" or "!"
-- are no axis).
local function hour_head(c) return string.sub(users_of(c), 1, -6) end  -- the hour cell's key, less 'users'
local function axes_hash(c) return hour_head(c) .. 'axes' end
local function axis_fields(c)
  local found = {}
  for _, field in ipairs(redis.call('HKEYS', axes_hash(c))) do
    local first = string.sub(field, 1, 1)
    if first ~= '#' and first ~= '!' then found[#found + 1] = field end
  end
  return found
end
-- Deletes the axis cells of cell c (an hour, or a quarter-hour of a split hour), and its axes hash.
local function drop_axes(c)
  local head = hour_head(c)
  for _, axis in ipairs(axis_fields(c)) do
    redis.call('DEL', head .. axis .. ':users')
  end
  redis.call('DEL', axes_hash(c))
end
