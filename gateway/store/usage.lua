-- Write usage rows in one usage stripe (a Cluster's second step of settlement; settle.lua took
-- the leases, in the owners' slots, said which settlements counted and keeps their rows there
-- until written). Every key carries the stripe's hash tag. Exactly once: a row is named by the
-- gateway process that counted it and its number there (1, 2, 3, ... in that process), and may
-- come more than once and in any order (a call whose reply was lost, sent again; a row settle.lua
-- returned again; one adopted from a dead process, sent by another under its first name). The
-- stripe keeps per process a floor (every row of it numbered under the floor is written, or will
-- never come) and the numbers it wrote at or above the floor: a row under the floor or among
-- them is skipped. The process that named the rows raises its floor as it learns their fate
-- (the others leave it): its numbers above the floor are few, rows in flight, so both stay small.
-- KEYS: per process whose rows the call holds: 1 its floor (a string: the floor, and '+' when
--       numbers are listed above it), 2 its numbers written above the floor (HASH number -> 1),
--       then 2 per row: the key's usage key prefix (the UTC day is appended), the key's usage
--       days (ZSET of day ids); both of its keys expire ARGV 1 seconds after their last write
-- ARGV: 1 the TTL (seconds), then per process: 1 its rows in the call, 2 its floor after the call
--       (0: leave it), then 9 per row: number, model (and API), prompt tokens, completion
--       tokens, error (0/1), latency ms, latency bucket, finished at, days kept
-- Returns how many rows were written (those written before are skipped).

local ttl = ARGV[1]

-- The process's floor and whether numbers are listed above it.
local function floor_of(key)
  local state = redis.call('GET', key)
  if not state then return 0, false end
  if string.sub(state, -1) == '+' then return tonumber(string.sub(state, 1, -2)), true end
  return tonumber(state), false
end

-- Which of the numbers ARGV[a], ARGV[a + 9], ... (``count`` of them) are listed in ``above``.
local function listed_of(above, a, count)
  local numbers = {}
  for i = 0, count - 1 do table.insert(numbers, ARGV[a + 9 * i]) end
  local found = redis.call('HMGET', above, unpack(numbers))
  local listed = {}
  for i, n in ipairs(numbers) do
    if found[i] then listed[n] = true end
  end
  return listed
end

-- The numbers listed under ``floor`` dropped (1,000 an HDEL: unpack's bound); whether any stay
-- listed.
local function trim(above, floor)
  local all = redis.call('HKEYS', above)
  local gone, left = {}, 0
  for _, n in ipairs(all) do
    if tonumber(n) < floor then
      table.insert(gone, n)
      if #gone == 1000 then
        redis.call('HDEL', above, unpack(gone))
        gone = {}
      end
    else
      left = left + 1
    end
  end
  if #gone > 0 then redis.call('HDEL', above, unpack(gone)) end
  return left > 0
end

local written = 0
local k, a = 1, 2
while k <= #KEYS do
  local mark, above = KEYS[k], KEYS[k + 1]
  local count, after = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  k, a = k + 2, a + 2
  local floor, any = floor_of(mark)
  local seen = any and listed_of(above, a, count) or {}
  local new_floor = math.max(floor, after)
  local keep = {}
  for i = 0, count - 1 do
    local kk, aa = k + 2 * i, a + 9 * i
    local n = ARGV[aa]
    if tonumber(n) >= floor and not seen[n] then
      seen[n] = true
      record_usage(KEYS[kk], KEYS[kk + 1], tonumber(ARGV[aa + 8]), ARGV[aa + 1], ARGV[aa + 2],
        ARGV[aa + 3], ARGV[aa + 4], ARGV[aa + 5], ARGV[aa + 6], tonumber(ARGV[aa + 7]))
      written = written + 1
      if tonumber(n) >= new_floor then
        table.insert(keep, n)
        table.insert(keep, '1')
      end
    end
  end
  if #keep > 0 then
    redis.call('HSET', above, unpack(keep))
    any = true
  end
  if any and new_floor > floor then any = trim(above, new_floor) end
  if any then redis.call('EXPIRE', above, ttl) end
  redis.call('SET', mark, new_floor .. (any and '+' or ''), 'EX', ttl)
  k, a = k + 2 * count, a + 9 * count
end
write_usage()
return written
