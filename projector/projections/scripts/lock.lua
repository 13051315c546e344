-- A lock one owner holds at a time (one replay runs at a time). KEYS: lock. ARGV: op, owner, ttl ms.
--   acquire: take it if free (1) or not (0); renew: extend it if ours (1) or not (0); release: drop it if ours.
local op, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local holder = redis.call('GET', KEYS[1])
if op == 'acquire' then
  if holder then return 0 end
  redis.call('SET', KEYS[1], owner, 'PX', ttl)
  return 1
elseif op == 'renew' then
  if holder ~= owner then return 0 end
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
elseif op == 'release' then
  if holder == owner then redis.call('DEL', KEYS[1]) end
  return 1
end
return redis.error_reply('unknown lock op ' .. op)
