-- Adding users to HyperLogLogs, a prelude of apply.lua (behind cells.lua).
-- Users into every key of `keys` (PFADD is idempotent), in chunks (unpack() is limited by the Lua
-- stack). Many users go once into `scratch` (dense, deleted before the script ends), then PFMERGE into
-- each key that is dense or that they would push past the sparse limit (about 2 bytes a register;
-- hll-sparse-max-bytes is 3000 by default): PFADD into a sparse HyperLogLog scans it, the slow case.
-- The registers are PFADD's, and a key left sparse takes PFADD and stays sparse.
local MERGE_FROM, SPARSE_MAX, DENSE_EMPTY = 400, 3000, 'HYLL' .. string.rep('\0', 12 + 12288)
local function add_users(keys, list, n, scratch)
  local direct, merged, dense_only = keys, {}, true
  if n >= MERGE_FROM then  -- few users cost little either way
    direct = {}
    for _, key in ipairs(keys) do
      local dense = redis.call('GETRANGE', key, 4, 4) == '\0'
      if dense or redis.call('STRLEN', key) + 2 * n > SPARSE_MAX then
        merged[#merged + 1] = key
        dense_only = dense_only and dense
      else
        direct[#direct + 1] = key
      end
    end
    if #merged == 1 and dense_only then direct, merged = keys, {} end  -- one merge saves nothing
  end
  if #merged > 0 then redis.call('SET', scratch, DENSE_EMPTY) end
  for from = 1, n, 4000 do
    local upto = math.min(from + 3999, n)
    for _, key in ipairs(direct) do redis.call('PFADD', key, unpack(list, from, upto)) end
    if #merged > 0 then redis.call('PFADD', scratch, unpack(list, from, upto)) end
  end
  for _, key in ipairs(merged) do redis.call('PFMERGE', key, scratch) end
  if #merged > 0 then redis.call('DEL', scratch) end
end
-- The users keys of cells (cells.lua) by their numbers.
local function users_keys(cells)
  local keys = {}
  for i, c in ipairs(cells) do keys[i] = users_of(c) end
  return keys
end
