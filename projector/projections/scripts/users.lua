-- Adding users to cells' HyperLogLogs, a prelude of apply.lua (behind cells.lua).
-- Users into every cell of `targets` (PFADD is idempotent), in chunks (unpack() is limited by the Lua
-- stack). Many users go once into `scratch` (dense, deleted before the script ends), then PFMERGE into
-- each cell that is dense or that they would push past the sparse limit (about 2 bytes a register;
-- hll-sparse-max-bytes is 3000 by default): PFADD into a sparse HyperLogLog scans it, the slow case.
-- The registers are PFADD's, and a cell left sparse takes PFADD and stays sparse.
local MERGE_FROM, SPARSE_MAX, DENSE_EMPTY = 400, 3000, 'HYLL' .. string.rep('\0', 12 + 12288)
local function add_users(targets, list, n, scratch)
  local direct, merged, dense_only = targets, {}, true
  if n >= MERGE_FROM then  -- few users cost little either way
    direct = {}
    for _, c in ipairs(targets) do
      local key = users_of(c)
      local dense = redis.call('GETRANGE', key, 4, 4) == '\0'
      if dense or redis.call('STRLEN', key) + 2 * n > SPARSE_MAX then
        merged[#merged + 1] = c
        dense_only = dense_only and dense
      else
        direct[#direct + 1] = c
      end
    end
    if #merged == 1 and dense_only then direct, merged = targets, {} end  -- one merge saves nothing
  end
  if #merged > 0 then redis.call('SET', scratch, DENSE_EMPTY) end
  for from = 1, n, 4000 do
    local upto = math.min(from + 3999, n)
    for _, c in ipairs(direct) do redis.call('PFADD', users_of(c), unpack(list, from, upto)) end
    if #merged > 0 then redis.call('PFADD', scratch, unpack(list, from, upto)) end
  end
  for _, c in ipairs(merged) do redis.call('PFMERGE', users_of(c), scratch) end
  if #merged > 0 then redis.call('DEL', scratch) end
end
