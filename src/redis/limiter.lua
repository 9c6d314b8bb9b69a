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
if (not cfg) or op == 'configure' then
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

if op == 'acquire' then
  -- ARGV: op, cfg, requests, tokens, id, max_wait (us, -1: no limit)
  prepare()
  return reserve(ARGV[5], costs(tonumber(ARGV[3]), tonumber(ARGV[4])), tonumber(ARGV[6]))
elseif op == 'confirm' then
  -- ARGV: op, cfg, requests, tokens, id, max_wait, slot, epoch. Called when a
  -- reservation's slot has come: it stands unless a pause now covers it, or
  -- it is gone with the server's data (another epoch); then it is reserved
  -- again, behind the others. Under the same epoch a reservation missing from
  -- the log was coalesced: it is still counted, at its slot or later.
  prepare()
  local c = costs(tonumber(ARGV[3]), tonumber(ARGV[4]))
  local id = ARGV[5]
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
  if score then
    if pause_end() <= score then
      if score <= now then return reply(0, 0, 0, score) end
      return reply(1, score - now, 0, score)
    end
    remove(id, c, false)
  end
  return reserve(id, c, tonumber(ARGV[6]))
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
  ensure_expiry()
  return reply(0, 0, 0, now)
end
return redis.error_reply('PACELINE unknown operation ' .. tostring(op))
