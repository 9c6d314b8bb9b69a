-- paceline: one strict sliding-window limiter shared through Redis.
--
-- KEYS[1]      the limiter's hash (fields below)
-- KEYS[2..n+1] one sorted set per quota: the sliding log, one member per grant
--              or reservation ("<id>:<cost>"), scored by its instant
-- ARGV[1]      the operation: acquire, confirm, cancel, pause, resume, stats, configure
-- ARGV[2]      the caller's quotas, "max,window,unit;..." (unit r or t), stored
--              when the limiter has none yet (or on configure)
--
-- The hash: "cfg" the quotas; "e" the epoch (when the hash was made); "p" the
-- end of the pause; "l" the latest slot given (FIFO: nobody is placed before
-- it); "x" the instant every key is set to expire at; per quota i, "s<i>" the
-- cost its log holds, "k<i>" where its coalescing has got to and "o<i>" its
-- oldest instant; and "t:<id>" for a reservation dropped because its cost no
-- longer fits (until its waiter hears of it). It is read once (HMGET) and
-- written once (HSET) per call.
--
-- Every instant is in microseconds of this server's clock (TIME): clients'
-- clocks never enter. Numbers are written back with %d so that Lua's 14-digit
-- number formatting never rounds an instant.

-- Redis before 5 replicates scripts verbatim, and TIME would make that
-- unsafe: replicate the effects instead (the default since Redis 5).
if redis.replicate_commands then redis.replicate_commands() end

local meta = KEYS[1]
local op = ARGV[1]
local n = #KEYS - 1
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function fmt(x)
  return string.format('%d', x)
end

-- The hash, read once. Its numbers are parsed once into `num`; `put` changes
-- one and marks it for `save`, which writes every change in one HSET. Field
-- names are made with fmt: Lua turns a number into text by printing a
-- double, which costs more than the rest of a call.
local S, K, O = {}, {}, {}
local fields = { 'cfg', 'e', 'p', 'l', 'x' }
for i = 1, n do
  S[i], K[i], O[i] = 's' .. fmt(i), 'k' .. fmt(i), 'o' .. fmt(i)
  fields[#fields + 1] = S[i]
  fields[#fields + 1] = K[i]
  fields[#fields + 1] = O[i]
end
local stored = redis.call('HMGET', meta, unpack(fields))
local cfg, epoch = stored[1], stored[2]
local num = {}
for j = 3, #fields do
  if stored[j] then num[fields[j]] = tonumber(stored[j]) end
end
local dirty, text_dirty = {}, false
local function put(field, value)
  num[field] = value
  dirty[field] = true
end
local function save()
  local args = {}
  if text_dirty then
    args[1], args[2], args[3], args[4] = 'cfg', cfg, 'e', epoch
  end
  for field in pairs(dirty) do
    args[#args + 1] = field
    args[#args + 1] = fmt(num[field])
  end
  if #args > 0 then redis.call('HSET', meta, unpack(args)) end
  -- After the write, so that a hash made by this call gets it too.
  if dirty.x then
    local at_ms = fmt(math.ceil(num.x / 1000))
    redis.call('PEXPIREAT', meta, at_ms)
    for i = 1, n do redis.call('PEXPIREAT', KEYS[i + 1], at_ms) end
  end
  dirty, text_dirty = {}, false
end

local cfg_changed = false
if (not cfg) or op == 'configure' then
  cfg_changed = (cfg ~= nil) and (cfg ~= ARGV[2])
  cfg = ARGV[2]
  text_dirty = true
end

-- The limiter's epoch: a reservation made under another epoch is gone with
-- the server's data (a restart, an expiry).
if not epoch then
  epoch = fmt(now)
  text_dirty = true
end

local quotas = {}
for max, win, unit in string.gmatch(cfg, '(%d+),(%d+),(%a)') do
  quotas[#quotas + 1] = { max = tonumber(max), win = tonumber(win), unit = unit }
end
if #quotas ~= n then
  return redis.error_reply('PACELINE quota count: the limiter has ' .. #quotas ..
    ' quotas, the caller ' .. n)
end

local longest = 0
for i = 1, n do
  if quotas[i].win > longest then longest = quotas[i].win end
end

-- The fast path: an acquire that can be granted now with nothing to tidy
-- (no grant has left a window, no bucket is due for coalescing, the expiry
-- reaches far enough) and nobody ahead. It decides exactly as the full path
-- below would, with four commands and none of the full path's helpers, which
-- cost more to set up than the commands themselves.
if op == 'acquire' and not text_dirty and num.x and (num.p or 0) <= now and (num.l or -1) < now
    and num.x >= now + longest + 1000000 then
  local requests, tokens = tonumber(ARGV[3]), tonumber(ARGV[4])
  local c, fits = {}, true
  for i = 1, n do
    local q = quotas[i]
    local cost = requests
    if q.unit == 't' then cost = tokens end
    local logged, oldest = num[S[i]], num[O[i]]
    local res = 0
    if q.max > 1024 then res = math.max(1, math.floor(q.win / 1000)) end
    if (not logged) or logged + cost > q.max
        or (logged > 0 and not (oldest and oldest > now - q.win))
        or (res > 0 and (num[K[i]] or 0) < math.floor(now / res) * res) then
      fits = false
      break
    end
    c[i] = cost
  end
  if fits then
    local at = fmt(now)
    local args, out = { 'l', at }, {}
    for i = 1, n do
      local logged = num[S[i]]
      if c[i] > 0 then
        redis.call('ZADD', KEYS[i + 1], at, ARGV[5] .. ':' .. fmt(c[i]))
        if logged == 0 then
          args[#args + 1], args[#args + 2] = O[i], at
          redis.call('PEXPIREAT', KEYS[i + 1], fmt(math.ceil(num.x / 1000)))
        end
        logged = logged + c[i]
        args[#args + 1], args[#args + 2] = S[i], fmt(logged)
      end
      out[i] = fmt(logged)
    end
    redis.call('HSET', meta, unpack(args))
    local other = ''
    if cfg ~= ARGV[2] then other = cfg end
    return { 0, '0', 0, at, other, table.concat(out, ','), epoch }
  end
end

local function cost_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

local function member_of(id, cost)
  return id .. ':' .. fmt(cost)
end

local function costs(requests, tokens)
  local c = {}
  for i = 1, n do
    if quotas[i].unit == 't' then c[i] = tokens else c[i] = requests end
  end
  return c
end

local function pause_end()
  return num.p or 0
end

-- Coalescing step: exact below 1,025 grants per window, else window / 1000.
local function resolution(q)
  if q.max <= 1024 then return 0 end
  local r = math.floor(q.win / 1000)
  if r < 1 then r = 1 end
  return r
end

-- The cost logged in quota i (grants in its window and reservations ahead).
local sums = {}
local function set_sum(i, total)
  sums[i] = total
  put(S[i], total)
end

local function recount(i)
  local all = redis.call('ZRANGE', KEYS[i + 1], '0', '-1')
  local total = 0
  for _, m in ipairs(all) do total = total + cost_of(m) end
  set_sum(i, total)
end

local function load_sums()
  for i = 1, n do
    if num[S[i]] then sums[i] = num[S[i]] else recount(i) end
  end
end

-- Drop the grants that left quota i's window. "o<i>" remembers the oldest
-- instant logged (never later than it is), so that a call with nothing to
-- drop does not look.
local function trim(i)
  local edge = now - quotas[i].win
  if num[O[i]] and num[O[i]] > edge then return end
  local key = KEYS[i + 1]
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', fmt(edge))
  if #gone > 0 then
    local total = 0
    for _, m in ipairs(gone) do total = total + cost_of(m) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(edge))
    if sums[i] - total < 0 then recount(i) else set_sum(i, sums[i] - total) end
  end
  local first = redis.call('ZRANGE', key, '0', '0', 'WITHSCORES')
  if #first > 0 then put(O[i], tonumber(first[2])) else put(O[i], now) end
end

-- Merge the grants of quota i's buckets that are over (wholly in the past:
-- they can no longer be cancelled) into one entry each, dated at the bucket's
-- latest grant: a grant is only ever counted later than it was made, so the
-- window stays strict. The bucket still filling is left as it is.
local function coalesce(i)
  local res = resolution(quotas[i])
  if res == 0 then return end
  local open = math.floor(now / res) * res
  local done = num[K[i]] or 0
  if done >= open then return end
  local key = KEYS[i + 1]
  local items = redis.call('ZRANGEBYSCORE', key, fmt(done), '(' .. fmt(open), 'WITHSCORES')
  local bucket, members, total, latest = nil, {}, 0, 0
  local function flush()
    if #members > 1 then
      for j = 1, #members, 500 do
        redis.call('ZREM', key, unpack(members, j, math.min(j + 499, #members)))
      end
      redis.call('ZADD', key, fmt(latest), 'c' .. fmt(latest) .. ':' .. fmt(total))
    end
  end
  for j = 1, #items, 2 do
    local score = tonumber(items[j + 1])
    local b = math.floor(score / res)
    if b ~= bucket then
      flush()
      bucket, members, total = b, {}, 0
    end
    members[#members + 1] = items[j]
    total = total + cost_of(items[j])
    latest = score
  end
  flush()
  put(K[i], open)
end

local function prepare()
  load_sums()
  for i = 1, n do
    trim(i)
    coalesce(i)
  end
end

-- Keys expire together, once the longest window has passed after the last
-- slot and the pause, plus a second. The expiry is moved a second further
-- than needed, so that it is set about once a second under load, not on
-- every call; `save` sets it.
local function keep_alive(last)
  local edge = last
  if pause_end() > edge then edge = pause_end() end
  local needed = edge + longest + 1000000
  if num.x and num.x >= needed then return end
  put('x', needed + 1000000)
end

-- A log that was empty has no key, so no expiry: give it the others' (when
-- the expiry is not about to be set anew for all).
local function add(i, slot, member, cost)
  local was_empty = sums[i] == 0
  redis.call('ZADD', KEYS[i + 1], fmt(slot), member)
  if was_empty then put(O[i], slot) end
  set_sum(i, sums[i] + cost)
  if was_empty and num.x and not dirty.x then
    redis.call('PEXPIREAT', KEYS[i + 1], fmt(math.ceil(num.x / 1000)))
  end
end

local function summary()
  local out = {}
  for i = 1, n do out[i] = fmt(sums[i] or 0) end
  return table.concat(out, ',')
end

-- Replies: { status, wait (us), quota index or 0, slot (us), stored cfg, sums, epoch }
-- status 0: granted now; 1: reserved, wait until the slot; 2: refused (the slot
-- would come after max_wait; nothing reserved); 3: the cost exceeds quota index.
-- For cancel, status is the number of logs the reservation was removed from.
local function reply(status, wait, index, slot)
  -- Cheap when nothing changes: a window grown by a new quota, or a new
  -- pause, moves the expiry here.
  keep_alive(math.max(num.l or 0, now))
  save()
  local other = ''
  if cfg ~= ARGV[2] then other = cfg end
  return { status, fmt(wait), index, fmt(slot), other, summary(), epoch }
end

-- The earliest instant at which quota i has room for `cost` more, given that
-- the new grant comes after everything logged: drop the oldest entries until
-- what is left plus the cost fits, then wait until the last one dropped leaves
-- the window.
local function earliest_room(i, cost)
  local need = sums[i] + cost - quotas[i].max
  if need <= 0 then return nil end
  local key = KEYS[i + 1]
  local seen, start = 0, 0
  while true do
    local chunk = redis.call('ZRANGE', key, fmt(start), fmt(start + 127), 'WITHSCORES')
    if #chunk == 0 then
      -- The count was stale: the log holds `seen` in all.
      set_sum(i, seen)
      need = seen + cost - quotas[i].max
      if need <= 0 then return nil end
      seen, start = 0, 0
      chunk = redis.call('ZRANGE', key, '0', '127', 'WITHSCORES')
    end
    for j = 1, #chunk, 2 do
      seen = seen + cost_of(chunk[j])
      if seen >= need then
        return tonumber(chunk[j + 1]) + quotas[i].win
      end
    end
    start = start + 128
  end
end

local function reserve(id, c, max_wait)
  for i = 1, n do
    if c[i] > quotas[i].max then return reply(3, 0, i, 0) end
  end
  local slot = now
  if pause_end() > slot then slot = pause_end() end
  -- After everyone placed before, and strictly so: no two reservations share
  -- an instant, and the log's order is the order of arrival.
  if (num.l or -1) >= slot then slot = num.l + 1 end
  for i = 1, n do
    if c[i] > 0 then
      local room = earliest_room(i, c[i])
      if room and room > slot then slot = room end
    end
  end
  if max_wait >= 0 and slot - now > max_wait then
    return reply(2, slot - now, 0, slot)
  end
  for i = 1, n do
    if c[i] > 0 then add(i, slot, member_of(id, c[i]), c[i]) end
  end
  put('l', slot)
  keep_alive(slot)
  if slot == now then return reply(0, 0, 0, slot) end
  return reply(1, slot - now, 0, slot)
end

-- The latest slot still logged, after a reservation left.
local function recompute_latest()
  local latest = 0
  for i = 1, n do
    local last = redis.call('ZRANGE', KEYS[i + 1], '-1', '-1', 'WITHSCORES')
    if #last > 0 and tonumber(last[2]) > latest then latest = tonumber(last[2]) end
  end
  put('l', latest)
end

-- Remove a reservation from every quota; with `future_only`, only where it
-- is still ahead of now (a grant whose instant has passed stays counted).
local function remove(id, c, future_only)
  local removed, latest = 0, false
  for i = 1, n do
    if c[i] > 0 then
      local key = KEYS[i + 1]
      local member = member_of(id, c[i])
      local score = redis.call('ZSCORE', key, member)
      if score and ((not future_only) or tonumber(score) > now) then
        redis.call('ZREM', key, member)
        set_sum(i, sums[i] - c[i])
        removed = removed + 1
        if tonumber(score) >= (num.l or 0) then latest = true end
      end
    end
  end
  if latest then recompute_latest() end
  return removed
end

-- Move every reservation still ahead of now to the earliest slot it may have
-- under the current quotas and pause, no earlier than it had, in the order
-- they were made: FIFO is kept, the window holds for the quotas now stored,
-- and no waiter is ever told to come earlier than it was told (it sleeps
-- until its slot, and finds the new one when it confirms).
local function reschedule()
  local ahead, order = {}, {}
  for i = 1, n do
    local key = KEYS[i + 1]
    local items = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf', 'WITHSCORES')
    for j = 1, #items, 2 do
      local member, score = items[j], tonumber(items[j + 1])
      local id = string.match(member, '^(.*):%d+$')
      local entry = ahead[id]
      if not entry then
        entry = { id = id, score = score, c = {} }
        for q = 1, n do entry.c[q] = 0 end
        ahead[id] = entry
        order[#order + 1] = entry
      end
      entry.c[i] = cost_of(member)
    end
    if #items > 0 then
      redis.call('ZREMRANGEBYSCORE', key, '(' .. fmt(now), '+inf')
    end
  end
  if #order == 0 then return end
  table.sort(order, function(a, b)
    if a.score ~= b.score then return a.score < b.score end
    return a.id < b.id
  end)
  -- Per quota, the log left (all at or before now) as instants and running
  -- totals, extended as reservations are placed again.
  local at, upto = {}, {}
  for i = 1, n do
    at[i], upto[i] = {}, {}
    local items = redis.call('ZRANGE', KEYS[i + 1], '0', '-1', 'WITHSCORES')
    local total = 0
    for j = 1, #items, 2 do
      total = total + cost_of(items[j])
      at[i][#at[i] + 1] = tonumber(items[j + 1])
      upto[i][#upto[i] + 1] = total
    end
    set_sum(i, total)
  end
  -- The earliest instant with room for `cost` in quota i: the first entry
  -- whose running total reaches the excess must have left the window.
  local function room(i, cost)
    local need = sums[i] + cost - quotas[i].max
    if need <= 0 then return 0 end
    local lo, hi = 1, #upto[i]
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if upto[i][mid] >= need then hi = mid else lo = mid + 1 end
    end
    return at[i][lo] + quotas[i].win
  end
  local p = pause_end()
  local function place(entry, slot)
    slot = slot + 1
    if entry.score > slot then slot = entry.score end
    if p > slot then slot = p end
    for i = 1, n do
      if entry.c[i] > 0 then
        local r = room(i, entry.c[i])
        if r > slot then slot = r end
      end
    end
    for i = 1, n do
      local c = entry.c[i]
      if c > 0 then
        add(i, slot, member_of(entry.id, c), c)
        at[i][#at[i] + 1] = slot
        upto[i][#upto[i] + 1] = sums[i]
      end
    end
    return slot
  end
  -- A reservation whose cost no longer fits a quota (after a downgrade) is
  -- not placed again, and leaves a tombstone: its waiter learns it when it
  -- confirms, even if the quota has grown back by then.
  local slot = now
  for _, entry in ipairs(order) do
    local fits = true
    for i = 1, n do
      if entry.c[i] > quotas[i].max then fits = false end
    end
    if fits then
      slot = place(entry, slot)
    else
      redis.call('HSET', meta, 't:' .. entry.id, fmt(entry.score))
    end
  end
  recompute_latest()
  keep_alive(slot)
end

if op == 'acquire' then
  -- ARGV: op, cfg, requests, tokens, id, max_wait (us, -1: no limit)
  prepare()
  return reserve(ARGV[5], costs(tonumber(ARGV[3]), tonumber(ARGV[4])), tonumber(ARGV[6]))
elseif op == 'confirm' then
  -- ARGV: op, cfg, requests, tokens, id, max_wait, slot, epoch. Called when a
  -- reservation's slot has come (or its waiter heard of a change). It may
  -- have been moved later meanwhile (a pause, a smaller quota): then the
  -- waiter waits again, unless that is past its deadline. Its slot passed,
  -- it is granted: a pause set since does not undo a grant made before it.
  -- Not found, it is reserved again, behind the others (and counted anew):
  -- unless its quota coalesces and its slot lies in a bucket merged since,
  -- still in the window, where it is counted already.
  prepare()
  local c = costs(tonumber(ARGV[3]), tonumber(ARGV[4]))
  local id = ARGV[5]
  local max_wait = tonumber(ARGV[6])
  for i = 1, n do
    if c[i] > quotas[i].max then
      remove(id, c, false)
      return reply(3, 0, i, 0)
    end
  end
  local score = nil
  if ARGV[8] == epoch then
    local slot = tonumber(ARGV[7])
    for i = 1, n do
      if c[i] > 0 then
        local found = redis.call('ZSCORE', KEYS[i + 1], member_of(id, c[i]))
        if found then
          score = tonumber(found)
        elseif redis.call('HDEL', meta, 't:' .. id) == 1 then
          score = nil
        elseif resolution(quotas[i]) > 0 and slot < (num[K[i]] or 0)
            and slot > now - quotas[i].win then
          score = slot
        end
        break
      end
    end
  end
  if not score then
    return reserve(id, c, max_wait)
  end
  if score <= now then return reply(0, 0, 0, score) end
  if max_wait >= 0 and score - now > max_wait then
    remove(id, c, true)
    return reply(2, score - now, 0, score)
  end
  return reply(1, score - now, 0, score)
elseif op == 'cancel' then
  -- ARGV: op, cfg, requests, tokens, id
  load_sums()
  local removed = remove(ARGV[5], costs(tonumber(ARGV[3]), tonumber(ARGV[4])), true)
  redis.call('HDEL', meta, 't:' .. ARGV[5])
  return reply(removed, 0, 0, now)
elseif op == 'pause' then
  -- ARGV: op, cfg, duration (us)
  local target = now + tonumber(ARGV[3])
  if target > pause_end() then put('p', target) end
  prepare()
  reschedule()
  keep_alive(now)
  return reply(0, pause_end() - now, 0, pause_end())
elseif op == 'resume' then
  load_sums()
  put('p', 0)
  return reply(0, 0, 0, now)
elseif op == 'stats' then
  -- Reply: { now, pause left (us), stored cfg, per quota "in_window,logged,queued" }
  prepare()
  local out = {}
  for i = 1, n do
    local key = KEYS[i + 1]
    local inside = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now - quotas[i].win), fmt(now))
    local in_window = 0
    for _, m in ipairs(inside) do in_window = in_window + cost_of(m) end
    local queued = redis.call('ZCOUNT', key, '(' .. fmt(now), '+inf')
    out[i] = fmt(in_window) .. ',' .. fmt(sums[i]) .. ',' .. fmt(queued)
  end
  keep_alive(math.max(num.l or 0, now))
  save()
  local p = pause_end() - now
  if p < 0 then p = 0 end
  return { fmt(now), fmt(p), cfg, table.concat(out, ';') }
elseif op == 'configure' then
  prepare()
  if cfg_changed then reschedule() end
  return reply(0, 0, 0, now)
end
return redis.error_reply('PACELINE unknown operation ' .. tostring(op))
