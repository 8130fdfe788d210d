-- Admit requests against every limit of their Admissions, each all-or-nothing, one after the
-- other in the order given (store/memory.py is the reference): one call takes the admissions a
-- gateway process gathered in one turn of its loop, and decides each exactly as a call of its
-- own at the same instant would. What the admissions share (logs, lease sets, counters) is read
-- once, kept here, and written once at the end, so a call of N admissions costs far less than N
-- calls. On a Cluster a call holds one owner's admissions (all its keys carry the hash tag).
-- ARGV: 1 clock override (''), 2 lease seconds, 3 rpm window seconds, 4 counter ttl seconds,
--   5 the call's sets of limits, 6 its admissions (both binary, below), then per admission its
--   request id
-- The sets of limits (each once, however many admissions share it): per set 11 pairs of a flag
--   (1 byte: 1 the limit applies, 0 not) and the limit, in the order rpm, concurrency, daily,
--   monthly, plan rpm, plan monthly, tpm, daily budget, monthly budget, plan tpm, plan budget.
--   The admissions: per admission its key set and its set of limits (2 bytes each, from 0),
--   reserve and reserve cost. Little-endian, limits and amounts doubles: the numbers a text's
--   tonumber gave, a whole number of any size included (redis_codec.LIMITS, ADMISSION).
--   struct.unpack reads them, where a text per field cost Redis a bulk string, a Lua string
--   and a tonumber each.
-- KEYS, 9 per key set (each key an admission of the call is for, once): 1 the key's rpm log
--   (gw:{owner}:rpmr:k:<keyId>), 2 the owner's (rpmr:o) (ZSETs request id -> minus the
--   admission time in whole microseconds: newest first), 3 the
--   key's leases (gw:{owner}:held:<keyId>, ZSET request id -> lease_score: minus the lease's
--   end x 10^6 less its microsecond, new leases first; calendar.lua), 4 the key's counters
--   (HASH d, dt, m, mt, x; dc, mc: money of the day and month), 5 the owner's (HASH m, mt, x;
--   mc), 6 the key's minute log, 7 its tokens (tpmr:k:<keyId>, ZSET request id -> minus the
--   admission time, newest first; tpmrv:k:<keyId>, HASH request id -> tokens, s = their sum),
--   8 and 9 the owner's (tpmr:o, tpmrv:o)
-- The logs' and the leases' TTLs are renewed at most once a window (the time of the last renewal
-- is field x of the key's and of the owner's counters), each renewal long enough that every
-- entry added before the next one outlives its window; a log or lease set that was empty gets its
-- TTL at once. That spares three EXPIREs per admission.
-- Returns, per admission, one string (struct.pack, little-endian; redis_codec.VERDICT): 12
--   whole numbers (8 bytes, signed: 'i8', not 'l', whose size is the platform's): refused
--   (0 none, 1..11 as REFUSALS in redis_codec.py),
--   requests in the headers' log, day, month, then what the counters hold in the order of
--   records.Spent: day tokens, month tokens, owner month tokens, minute tokens, owner minute
--   tokens, day cost, month cost, owner month cost; then 7 doubles:
--   retry_after, the headers' log's oldest time (0 when empty), now, to midnight, to month end,
--   to the minute's reset, to the owner minute's reset. The doubles as they are: a text of each
--   ('%.17g') cost thousands of instructions here and a slow parse in the gateway, and 20
--   replies an admission as many objects there.

local now = clock(ARGV[1])
local lease, window, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local day, month, to_midnight, to_month = periods(now)
local at = fmt(now)
-- Texts of this call's instants, formatted once: '%.17g' of a double costs thousands of
-- instructions, and every admission of the call shares them. A lease's score is a whole number
-- (calendar.lua lease_score): a small sorted set keeps integer scores as integers, others as
-- text that every ZADD parses again for each entry it passes.
local lease_at = whole(lease_score(now, lease))
local leases_expired = '(' .. whole(leases_expired_above(now))
-- The token minutes' scores are minus the admission time (exactly: negating a double is exact),
-- newest first, as the logs (below): the window start (text, negated) made when one is first
-- read.
local since, minus_at = nil, '-' .. at
-- The rpm logs' scores are minus the admission time in whole microseconds (Redis TIME's own
-- grain), for the same reasons: a log under 129 entries is a listpack, and a ZADD there reads
-- the score of every entry it passes (a log at an rpm limit of 60 cost a third more per
-- admission as text) up to the first that sorts after the new one: the head, newest first.
-- Entries at or before the window's start (scores from -since) are dropped.
local now_us, window_us = math.floor(now * 1000000 + 0.5), window * 1000000
local at_us, since_us = string.format('%d', -now_us), string.format('%d', window_us - now_us)
local function secs(x)  -- seconds, a zero always +0 (as the text '0' was read)
  if x == 0 then return 0 end
  return x
end

-- Sorted sets (rpm logs, lease sets): trimmed (what scores ``drop_from`` to ``drop_to``) and
-- counted once; additions kept in ``adds`` and written by ``zflush`` (before a read that needs
-- them, else at the end).
local zsets = {}
local function zset(key, drop_from, drop_to)
  local z = zsets[key]
  if z == nil then
    redis.call('ZREMRANGEBYSCORE', key, drop_from, drop_to)
    z = {n = redis.call('ZCARD', key), adds = {}}
    z.stored = z.n
    zsets[key] = z
  end
  return z
end

-- ``command`` on ``key`` with the arguments ``args`` (pairs), 1000 at a time: unpack takes a
-- bounded number of values
local function calls(command, key, args)
  for i = 1, #args, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- The additions last first: a call's leases (and log entries) share a score, so Redis orders
-- them by request id (a counter: the last the greatest), and each ZADD of a listpack stops at
-- the first entry that sorts after it, the head once the last is in.
local function zadd_back(key, adds)
  local back = {}
  for i = #adds - 1, 1, -2 do back[#back + 1], back[#back + 2] = adds[i], adds[i + 1] end
  calls('ZADD', key, back)
end

local function zflush(key, z)
  zadd_back(key, z.adds)
  z.adds = {}
end

local function zadd(z, score, member)
  local adds = z.adds
  adds[#adds + 1] = score
  adds[#adds + 1] = member
  z.n = z.n + 1
end

local function log_size(key)
  return zset(key, since_us, '+inf').n
end

-- The oldest entry's time of a log (its last), 0 when it is empty.
local function oldest(key)
  local z = zset(key, since_us, '+inf')
  if z.first == nil then
    local first = z.stored > 0 and redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
    z.first = first and -tonumber(first) / 1000000 or false
  end
  if z.first then return z.first end
  return z.n > 0 and now or 0
end

-- nil when there is room, else the seconds until the entry whose leaving makes room leaves (the
-- limit-th newest: the n - limit + 1 oldest must leave)
local function rpm_wait(key, limit)
  local z = zset(key, since_us, '+inf')
  local n = z.n
  if n < limit then return nil end
  zflush(key, z)
  local leaving = redis.call('ZRANGE', key, limit - 1, limit - 1, 'WITHSCORES')[2]
  if leaving == nil then return window end
  return (window_us - now_us - tonumber(leaving)) / 1000000
end

-- Counter hashes: read once (as numbers, but x: the text of the last renewal, false when
-- absent), written at the end when an admission moved them.
local hashes = {}
local function hash(key, ...)
  local h = hashes[key]
  if h == nil then
    local names = {...}
    local values = redis.call('HMGET', key, ...)
    h = {names = names, fields = {}}
    for i, name in ipairs(names) do
      local value = values[i]
      if name ~= 'x' then value = tonumber(value) or false end
      h.fields[name] = value
    end
    hashes[key] = h
  end
  return h
end

-- Rolling minutes of tokens (log ``z``, minus the admission times: newest first; tokens ``h``),
-- by ``h``: read once (what left the window dropped), then kept here: the sum, the log's oldest
-- time (false: empty) and what this call added, written by ``minute_flush`` (before a read that
-- needs them, else at the end).
local minutes = {}
local function minute_tokens(z, h)
  local m = minutes[h]
  if m ~= nil then return m.sum end
  local sum = tonumber(redis.call('HGET', h, 's') or '0')
  since = since or fmt(-(now - window))
  local old = redis.call('ZRANGEBYSCORE', z, since, '+inf')
  if #old > 0 then
    for i = 1, #old, 1000 do
      local part = {unpack(old, i, math.min(i + 999, #old))}
      for _, v in ipairs(redis.call('HMGET', h, unpack(part))) do sum = sum - (tonumber(v) or 0) end
      redis.call('HDEL', h, unpack(part))
    end
    redis.call('ZREMRANGEBYSCORE', z, since, '+inf')
    redis.call('HSET', h, 's', whole(sum))
  end
  local first = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2]
  minutes[h] = {z = z, sum = sum, first = first and -tonumber(first) or false, zadds = {}, hadds = {}}
  return sum
end

local function minute_flush(h, m)
  if #m.zadds == 0 then return end
  zadd_back(m.z, m.zadds)
  m.hadds[#m.hadds + 1], m.hadds[#m.hadds + 2] = 's', whole(m.sum)
  calls('HSET', h, m.hadds)
  m.zadds, m.hadds = {}, {}
end

-- nil when ``reserve`` more fit under ``limit``, else the seconds until enough has left
local function minute_wait(z, h, sum, limit, reserve)
  local excess = sum + reserve - limit
  if excess <= 0 then return nil end
  if reserve > limit then return window end
  minute_flush(h, minutes[h])
  local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
  for i = #entries - 1, 1, -2 do  -- the oldest first
    excess = excess - (tonumber(redis.call('HGET', h, entries[i])) or 0)
    if excess <= 0 then return -tonumber(entries[i + 1]) + window - now end
  end
  return window
end

local expiring = {}  -- key -> seconds: the EXPIREs to send at the end
local function minute_take(z, h, rid, reserve)
  local m = minutes[h]
  local zadds, hadds = m.zadds, m.hadds
  zadds[#zadds + 1], zadds[#zadds + 2] = minus_at, rid
  hadds[#hadds + 1], hadds[#hadds + 2] = rid, whole(reserve)
  m.sum = m.sum + reserve
  m.first = m.first and math.min(m.first, now) or now
  expiring[z], expiring[h] = 2 * window + 1, 2 * window + 1
  return m.sum
end

local function minute_reset(h)
  local first = minutes[h].first
  return first and (first + window - now) or 0
end

-- whether the TTLs renewed at ``last`` (nil: never) are due again
local dues = {}  -- renewal time (text) -> due: each one read once per call
local function due(last)
  if last == nil then return true end
  local d = dues[last]
  if d == nil then
    local t = tonumber(last)
    d = t == nil or now - t >= window or now < t
    dues[last] = d
  end
  return d
end

-- The admission being decided: its refusal (0: none yet; REFUSALS in redis_codec.py) and the
-- seconds until it would be admitted; the first limit over is the one told.
local refused, retry = 0, 0
local function check(code, wait)
  if refused == 0 and wait then refused, retry = code, wait end
end

-- ``wait`` when ``amount`` more than ``used`` is over ``limit`` (nil: none applies), else nil
local function over(limit, used, amount, wait)
  if limit and used + amount > limit then return wait end
  return nil
end

local function admit(rid, k, limits, reserve, cost)
  local rpm, conc, daily, monthly = limits[1], limits[2], limits[3], limits[4]
  local prpm, pmonthly, tpm, dbudget = limits[5], limits[6], limits[7], limits[8]
  local mbudget, ptpm, pbudget = limits[9], limits[10], limits[11]
  local klog, olog, kleases = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]

  local kh = hash(KEYS[k + 4], 'd', 'dt', 'm', 'mt', 'x', 'dc', 'mc').fields
  local oh = hash(KEYS[k + 5], 'm', 'mt', 'x', 'mc').fields
  local today, this_month = kh.d == day, kh.m == month
  local dtok = today and kh.dt or 0
  local mtok = this_month and kh.mt or 0
  local dcost = today and kh.dc or 0
  local mcost = this_month and kh.mc or 0
  local owner_month = oh.m == month
  local otok = owner_month and oh.mt or 0
  local ocost = owner_month and oh.mc or 0
  local leases = zset(kleases, leases_expired, '+inf')
  local ktpm = tpm and minute_tokens(KEYS[k + 6], KEYS[k + 7]) or 0
  local otpm = ptpm and minute_tokens(KEYS[k + 8], KEYS[k + 9]) or 0

  refused, retry = 0, 0
  local klog_was = rpm and log_size(klog)
  check(1, rpm and rpm_wait(klog, rpm))
  if refused == 0 and conc and leases.n >= conc then refused, retry = 2, 1 end
  check(3, over(daily, dtok, reserve, to_midnight))
  check(4, over(monthly, mtok, reserve, to_month))
  if refused == 0 and tpm then check(5, minute_wait(KEYS[k + 6], KEYS[k + 7], ktpm, tpm, reserve)) end
  check(6, over(dbudget, dcost, cost, to_midnight))
  check(7, over(mbudget, mcost, cost, to_month))
  local olog_was = nil
  if refused == 0 and prpm then
    olog_was = log_size(olog)
    check(8, rpm_wait(olog, prpm))
  end
  check(9, over(pmonthly, otok, reserve, to_month))
  if refused == 0 and ptpm then
    check(10, minute_wait(KEYS[k + 8], KEYS[k + 9], otpm, ptpm, reserve))
  end
  check(11, over(pbudget, ocost, cost, to_month))

  if refused == 0 then
    local renew_key, renew_owner = due(kh.x), due(oh.x)
    if rpm then
      zadd(zsets[klog], at_us, rid)
      if renew_key or klog_was == 0 then expiring[klog] = 2 * window + 1 end
    end
    if prpm then
      zadd(zsets[olog], at_us, rid)
      if renew_owner or olog_was == 0 then expiring[olog] = 2 * window + 1 end
    end
    if tpm then ktpm = minute_take(KEYS[k + 6], KEYS[k + 7], rid, reserve) end
    if ptpm then otpm = minute_take(KEYS[k + 8], KEYS[k + 9], rid, reserve) end
    if renew_key or leases.n == 0 then expiring[kleases] = lease + 60 + window end
    zadd(leases, lease_at, rid)
    dtok, mtok, otok = dtok + reserve, mtok + reserve, otok + reserve
    dcost, mcost, ocost = dcost + cost, mcost + cost, ocost + cost
    -- x: the last renewal (a renewal not due keeps the one read, never nil then)
    kh.d, kh.dt, kh.m, kh.mt, kh.dc, kh.mc = day, dtok, month, mtok, dcost, mcost
    if renew_key then kh.x = at end
    -- the TTL (longer than a month) is set when the period changes, not on every request
    if not today then expiring[KEYS[k + 4]] = ttl end
    oh.m, oh.mt, oh.mc = month, otok, ocost
    if renew_owner then oh.x = at end
    if not owner_month then expiring[KEYS[k + 5]] = ttl end
    hashes[KEYS[k + 4]].dirty, hashes[KEYS[k + 5]].dirty = true, true
  end

  -- the request-limit headers follow the key's rpm when it has one, else the owner's plan rpm
  local count, first = 0, 0
  local shown = (rpm and rpm ~= 0) and klog or (prpm and olog)
  if shown then
    count = log_size(shown)
    if count > 0 then first = oldest(shown) end
  end
  local kreset = tpm and minute_reset(KEYS[k + 7]) or 0
  local oreset = ptpm and minute_reset(KEYS[k + 9]) or 0
  return struct.pack('<i8i8i8i8i8i8i8i8i8i8i8i8ddddddd', refused, count, day, month, dtok,
    mtok, otok, ktpm, otpm, dcost, mcost, ocost, secs(retry), first, now, to_midnight, to_month,
    secs(kreset), secs(oreset))
end

-- The sets of limits, each a table of the limits that apply (nil: does not).
local limit_sets, blob, at_byte = {}, ARGV[5], 1
local LIMITS = '<' .. string.rep('Bd', 11)
while at_byte <= #blob do
  local v, set = {struct.unpack(LIMITS, blob, at_byte)}, {}
  for i = 1, 11 do
    if v[2 * i - 1] == 1 then set[i] = v[2 * i] end
  end
  limit_sets[#limit_sets + 1], at_byte = set, v[23]
end

local verdicts, items = {}, ARGV[6]
at_byte = 1
for i = 1, #ARGV - 6 do
  local k, l, reserve, cost
  k, l, reserve, cost, at_byte = struct.unpack('<HHdd', items, at_byte)
  verdicts[i] = admit(ARGV[6 + i], 9 * k, limit_sets[l + 1], reserve, cost)
end

for key, z in pairs(zsets) do
  if #z.adds > 0 then zflush(key, z) end
end
for key, h in pairs(hashes) do
  if h.dirty then
    local pairs_ = {}
    for _, name in ipairs(h.names) do
      local value = h.fields[name]
      if value ~= nil and value ~= false then
        pairs_[#pairs_ + 1] = name
        pairs_[#pairs_ + 1] = type(value) == 'number' and whole(value) or value
      end
    end
    redis.call('HSET', key, unpack(pairs_))
  end
end
for h, m in pairs(minutes) do minute_flush(h, m) end
for key, seconds in pairs(expiring) do
  redis.call('EXPIRE', key, whole(seconds))
end
return verdicts
