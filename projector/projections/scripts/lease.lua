-- Lease operations for one partition. KEYS: lease, fence. ARGV: op, owner, ttl ms.
--   acquire: take a free lease (or keep ours) and, when newly taken, raise the fence to a new epoch.
--   seize:   take the lease even from a live holder (an operator's replay); the raised fence stops
--            the holder's next apply.
--   renew:   extend our lease; 0 if it is no longer ours.
--   release: drop our lease.
-- The epoch is max(previous + 1, server time in µs), so it keeps rising even after Redis was wiped.
local op, owner, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local holder = redis.call('GET', KEYS[1])

local function new_epoch()
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local epoch = string.format('%d', math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now))
  redis.call('SET', KEYS[2], epoch)
  return epoch
end

if op == 'acquire' or op == 'seize' then
  if holder == owner then
    redis.call('PEXPIRE', KEYS[1], ttl)
    return redis.call('GET', KEYS[2]) or new_epoch()
  end
  if holder and op == 'acquire' then return 0 end
  redis.call('SET', KEYS[1], owner, 'PX', ttl)
  return new_epoch()
elseif op == 'renew' then
  if holder ~= owner then return 0 end
  redis.call('PEXPIRE', KEYS[1], ttl)
  return 1
elseif op == 'release' then
  if holder == owner then redis.call('DEL', KEYS[1]) end
  return 1
end
return redis.error_reply('unknown lease op ' .. op)
