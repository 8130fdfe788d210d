-- Settle admitted requests, each at most once (store/memory.py is the reference): release its
-- lease, move the token counters of its (still current) periods by used - reserved, record its
-- usage and the key's last use. Every key but the usage rows (6, 7 on one Redis) carries the
-- owner's hash tag.
-- Once: a request admitted by the store is settled only while its lease is held, and the lease
-- goes with the settlement (the lease is the marker: nothing of a request outlives it). One
-- admitted while the store was down (day 0) has no lease: its marker (KEYS 4) keeps it once for
-- ARGV 2 seconds, and its tokens are charged to the periods current now.
-- KEYS, 9 per key set (each key a settlement of the call is for, once; a settlement of day 0 a
--       set of its own, for its marker): 1 the key's leases (gw:{owner}:held:<keyId>, ZSET
--       request id -> lease_score, new leases first: calendar.lua), 2 the key's counters, 3 the
--       owner's counters, 4 the request's settled marker (day 0 only), 5 the owner's last-use
--       hash (key id -> time), 6, 7 on one Redis: the key's usage key prefix (the UTC day is
--       appended) and usage days (ZSET of day ids, for range reads), both in the key's usage
--       stripe (redis_codec.py); on a Cluster (mode 2, below): the owner's rows not yet written
--       (HASH request id -> row) and their times (ZSET request id -> when counted or last
--       adopted), 8 the key's minute tokens, 9 the owner's (tpmrv:k:<keyId>, tpmrv:o: HASH
--       request id -> tokens, s = their sum)
-- ARGV: 1 clock override (''), 2 settled marker ttl, 3 days usage is kept, 4 the settlements
--       (binary, below), then the call's texts, each once: request ids, key ids, model lines,
--       rows' names
-- The settlements, one after the other, each (little-endian; redis_codec.SETTLEMENT): its key
--       set (from 0), then the places among the texts (from 0) of its request id, key id and
--       model (and API) (2 bytes each), mode (1 byte: 0 release only; 1 record usage here;
--       2 a Cluster's: usage.lua writes the row, whose name in the stripes, "<process>:<number>",
--       is the text at the next 2 bytes' place; otherwise they are 0), day, month (of the
--       admission; 0 0: admitted without the store; -1 and the lease's seconds: an admission
--       whose reply was lost, dated by its lease; 8 bytes signed each), used - reserved, prompt
--       tokens, completion tokens (doubles: the numbers a text's tonumber gave, a count of any
--       size an upstream reports included), error (1 byte), latency ms (a double), latency
--       bucket (1 byte), finished at (a double; 0: now), cost - reserved cost, cost
--       (micro-dollars; doubles), whether the key's minute counted it and the owner's (1 byte
--       each)
-- On one Redis a call holds settlements of any owners; on a Cluster, one owner's (one slot).
-- Returns how many were settled (those settled before are skipped). A Cluster's call returns
-- instead the rows its usage.lua calls are to write (JSON: request id, process, number, key id,
-- model line, prompt, completion, error, latency, bucket, end time): each counted now is kept
-- in the owner's slot (KEYS 6, 7) until its writer has it written and forgets it, so that
-- - a settlement sent again (its reply lost, or a duplicate) finds its row there and returns it
--   again (the stripe writes a row once by its process and number);
-- - rows left there ADOPT_AFTER seconds (their process died, or could not reach the stripe) are
--   returned by the next call for the owner, ADOPT_MAX at a time, under their first name.
--
-- Only the lease (or marker) is written per settlement. Everything else is gathered in Lua
-- tables as the settlements are taken in order and written once per key (and per field) at the
-- end: each counter hash read once and written once, each day's usage by model summed into one
-- HINCRBY per field, the last use once per key. The script is atomic, so the end state is the
-- one settling them one by one gives; a batch of one settlement costs what it did.

local ADOPT_AFTER = 60  -- seconds a row may wait in the owner's slot before another writes it
local ADOPT_MAX = 16  -- rows adopted per call
local ROWS_TTL = 43200  -- the rows kept in an idle owner's slot expire (redis_codec.ROWS_TTL)

-- HSET of every field of an ordered table (each value through ``text``, else a whole number), if
-- it has any
local function hset_all(key, t, text)
  if #t.keys == 0 then return end
  local args = {}
  for _, field in ipairs(t.keys) do
    table.insert(args, field)
    local value = t.values[field]
    table.insert(args, (text or whole)(value))
  end
  redis.call('HSET', key, unpack(args))
end

local keep = tonumber(ARGV[3])  -- days usage is kept
local counters = ordered()   -- token counter hash -> {fields read, fields to write}
local last = ordered()       -- last-use hash -> ordered key id -> time

-- A counter hash (a key's: d, dt, dc, m, mt, mc; an owner's: m, mt, mc), read once per batch.
local function read_counter(key)
  local r = redis.call('HMGET', key, 'd', 'dt', 'dc', 'm', 'mt', 'mc')
  for i = 1, 6 do r[i] = tonumber(r[i]) or false end  -- read as numbers once, not per item
  return {d = r[1], dt = r[2], dc = r[3], m = r[4], mt = r[5], mc = r[6], moved = ordered()}
end

local function counter(key)
  return slot(counters, key, read_counter, key)
end

-- Whether counter ``c``'s period ``pf`` is ``period``; with ``reset``, one that held another is
-- made current, its ``fields`` restarting at zero.
local function current(c, pf, period, fields, reset)
  if c[pf] == period then return true end
  if not reset then return false end
  c[pf] = period
  put(c.moved, pf, period)
  for _, f in ipairs(fields) do
    c[f] = 0
    put(c.moved, f, 0)
  end
  return true
end

-- Counter field moved by ``delta``, never below zero.
local function add_to(c, field, delta)
  local value = (c[field] or 0) + delta
  if value < 0 then value = 0 end
  c[field] = value
  put(c.moved, field, value)
end

-- The counters of the periods ``day`` and ``month`` (if current, or made so with ``reset``)
-- moved by ``tokens`` and ``cost``.
local DAY_FIELDS, MONTH_FIELDS = {'dt', 'dc'}, {'mt', 'mc'}
local function move_month(c, month, tokens, cost, reset)
  if current(c, 'm', month, MONTH_FIELDS, reset) then
    add_to(c, 'mt', tokens)
    add_to(c, 'mc', cost)
  end
end

local function move(kc, oc, day, month, tokens, cost, reset)
  if current(kc, 'd', day, DAY_FIELDS, reset) then
    add_to(kc, 'dt', tokens)
    add_to(kc, 'dc', cost)
  end
  move_month(kc, month, tokens, cost, reset)
  move_month(oc, month, tokens, cost, reset)
end

-- A request's tokens in a rolling minute (hash ``h``) become what it used, if it is still there:
-- gathered per hash (a request settles once) and written by ``minute_write`` at the end.
local minutes = ordered()
local function minute_settle(h, rid, used)
  put(slot(minutes, h, ordered), rid, used)
end

local function minute_write()
  for _, h in ipairs(minutes.keys) do
    local used = minutes.values[h]
    local held = redis.call('HMGET', h, unpack(used.keys))
    local args, delta = {}, 0
    for i, rid in ipairs(used.keys) do
      if held[i] then
        args[#args + 1], args[#args + 2] = rid, whole(used.values[rid])
        delta = delta + used.values[rid] - tonumber(held[i])
      end
    end
    if #args > 0 then
      redis.call('HSET', h, unpack(args))
      redis.call('HINCRBY', h, 's', whole(delta))
    end
  end
end

-- Whether settlement ``s`` (KEYS from ``k``) is its request's first.
local function first_time(k, s)
  if s.day ~= 0 then return redis.call('ZREM', KEYS[k + 1], s.rid) == 1 end
  return redis.call('SET', KEYS[k + 4], '1', 'NX', 'EX', ARGV[2]) ~= false
end

local buckets = {}  -- latency bucket -> its text, made once per call
local function record(k, s, finished)
  local bucket = buckets[s.bucket] or whole(s.bucket)
  buckets[s.bucket] = bucket
  record_usage(KEYS[k + 6], KEYS[k + 7], keep, s.line, s.p, s.c, s.e, s.l, bucket, finished)
  put(slot(last, KEYS[k + 5], ordered), s.key_id, finished)  -- the last settled wins
end

-- A presumed admission (its reply lost, never renewed): its first settlement if it holds a lease,
-- with the periods of its admission (the lease's end, read from its score, less its seconds).
local function presumed(k, s, lease_seconds)
  local score = redis.call('ZSCORE', KEYS[k + 1], s.rid)
  if not score then return false, 0, 0 end
  redis.call('ZREM', KEYS[k + 1], s.rid)
  local day, month = periods(lease_end(tonumber(score)) - lease_seconds)
  return true, day, month
end

-- A Cluster's call: the rows to write (JSON), and those to keep in the owner's slot.
local rows, pending, now = nil, nil, nil

local function row_of(s, finished)
  return cjson.encode({s.rid, s.row, s.key_id, s.line, whole(s.p), whole(s.c), whole(s.e),
    fmt(s.l), whole(s.bucket), fmt(finished)})
end

-- The rows left in the owner's slot ADOPT_AFTER seconds, dated now (adopted: another call
-- adopts them only ADOPT_AFTER seconds later); those whose row is gone are forgotten.
local function adopt()
  local stale = redis.call('ZRANGEBYSCORE', pending.times, '-inf', fmt(now - ADOPT_AFTER),
    'LIMIT', 0, ADOPT_MAX)
  if #stale == 0 then return end
  local found = redis.call('HMGET', pending.hash, unpack(stale))
  for i, rid in ipairs(stale) do
    if found[i] then
      table.insert(rows, found[i])
      table.insert(pending.times_args, fmt(now))
      table.insert(pending.times_args, rid)
    else
      redis.call('ZREM', pending.times, rid)
    end
  end
end

-- The settlement being settled: ``settlement`` fills it with the fields of the one at byte
-- ``at`` of ARGV 4 (its texts looked up) and returns where the next one starts. One table,
-- refilled: a table made per settlement cost Redis more than reading its fields.
local FIELDS = '<HHHHBHi8i8dddBdBdddBB'
local s = {}
local function settlement(at)
  local k, rid, key_id, line, mode, row, day, month, delta, p, c, e, l, bucket, finished, dcost,
    cost, kminute, ominute, next_at = struct.unpack(FIELDS, ARGV[4], at)
  s.k, s.rid, s.key_id, s.line = 9 * k, ARGV[5 + rid], ARGV[5 + key_id], ARGV[5 + line]
  s.mode, s.row, s.day, s.month, s.delta = mode, mode == 2 and ARGV[5 + row], day, month, delta
  s.p, s.c, s.e, s.l, s.bucket, s.finished = p, c, e, l, bucket, finished
  s.dcost, s.cost, s.kminute, s.ominute = dcost, cost, kminute == 1, ominute == 1
  return next_at
end

local settled, at = 0, 1
while at <= #ARGV[4] do
  at = settlement(at)
  local k, day, month = s.k, s.day, s.month
  local striped = s.mode == 2  -- a Cluster's: usage.lua writes the row
  if striped and not rows then
    rows, now = {}, clock(ARGV[1])
    pending = {hash = KEYS[k + 6], times = KEYS[k + 7], hash_args = {}, times_args = {}}
  end
  local first
  if day == -1 then
    first, day, month = presumed(k, s, month)
  else
    first = first_time(k, s)
  end
  if first then
    settled = settled + 1
    local kc, oc = counter(KEYS[k + 2]), counter(KEYS[k + 3])
    local used = s.p + s.c
    local finished = s.finished
    if finished == 0 or day == 0 then
      local t = now or clock(ARGV[1])
      if finished == 0 then finished = t end
      if day == 0 then  -- admitted without the store: charged to the periods current now
        local today, this_month = periods(t)
        move(kc, oc, today, this_month, used, s.cost, true)
      end
    end
    if day ~= 0 then
      move(kc, oc, day, month, s.delta, s.dcost, false)
      if s.kminute then minute_settle(KEYS[k + 8], s.rid, used) end
      if s.ominute then minute_settle(KEYS[k + 9], s.rid, used) end
    end
    if s.mode == 1 then
      record(k, s, finished)
    elseif striped then
      put(slot(last, KEYS[k + 5], ordered), s.key_id, finished)
      local row = row_of(s, finished)
      table.insert(rows, row)
      table.insert(pending.hash_args, s.rid)
      table.insert(pending.hash_args, row)
      table.insert(pending.times_args, fmt(now))
      table.insert(pending.times_args, s.rid)
    end
  elseif striped then  -- settled before: its row again, if not yet written and forgotten
    local row = redis.call('HGET', KEYS[k + 6], s.rid)
    if row then table.insert(rows, row) end
  end
end

for _, key in ipairs(counters.keys) do
  hset_all(key, counters.values[key].moved)
end

minute_write()
write_usage()

for _, key in ipairs(last.keys) do
  hset_all(key, last.values[key], fmt)
end

if not rows then return settled end
adopt()
if #pending.hash_args > 0 then
  redis.call('HSET', pending.hash, unpack(pending.hash_args))
  redis.call('EXPIRE', pending.hash, ROWS_TTL)
end
if #pending.times_args > 0 then
  redis.call('ZADD', pending.times, unpack(pending.times_args))
  redis.call('EXPIRE', pending.times, ROWS_TTL)
end
return rows
