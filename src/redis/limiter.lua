-- paceline: one strict sliding-window limiter shared through Redis.
--
-- KEYS[1]      the limiter's hash: its quotas ("cfg"), the pause ("p"), and per
--              quota i the cost logged ("s<i>") and how far the log is coalesced ("k<i>")
-- KEYS[2..n+1] one sorted set per quota: the sliding log, one member per grant
--              or reservation ("<id>:<cost>"), scored by its instant
-- ARGV[1]      the operation: acquire, confirm, cancel, pause, resume, stats, configure
-- ARGV[2]      the caller's quotas, "max,window,unit;..." (unit r or t), stored
--              when the limiter has none yet (or on configure)
--
-- Every instant is in microseconds of this server's clock (TIME): clients'
-- clocks never enter. Numbers are written back with %d so that Lua's 14-digit
-- number formatting never rounds an instant.

local meta = KEYS[1]
local op = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function fmt(x)
  return string.format('%d', x)
end

local cfg = redis.call('HGET', meta, 'cfg')
local cfg_changed = false
if (not cfg) or op == 'configure' then
  cfg_changed = (cfg ~= nil) and (cfg ~= ARGV[2])
  cfg = ARGV[2]
  redis.call('HSET', meta, 'cfg', cfg)
end

-- The limiter's epoch: when its hash was made. A reservation made under
-- another epoch is gone with the server's data (a restart, an expiry).
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = fmt(now)
  redis.call('HSET', meta, 'e', epoch)
end

local quotas = {}
for max, win, unit in string.gmatch(cfg, '(%d+),(%d+),(%a)') do
  quotas[#quotas + 1] = { max = tonumber(max), win = tonumber(win), unit = unit }
end
local n = #quotas
if n ~= #KEYS - 1 then
  return redis.error_reply('PACELINE quota count: the limiter has ' .. n ..
    ' quotas, the caller ' .. (#KEYS - 1))
end

local longest = 0
for i = 1, n do
  if quotas[i].win > longest then longest = quotas[i].win end
end

local function cost_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- Coalescing step: exact below 1,025 grants per window, else window / 1000.
local function resolution(q)
  if q.max <= 1024 then return 0 end
  local r = math.floor(q.win / 1000)
  if r < 1 then r = 1 end
  return r
end

local function costs(requests, tokens)
  local c = {}
  for i = 1, n do
    if quotas[i].unit == 't' then c[i] = tokens else c[i] = requests end
  end
  return c
end

local function member_of(id, cost)
  return id .. ':' .. fmt(cost)
end

local function pause_end()
  return tonumber(redis.call('HGET', meta, 'p') or '0')
end

-- The cost logged in quota i, counted again when the hash has lost it.
local sums = {}
local function recount(i)
  local all = redis.call('ZRANGE', KEYS[i + 1], 0, -1)
  local total = 0
  for _, m in ipairs(all) do total = total + cost_of(m) end
  sums[i] = total
  redis.call('HSET', meta, 's' .. i, fmt(total))
end

-- Drop the grants that left quota i's window, and count what is left.
local function trim(i)
  local key = KEYS[i + 1]
  local edge = fmt(now - quotas[i].win)
  local gone = redis.call('ZRANGEBYSCORE', key, '-inf', edge)
  local stored = redis.call('HGET', meta, 's' .. i)
  if not stored then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', edge)
    recount(i)
    return
  end
  sums[i] = tonumber(stored)
  if #gone > 0 then
    local total = 0
    for _, m in ipairs(gone) do total = total + cost_of(m) end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', edge)
    sums[i] = sums[i] - total
  end
  if sums[i] < 0 or (sums[i] > 0 and redis.call('EXISTS', key) == 0) then
    recount(i)
  elseif #gone > 0 then
    redis.call('HSET', meta, 's' .. i, fmt(sums[i]))
  end
end

-- Merge the grants of quota i that are now in the past (they can no longer be
-- cancelled) bucket by bucket, each bucket dated at its latest grant: a grant
-- is only ever counted later than it was made, so the window stays strict.
local function coalesce(i)
  local res = resolution(quotas[i])
  if res == 0 then return end
  local key = KEYS[i + 1]
  local done = tonumber(redis.call('HGET', meta, 'k' .. i) or '0')
  if done >= now then return end
  local from = math.floor((done + 1) / res) * res
  local items = redis.call('ZRANGEBYSCORE', key, fmt(from), fmt(now), 'WITHSCORES')
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
  redis.call('HSET', meta, 'k' .. i, fmt(now))
end

local function prepare()
  for i = 1, n do
    trim(i)
    coalesce(i)
  end
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
    local chunk = redis.call('ZRANGE', key, start, start + 127, 'WITHSCORES')
    if #chunk == 0 then
      -- The count was stale: the log holds `seen` in all.
      sums[i] = seen
      redis.call('HSET', meta, 's' .. i, fmt(seen))
      need = seen + cost - quotas[i].max
      if need <= 0 then return nil end
      seen, start = 0, 0
      chunk = redis.call('ZRANGE', key, 0, 127, 'WITHSCORES')
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

local function keep_alive(last)
  local ttl = math.ceil((last - now + longest) / 1000) + 1000
  for i = 1, n do
    redis.call('PEXPIRE', KEYS[i + 1], ttl)
  end
  local p = pause_end()
  local meta_ttl = ttl
  if p > now then
    local until_pause = math.ceil((p - now) / 1000) + 1000
    if until_pause > meta_ttl then meta_ttl = until_pause end
  end
  redis.call('PEXPIRE', meta, meta_ttl)
end

local function summary()
  local out = {}
  for i = 1, n do out[i] = fmt(sums[i] or 0) end
  return table.concat(out, ',')
end

local function ensure_expiry()
  if redis.call('PTTL', meta) == -1 then
    redis.call('PEXPIRE', meta, math.ceil(longest / 1000) + 1000)
  end
end

-- Replies: { status, wait (us), quota index or 0, slot (us), stored cfg, sums, epoch }
-- status 0: granted now; 1: reserved, wait until the slot; 2: refused (the slot
-- would come after max_wait; nothing reserved); 3: the cost exceeds quota index.
local function reply(status, wait, index, slot)
  ensure_expiry()
  local stored = ''
  if cfg ~= ARGV[2] then stored = cfg end
  return { status, fmt(wait), index, fmt(slot), stored, summary(), epoch }
end

local function reserve(id, c, max_wait)
  for i = 1, n do
    if c[i] > quotas[i].max then return reply(3, 0, i, 0) end
  end
  local slot = now
  local p = pause_end()
  if p > slot then slot = p end
  for i = 1, n do
    local last = redis.call('ZRANGE', KEYS[i + 1], -1, -1, 'WITHSCORES')
    if #last > 0 then
      local s = tonumber(last[2])
      if s > slot then slot = s end
    end
    if c[i] > 0 then
      local room = earliest_room(i, c[i])
      if room and room > slot then slot = room end
    end
  end
  if max_wait >= 0 and slot - now > max_wait then
    return reply(2, slot - now, 0, slot)
  end
  for i = 1, n do
    if c[i] > 0 then
      redis.call('ZADD', KEYS[i + 1], fmt(slot), member_of(id, c[i]))
      sums[i] = sums[i] + c[i]
      redis.call('HSET', meta, 's' .. i, fmt(sums[i]))
    end
  end
  keep_alive(slot)
  if slot == now then return reply(0, 0, 0, slot) end
  return reply(1, slot - now, 0, slot)
end

-- Remove a reservation from every quota; with `future_only`, only where it
-- is still ahead of now (a grant whose instant has passed stays counted).
local function remove(id, c, future_only)
  local removed = 0
  for i = 1, n do
    if c[i] > 0 then
      local key = KEYS[i + 1]
      local member = member_of(id, c[i])
      local score = redis.call('ZSCORE', key, member)
      if score and ((not future_only) or tonumber(score) > now) then
        redis.call('ZREM', key, member)
        sums[i] = sums[i] - c[i]
        redis.call('HSET', meta, 's' .. i, fmt(sums[i]))
        removed = removed + 1
      end
    end
  end
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
    local items = redis.call('ZRANGE', KEYS[i + 1], 0, -1, 'WITHSCORES')
    local total = 0
    for j = 1, #items, 2 do
      total = total + cost_of(items[j])
      at[i][#at[i] + 1] = tonumber(items[j + 1])
      upto[i][#upto[i] + 1] = total
    end
    sums[i] = total
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
  -- A reservation whose cost no longer fits a quota (after a downgrade) is
  -- not placed again: its waiter learns it when it confirms.
  local function place(entry, slot)
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
        redis.call('ZADD', KEYS[i + 1], fmt(slot), member_of(entry.id, c))
        sums[i] = sums[i] + c
        at[i][#at[i] + 1] = slot
        upto[i][#upto[i] + 1] = sums[i]
      end
    end
    return slot
  end
  local slot = now
  for _, entry in ipairs(order) do
    local fits = true
    for i = 1, n do
      if entry.c[i] > quotas[i].max then fits = false end
    end
    if fits then
      slot = place(entry, slot)
    end
  end
  for i = 1, n do redis.call('HSET', meta, 's' .. i, fmt(sums[i])) end
  keep_alive(slot)
end

if op == 'acquire' then
  -- ARGV: op, cfg, requests, tokens, id, max_wait (us, -1: no limit)
  prepare()
  return reserve(ARGV[5], costs(tonumber(ARGV[3]), tonumber(ARGV[4])), tonumber(ARGV[6]))
elseif op == 'confirm' then
  -- ARGV: op, cfg, requests, tokens, id, max_wait, slot, epoch. Called when a
  -- reservation's slot has come. It may have been moved later meanwhile (a
  -- pause, a smaller quota): then the waiter waits again, unless that is
  -- past its deadline. Gone with the server's data (another epoch), it is
  -- reserved again, behind the others. Under the same epoch a reservation
  -- missing from the log was coalesced: it is still counted, at its slot.
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
    score = tonumber(ARGV[7])
    for i = 1, n do
      if c[i] > 0 then
        local s = redis.call('ZSCORE', KEYS[i + 1], member_of(id, c[i]))
        if s then score = tonumber(s) end
        break
      end
    end
  end
  if not score then
    return reserve(id, c, max_wait)
  end
  if pause_end() > score then
    remove(id, c, false)
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
  for i = 1, n do
    local stored = redis.call('HGET', meta, 's' .. i)
    if stored then sums[i] = tonumber(stored) else recount(i) end
  end
  local removed = remove(ARGV[5], costs(tonumber(ARGV[3]), tonumber(ARGV[4])), true)
  ensure_expiry()
  return reply(removed, 0, 0, now)
elseif op == 'pause' then
  -- ARGV: op, cfg, duration (us)
  local target = now + tonumber(ARGV[3])
  local p = pause_end()
  if target > p then
    redis.call('HSET', meta, 'p', fmt(target))
    p = target
  end
  prepare()
  reschedule()
  local need = math.ceil((p - now) / 1000) + 1000
  local ttl = redis.call('PTTL', meta)
  if ttl < need then redis.call('PEXPIRE', meta, need) end
  return reply(0, p - now, 0, p)
elseif op == 'resume' then
  redis.call('HDEL', meta, 'p')
  ensure_expiry()
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
  ensure_expiry()
  local p = pause_end() - now
  if p < 0 then p = 0 end
  return { fmt(now), fmt(p), cfg, table.concat(out, ';') }
elseif op == 'configure' then
  prepare()
  if cfg_changed then reschedule() end
  ensure_expiry()
  return reply(0, 0, 0, now)
end
return redis.error_reply('PACELINE unknown operation ' .. tostring(op))
