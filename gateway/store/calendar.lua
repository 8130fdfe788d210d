-- Shared by the store scripts (prepended to each when it is loaded): time and UTC calendar
-- arithmetic giving the same numbers as gateway/limits/windows.py. Days count from 1970-01-01
-- (H. Hinnant's days_from_civil / civil_from_days); Lua numbers are doubles, exact here.

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- The UTC day number of an epoch; like Python's datetime, the epoch is first rounded to the
-- microsecond (so 86399.9999996 is already the next day).
local function epoch_days(t)
  local s = math.floor(t)
  if (t - s) * 1000000 >= 999999.5 then s = s + 1 end
  return math.floor(s / 86400)
end

local function day_id(days)
  local y, m, d = civil_from_days(days)
  return y * 10000 + m * 100 + d
end

-- day id (YYYYMMDD), month id (YYYYMM), seconds to UTC midnight, seconds to the next month.
local function periods(t)
  local days = epoch_days(t)
  local y, m, d = civil_from_days(days)
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return y * 10000 + m * 100 + d, y * 100 + m, (days + 1) * 86400 - t,
    days_from_civil(ny, nm, 1) * 86400 - t
end

-- The store's clock: Redis TIME, unless a test passes its fake clock's time (override ~= '').
local function clock(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- tonumber of an argument, each distinct text parsed once per call: Lua's tonumber reads a
-- text with strtod twice (is it a number, then its value), thousands of instructions, and the
-- admissions or settlements of one call repeat the same limits, days and months.
local parsed = {}
local function num(text)
  local v = parsed[text]
  if v == nil then
    v = tonumber(text) or false
    parsed[text] = v
  end
  return v or nil
end

-- A double as text that reads back to the same double.
local function fmt(x)
  return string.format('%.17g', x)
end

-- A whole number as a command's argument: Redis writes a number a script passes with '%.17g'
-- (the floating-point engine, thousands of instructions); '%d' here takes the integer path.
local function whole(x)
  return string.format('%d', x)
end

-- A key's leases (gw:{owner}:held:<keyId>, ZSET request id -> score) are scored so that a new
-- lease sorts FIRST: a small sorted set is a listpack, and a ZADD there walks from its head to
-- the first entry that sorts after the new one, reading every score it passes (by expiry, a new
-- lease went last: a walk of the whole set per admission). The score is minus (the lease's end,
-- the whole second at or before now + lease: store/base.py lease_end) x 10^6 less the
-- microsecond it was taken in (newer first within a second too: ties would be ordered by
-- request id, a counter, and walked). A whole number, as Redis keeps it cheaply; exact while
-- now < 2^53 us (the year 2255).
local LEASE_US = 1000000
local function lease_score(now, lease)
  return -(math.floor(now + lease) * LEASE_US + math.floor(now * LEASE_US + 0.5) % LEASE_US)
end

-- The end (epoch seconds) of the lease scored ``score``.
local function lease_end(score)
  local x = -score
  return (x - x % LEASE_US) / LEASE_US
end

-- The lowest score of an expired lease at ``now`` (its end <= now), to drop them by
-- ZREMRANGEBYSCORE key (that +inf: exclusive).
local function leases_expired_above(now)
  return -(math.floor(now) + 1) * LEASE_US
end
