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
-- Likewise the logs and the lease set lose their expired entries at most once a second (the time
-- of the last trim is field t of the same hashes); their counts and ranks never include them
-- (ZCOUNT and ZRANGE BYSCORE over the window), so what is counted is exact either way. That
-- spares three ZREMRANGEBYSCOREs per admission.
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

local kt = redis.call('HMGET', KEYS[4], 'd', 'dt', 'm', 'mt', 'x', 't')
local ot = redis.call('HMGET', KEYS[5], 'm', 'mt', 'x', 't')

-- whether what was done at ``last`` (nil: never) is due again after ``every`` seconds
local function due(last, every)
  last = tonumber(last)
  return last == nil or now - last >= every or now < last
end
local trim_key, trim_owner = due(kt[6], 1), due(ot[4], 1)
local trims = {[KEYS[1]] = trim_key, [KEYS[2]] = trim_owner}
local floor = fmt(now - window)  -- entries at or before it have left the window
local in_window = '(' .. floor

local counted = {}  -- log sizes already taken, so the headers do not count a log twice
local function log_size(key)
  if trims[key] then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', floor)
    counted[key] = redis.call('ZCARD', key)
  else
    counted[key] = redis.call('ZCOUNT', key, in_window, '+inf')
  end
  return counted[key]
end

-- the score of the log's entry of rank ``rank`` (0: the oldest) in the window, or nil
local function in_window_at(key, rank)
  return redis.call('ZRANGE', key, in_window, '+inf', 'BYSCORE', 'LIMIT', rank, 1,
    'WITHSCORES')[2]
end

-- nil when there is room, else the seconds until the entry whose leaving makes room leaves
local function rpm_wait(key, limit)
  local n = log_size(key)
  if n < limit then return nil end
  local leaving = in_window_at(key, n - limit)
  if leaving == nil then return window end
  return tonumber(leaving) + window - now
end

local dtok = tonumber(kt[1]) == day and tonumber(kt[2]) or 0
local mtok = tonumber(kt[3]) == month and tonumber(kt[4]) or 0
local otok = tonumber(ot[1]) == month and tonumber(ot[2]) or 0
local leases
if trim_key then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now))
  leases = redis.call('ZCARD', KEYS[3])
else
  leases = redis.call('ZCOUNT', KEYS[3], '(' .. fmt(now), '+inf')
end

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

if refused == 0 then
  local at = fmt(now)
  local renew_key, renew_owner = due(kt[5], window), due(ot[3], window)
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
  -- x: the last renewal, t: the last trim (one not due keeps the time read, never nil then)
  redis.call('HSET', KEYS[4], 'd', day, 'dt', dtok, 'm', month, 'mt', mtok,
    'x', renew_key and at or kt[5], 't', trim_key and at or kt[6])
  -- the TTL (longer than a month) is set when the period changes, not on every request
  if tonumber(kt[1]) ~= day then redis.call('EXPIRE', KEYS[4], ttl) end
  redis.call('HSET', KEYS[5], 'm', month, 'mt', otok, 'x', renew_owner and at or ot[3],
    't', trim_owner and at or ot[4])
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
  if count > 0 then oldest = in_window_at(shown, 0) end
end
return {refused == 0 and 1 or 0, refused, fmt(retry), count, oldest, dtok, mtok, otok, day, month,
  fmt(now), fmt(to_midnight), fmt(to_month)}
