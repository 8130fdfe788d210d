-- Admit one request against every limit of its Admission, all-or-nothing (store/memory.py is
-- the reference). All keys carry the owner's hash tag.
-- KEYS: 1 the key's rpm log, 2 the owner's rpm log (ZSETs request id -> admission time),
--       3 the key's leases (ZSET request id -> lease expiry),
--       4 the key's counters (HASH d, dt, m, mt, x; dc, mc: money of the day and month),
--       5 the owner's (HASH m, mt, x; mc),
--       6 the key's minute log, 7 its tokens (ZSET request id -> admission time; HASH request
--       id -> tokens, s = their sum), 8 and 9 the owner's
-- ARGV: 1 request id, 2 rpm, 3 concurrency, 4 daily, 5 monthly, 6 plan_rpm, 7 plan_monthly
--       (each '' when it does not apply), 8 reserve, 9 clock override (''), 10 lease seconds,
--       11 rpm window seconds, 12 counter ttl seconds, 13 tpm, 14 daily budget, 15 monthly
--       budget, 16 plan tpm, 17 plan budget ('' when they do not apply), 18 reserve cost
-- The logs' and the leases' TTLs are renewed at most once a window (the time of the last renewal
-- is field x of the key's and of the owner's counters), each renewal long enough that every
-- entry added before the next one outlives its window; a log or lease set that was empty gets its
-- TTL at once. That spares three EXPIREs per admission.
-- Returns {admitted, refused (0 none, 1..11 as REFUSALS in redis_codec.py), retry_after (text),
--   requests in the headers' log, its oldest time (text), day tokens, month tokens, owner month
--   tokens, day, month, now, to midnight, to month end, minute tokens, owner minute tokens, day
--   cost, month cost, owner month cost, to the minute's reset, to the owner minute's reset}

local rid = ARGV[1]
local rpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3])
local daily, monthly = tonumber(ARGV[4]), tonumber(ARGV[5])
local prpm, pmonthly = tonumber(ARGV[6]), tonumber(ARGV[7])
local reserve = tonumber(ARGV[8])
local now = clock(ARGV[9])
local lease, window, ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local tpm, dbudget, mbudget = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local ptpm, pbudget = tonumber(ARGV[16]), tonumber(ARGV[17])
local cost = tonumber(ARGV[18])
local day, month, to_midnight, to_month = periods(now)

local counted = {}  -- log sizes already taken, so the headers do not count a log twice
local function log_size(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - window))
  counted[key] = redis.call('ZCARD', key)
  return counted[key]
end

-- nil when there is room, else the seconds until the entry whose leaving makes room leaves
local function rpm_wait(key, limit)
  local n = log_size(key)
  if n < limit then return nil end
  local leaving = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')[2]
  if leaving == nil then return window end
  return tonumber(leaving) + window - now
end

-- The tokens in a rolling minute (log ``z``, tokens ``h``), what left the window dropped.
local function minute_tokens(z, h)
  local sum = tonumber(redis.call('HGET', h, 's') or '0')
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now - window))
  if #old > 0 then
    for i = 1, #old, 1000 do  -- unpack takes a bounded number of values at a time
      local part = {unpack(old, i, math.min(i + 999, #old))}
      for _, v in ipairs(redis.call('HMGET', h, unpack(part))) do sum = sum - (tonumber(v) or 0) end
      redis.call('HDEL', h, unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', fmt(now - window))
    redis.call('HSET', h, 's', sum)
  end
  return sum
end

-- nil when ``reserve`` more fit under ``limit``, else the seconds until enough has left
local function minute_wait(z, h, sum, limit)
  local excess = sum + reserve - limit
  if excess <= 0 then return nil end
  if reserve > limit then return window end
  local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    excess = excess - (tonumber(redis.call('HGET', h, entries[i])) or 0)
    if excess <= 0 then return tonumber(entries[i + 1]) + window - now end
  end
  return window
end

local function minute_reset(z)
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')[2]
  return first and (tonumber(first) + window - now) or 0
end

local kt = redis.call('HMGET', KEYS[4], 'd', 'dt', 'm', 'mt', 'x', 'dc', 'mc')
local ot = redis.call('HMGET', KEYS[5], 'm', 'mt', 'x', 'mc')
local today, this_month = tonumber(kt[1]) == day, tonumber(kt[3]) == month
local dtok = today and tonumber(kt[2]) or 0
local mtok = this_month and tonumber(kt[4]) or 0
local dcost = today and tonumber(kt[6] or '0') or 0
local mcost = this_month and tonumber(kt[7] or '0') or 0
local owner_month = tonumber(ot[1]) == month
local otok = owner_month and tonumber(ot[2]) or 0
local ocost = owner_month and tonumber(ot[4] or '0') or 0
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
local leases = redis.call('ZCARD', KEYS[3])
local ktpm = tpm and minute_tokens(KEYS[6], KEYS[7]) or 0
local otpm = ptpm and minute_tokens(KEYS[8], KEYS[9]) or 0

local refused, retry = 0, 0
local function check(code, wait)
  if refused == 0 and wait then refused, retry = code, wait end
end
local function over(limit, used, amount, wait)
  if limit and used + amount > limit then return wait end
  return nil
end
check(1, rpm and rpm_wait(KEYS[1], rpm))
if refused == 0 and conc and leases >= conc then refused, retry = 2, 1 end
check(3, over(daily, dtok, reserve, to_midnight))
check(4, over(monthly, mtok, reserve, to_month))
if refused == 0 and tpm then check(5, minute_wait(KEYS[6], KEYS[7], ktpm, tpm)) end
check(6, over(dbudget, dcost, cost, to_midnight))
check(7, over(mbudget, mcost, cost, to_month))
if refused == 0 and prpm then check(8, rpm_wait(KEYS[2], prpm)) end
check(9, over(pmonthly, otok, reserve, to_month))
if refused == 0 and ptpm then check(10, minute_wait(KEYS[8], KEYS[9], otpm, ptpm)) end
check(11, over(pbudget, ocost, cost, to_month))

-- whether the TTLs renewed at ``last`` (nil: never) are due again
local function due(last)
  last = tonumber(last)
  return last == nil or now - last >= window or now < last
end

local function minute_take(z, h, sum)
  redis.call('ZADD', z, fmt(now), rid)
  redis.call('HSET', h, rid, reserve, 's', sum + reserve)
  redis.call('EXPIRE', z, 2 * window + 1)
  redis.call('EXPIRE', h, 2 * window + 1)
  return sum + reserve
end

if refused == 0 then
  local at = fmt(now)
  local renew_key, renew_owner = due(kt[5]), due(ot[3])
  if rpm then
    redis.call('ZADD', KEYS[1], at, rid)
    if renew_key or (counted[KEYS[1]] or 0) == 0 then
      redis.call('EXPIRE', KEYS[1], 2 * window + 1)
    end
  end
  if prpm then
    redis.call('ZADD', KEYS[2], at, rid)
    if renew_owner or (counted[KEYS[2]] or 0) == 0 then
      redis.call('EXPIRE', KEYS[2], 2 * window + 1)
    end
  end
  if tpm then ktpm = minute_take(KEYS[6], KEYS[7], ktpm) end
  if ptpm then otpm = minute_take(KEYS[8], KEYS[9], otpm) end
  redis.call('ZADD', KEYS[3], fmt(now + lease), rid)
  if renew_key or leases == 0 then redis.call('EXPIRE', KEYS[3], lease + 60 + window) end
  dtok, mtok, otok = dtok + reserve, mtok + reserve, otok + reserve
  dcost, mcost, ocost = dcost + cost, mcost + cost, ocost + cost
  -- x: the last renewal (a renewal not due keeps the one read, never nil then)
  redis.call('HSET', KEYS[4], 'd', day, 'dt', dtok, 'm', month, 'mt', mtok,
    'x', renew_key and at or kt[5], 'dc', dcost, 'mc', mcost)
  -- the TTL (longer than a month) is set when the period changes, not on every request
  if not today then redis.call('EXPIRE', KEYS[4], ttl) end
  redis.call('HSET', KEYS[5], 'm', month, 'mt', otok, 'x', renew_owner and at or ot[3],
    'mc', ocost)
  if not owner_month then redis.call('EXPIRE', KEYS[5], ttl) end
end

-- the request-limit headers follow the key's rpm when it has one, else the owner's plan rpm
local count, oldest = 0, ''
local shown = (rpm and rpm ~= 0) and KEYS[1] or (prpm and KEYS[2])
if shown then
  count = counted[shown]
  if count == nil then
    count = log_size(shown)  -- a refusal came before this log was looked at
  elseif refused == 0 then
    count = count + 1  -- this admission's own entry
  end
  if count > 0 then oldest = redis.call('ZRANGE', shown, 0, 0, 'WITHSCORES')[2] end
end
local kreset = tpm and minute_reset(KEYS[6]) or 0
local oreset = ptpm and minute_reset(KEYS[8]) or 0
return {refused == 0 and 1 or 0, refused, fmt(retry), count, oldest, dtok, mtok, otok, day, month,
  fmt(now), fmt(to_midnight), fmt(to_month), ktpm, otpm, dcost, mcost, ocost, fmt(kreset),
  fmt(oreset)}
