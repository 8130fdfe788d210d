-- Admit one request against every limit of its Admission, all-or-nothing (store/memory.py is
-- the reference). All keys carry the owner's hash tag.
-- KEYS: 1 the key's rpm log, 2 the owner's rpm log (ZSETs request id -> admission time),
--       3 the key's leases (ZSET request id -> lease expiry),
--       4 the key's token counters (HASH d, dt, m, mt), 5 the owner's (HASH m, mt)
-- ARGV: 1 request id, 2 rpm, 3 concurrency, 4 daily, 5 monthly, 6 plan_rpm, 7 plan_monthly
--       (each '' when it does not apply), 8 reserve, 9 clock override (''), 10 lease seconds,
--       11 rpm window seconds, 12 counter ttl seconds
-- The logs' and the leases' TTLs are renewed at most once a window (the time of the last renewal
-- is field x of the key's and of the owner's token counters), each renewal long enough that every
-- entry added before the next one outlives its window; a log or lease set that was empty gets its
-- TTL at once. That spares three EXPIREs per admission.
-- Returns {admitted, refused (0 none, 1..6 = rpm, concurrency, daily, monthly, plan_rpm,
--   plan_monthly), retry_after (text), requests in the headers' log, its oldest time (text),
--   day tokens, month tokens, owner month tokens, day, month, now, to midnight, to month end}

local rid = ARGV[1]
local rpm, conc = tonumber(ARGV[2]), tonumber(ARGV[3])
local daily, monthly = tonumber(ARGV[4]), tonumber(ARGV[5])
local prpm, pmonthly = tonumber(ARGV[6]), tonumber(ARGV[7])
local reserve = tonumber(ARGV[8])
local now = clock(ARGV[9])
local lease, window, ttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
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

local kt = redis.call('HMGET', KEYS[4], 'd', 'dt', 'm', 'mt', 'x')
local ot = redis.call('HMGET', KEYS[5], 'm', 'mt', 'x')
local dtok = tonumber(kt[1]) == day and tonumber(kt[2]) or 0
local mtok = tonumber(kt[3]) == month and tonumber(kt[4]) or 0
local otok = tonumber(ot[1]) == month and tonumber(ot[2]) or 0
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
local leases = redis.call('ZCARD', KEYS[3])

local refused, retry = 0, 0
local wait = rpm and rpm_wait(KEYS[1], rpm)
if wait then
  refused, retry = 1, wait
elseif conc and leases >= conc then
  refused, retry = 2, 1
elseif daily and dtok + reserve > daily then
  refused, retry = 3, to_midnight
elseif monthly and mtok + reserve > monthly then
  refused, retry = 4, to_month
else
  wait = prpm and rpm_wait(KEYS[2], prpm)
  if wait then
    refused, retry = 5, wait
  elseif pmonthly and otok + reserve > pmonthly then
    refused, retry = 6, to_month
  end
end

-- whether the TTLs renewed at ``last`` (nil: never) are due again
local function due(last)
  last = tonumber(last)
  return last == nil or now - last >= window or now < last
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
  redis.call('ZADD', KEYS[3], fmt(now + lease), rid)
  if renew_key or leases == 0 then redis.call('EXPIRE', KEYS[3], lease + 60 + window) end
  dtok, mtok, otok = dtok + reserve, mtok + reserve, otok + reserve
  -- x: the last renewal (a renewal not due keeps the one read, never nil then)
  redis.call('HSET', KEYS[4], 'd', day, 'dt', dtok, 'm', month, 'mt', mtok,
    'x', renew_key and at or kt[5])
  -- the TTL (longer than a month) is set when the period changes, not on every request
  if tonumber(kt[1]) ~= day then redis.call('EXPIRE', KEYS[4], ttl) end
  redis.call('HSET', KEYS[5], 'm', month, 'mt', otok, 'x', renew_owner and at or ot[3])
  if tonumber(ot[1]) ~= month then redis.call('EXPIRE', KEYS[5], ttl) end
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
return {refused == 0 and 1 or 0, refused, fmt(retry), count, oldest, dtok, mtok, otok, day, month,
  fmt(now), fmt(to_midnight), fmt(to_month)}
