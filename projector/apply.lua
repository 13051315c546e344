-- Applies one partition's folded deltas and advances its watermark in one atomic step.
-- KEYS: generation, fence, watermark, dedup (sorted set), then (users HLL, counts hash) per hour.
-- ARGV: gen, epoch ("" = unfenced), expected watermark, new watermark, mode ("live" | "build"),
--       hour count, dedup window ms, newest stream ms of the deltas,
--       then per hour: clicks, impressions, users joined by "\n"
--       (user names cannot hold control characters, so the newline is a safe separator),
--       then per keyed event: stream ms, hour number (1-based), kind ("c" | "i"), user, dedup member.
-- Returns {status, watermark, generation}: 0 applied, 1 watermark moved, 2 generation moved, 3 fenced.
local gen = ARGV[1]
local current_gen = redis.call('GET', KEYS[1])
if ARGV[5] == 'live' and current_gen ~= gen then
  return {2, 0, current_gen or ''}
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return {3, 0, current_gen or ''}
end
local wm = tonumber(redis.call('GET', KEYS[3]) or '0')
if wm ~= tonumber(ARGV[3]) then
  return {1, wm, current_gen or ''}
end
local hours = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local newest = tonumber(ARGV[8])
local arg = 9
for h = 0, hours - 1 do
  local k = 5 + 2 * h
  local clicks = tonumber(ARGV[arg])
  local impressions = tonumber(ARGV[arg + 1])
  -- One string instead of one argument per user: far cheaper to send than 100k arguments.
  -- unpack() is limited by the Lua stack, so users go to PFADD in chunks.
  local chunk, n = {}, 0
  for user in string.gmatch(ARGV[arg + 2], '[^\n]+') do
    n = n + 1
    chunk[n] = user
    if n == 4000 then
      redis.call('PFADD', KEYS[k], unpack(chunk, 1, n))
      n = 0
    end
  end
  if n > 0 then redis.call('PFADD', KEYS[k], unpack(chunk, 1, n)) end
  arg = arg + 3
  if clicks > 0 then redis.call('HINCRBY', KEYS[k + 1], 'clicks', clicks) end
  if impressions > 0 then redis.call('HINCRBY', KEYS[k + 1], 'impressions', impressions) end
end
-- A keyed event counts (its user and its click or impression) only if its user did not send its key
-- within the window, measured on stream time, so live, rebuild and replay decide exactly alike.
while arg <= #ARGV do
  local at = tonumber(ARGV[arg])
  local slot = 5 + 2 * (tonumber(ARGV[arg + 1]) - 1)
  local field = ARGV[arg + 2] == 'c' and 'clicks' or 'impressions'
  local user, member = ARGV[arg + 3], ARGV[arg + 4]
  arg = arg + 5
  local last = redis.call('ZSCORE', KEYS[4], member)
  if not last or at - tonumber(last) > window then
    redis.call('ZADD', KEYS[4], at, member)
    redis.call('PFADD', KEYS[slot], user)
    redis.call('HINCRBY', KEYS[slot + 1], field, 1)
  end
end
-- Entries older than the window can no longer refuse anything: keep only the window's keys.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', newest - window))
redis.call('SET', KEYS[3], ARGV[4])
return {0, tonumber(ARGV[4]), current_gen or ''}
