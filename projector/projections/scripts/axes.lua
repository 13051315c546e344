-- The axis cells of one apply (contract.cells), a prelude of apply.lua: each hour's values of its
-- dimensions, their users (a HyperLogLog each) and their counters (one field each of the hour's axes
-- hash, "<clicks> <impressions>", read in one HMGET and written in one HSET per hour).
-- ARGV from `at`: the bound, the number of hours with axes, then per hour (its axes hash is named key
-- 4 + its number): its token, and its axes in one string, in the order they first appear in the
-- stream (so live and replay admit the same values), each "axis \31 clicks \31 impressions \31 users
-- joined by \n \31 group numbers joined by ',' \30": the groups (a plain hour's quarter-hours, see
-- store.apply_payload) whose unkeyed users and counts the axis also takes.
-- A new value gets its own cell while the dimension (or pair) has fewer than the bound of them in the
-- hour; any other counts under the dimension's (other) (a pair's: under "<first value>+(other)").
local AXES_CHUNK = 4000  -- even: field and value pairs stay together
local AXIS = '([^\31]+)\31(%d+)\31(%d+)\31([^\31]*)\31([%d,]*)\30'
local function read_axes(at)
  local max_values, hours, entries, named_of = tonumber(ARGV[at]), {}, {}, {}
  local arg = at + 2
  for h = 1, tonumber(ARGV[at + 1]) do
    local hour = {token = ARGV[arg], entries = {}}
    for axis, c, i, users, groups in string.gmatch(ARGV[arg + 1], AXIS) do
      local list = {}
      if not string.find(users, '\n', 1, true) then  -- most values of an apply have one user
        if users ~= '' then list[1] = users end
      else
        for user in string.gmatch(users, '[^\n]+') do list[#list + 1] = user end
      end
      local entry = {axis = axis, c = tonumber(c), i = tonumber(i), users = list}
      if groups ~= '' then entry.groups = groups end
      local dim, value = string.match(axis, '^([^=]+)=(.*)$')
      if dim and value ~= '(none)' and value ~= '(other)' then
        local first = string.match(value, '^(.*)%+')  -- a pair's: "<first>+<second>"
        if not first then
          local names = named_of[dim]
          if not names then
            names = {count = '#' .. dim, other = dim .. '=(other)', dim = dim}
            named_of[dim] = names
          end
          entry.dim = names
        elseif string.sub(value, -7) ~= '+(none)' and string.sub(value, -8) ~= '+(other)' then
          -- A pair past its bound counts under its first value's (other), so its rows still add up.
          entry.dim = {count = '#' .. dim, other = dim .. '=' .. first .. '+(other)', dim = dim}
        end
      end
      hour.entries[#hour.entries + 1] = entry
      entries[#entries + 1] = entry
    end
    hours[h] = hour
    arg = arg + 2
  end
  return max_values, hours, entries, arg
end
-- A keyed event that counts, into axis entry e.
local function axis_keyed(e, user, kind)
  local users = e.users
  users[#users + 1] = user
  if kind == 'c' then e.c = e.c + 1 else e.i = e.i + 1 end
end
-- Admits new values, adds users and counts, writes each hour's axes hash. `group_users` and
-- `group_counts` are the groups' unkeyed users (lists) and {clicks, impressions}. Returns the new
-- values past the bound per "<hour token> <dimension>", and those keys in order.
local function write_axes(max_values, hours, group_users, group_counts, scratch)
  local overflow, told = {}, {}
  for h, hour in ipairs(hours) do
    local index = named(4 + h)
    local head = string.sub(index, 1, -5)  -- the hour's key head, less 'axes'
    local fields, wanted = {}, {}
    local function want(field)
      if not wanted[field] then
        wanted[field] = true
        fields[#fields + 1] = field
      end
    end
    for _, e in ipairs(hour.entries) do
      want(e.axis)
      if e.dim then
        want(e.dim.count)
        want(e.dim.other)
      end
    end
    local now = {}
    for from = 1, #fields, AXES_CHUNK do
      local upto = math.min(from + AXES_CHUNK - 1, #fields)
      local got = redis.call('HMGET', index, unpack(fields, from, upto))
      for j = from, upto do now[fields[j]] = got[j - from + 1] or nil end
    end
    -- Each entry is its own sum unless another joins it: (other)'s, or a plain hour's NONE.
    local sums, order, bumped = {}, {}, {}
    for _, e in ipairs(hour.entries) do
      local target, names = e.axis, e.dim
      if names and not now[target] then
        local counted = tonumber(now[names.count] or '0')
        if counted < max_values then
          now[names.count], now[target] = counted + 1, '0 0'
          if not bumped[names.count] then bumped[#bumped + 1], bumped[names.count] = names.count, true end
        else
          target = names.other
          local where = hour.token .. ' ' .. names.dim
          if not overflow[where] then told[#told + 1] = where end
          overflow[where] = (overflow[where] or 0) + 1
        end
      end
      local sum = sums[target]
      if not sum then
        sum = {c = 0, i = 0, lists = {}}
        sums[target], order[#order + 1] = sum, target
      end
      sum.c, sum.i = sum.c + e.c, sum.i + e.i
      if #e.users > 0 then sum.lists[#sum.lists + 1] = e.users end
      if e.groups then
        for g in string.gmatch(e.groups, '%d+') do
          g = tonumber(g)
          sum.c, sum.i = sum.c + group_counts[g][1], sum.i + group_counts[g][2]
          if #group_users[g] > 0 then sum.lists[#sum.lists + 1] = group_users[g] end
        end
      end
    end
    local hset = {}
    for _, target in ipairs(order) do
      local sum = sums[target]
      local lists, key = sum.lists, head .. target .. ':users'
      if #lists == 1 and #lists[1] < 400 then
        redis.call('PFADD', key, unpack(lists[1]))
      else
        for _, list in ipairs(lists) do add_users({key}, list, #list, scratch) end
      end
      local c, i = string.match(now[target] or '0 0', '(%d+) (%d+)')
      hset[#hset + 1] = target
      hset[#hset + 1] = string.format('%d %d', tonumber(c) + sum.c, tonumber(i) + sum.i)
    end
    for _, field in ipairs(bumped) do
      hset[#hset + 1] = field
      hset[#hset + 1] = now[field]
    end
    for from = 1, #hset, AXES_CHUNK do
      redis.call('HSET', index, unpack(hset, from, math.min(from + AXES_CHUNK - 1, #hset)))
    end
  end
  return overflow, told
end
