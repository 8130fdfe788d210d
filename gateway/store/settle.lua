-- Settle one admitted request, at most once per request id (store/memory.py is the reference):
-- release its lease, move the token counters of its (still current) periods by used - reserved,
-- record its usage and the key's last use. All keys carry the owner's hash tag.
-- KEYS: 1 the key's leases, 2 the key's token counters, 3 the owner's token counters,
--       4 the request's settled marker, 5 the owner's last-use hash (key id -> time),
--       6 the key's usage key prefix (the UTC day is appended: same tag, same slot),
--       7 the key's usage days (ZSET of day ids, for range reads)
-- ARGV: 1 request id, 2 day, 3 month (of the admission), 4 used - reserved, 5 model,
--       6 prompt tokens, 7 completion tokens, 8 error (0/1), 9 latency ms, 10 latency bucket,
--       11 finished at (0: now), 12 clock override (''), 13 key id, 14 settled marker ttl,
--       15 days usage is kept
-- Returns 1, or 0 when this request was already settled.

if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[14]) then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])

local day, month, delta = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local kt = redis.call('HMGET', KEYS[2], 'd', 'dt', 'm', 'mt')
local current_day, current_month = tonumber(kt[1]) == day, tonumber(kt[3]) == month
if current_day and current_month then
  redis.call('HSET', KEYS[2], 'dt', math.max(0, tonumber(kt[2]) + delta),
    'mt', math.max(0, tonumber(kt[4]) + delta))
elseif current_day then
  redis.call('HSET', KEYS[2], 'dt', math.max(0, tonumber(kt[2]) + delta))
elseif current_month then
  redis.call('HSET', KEYS[2], 'mt', math.max(0, tonumber(kt[4]) + delta))
end
local ot = redis.call('HMGET', KEYS[3], 'm', 'mt')
if tonumber(ot[1]) == month then
  redis.call('HSET', KEYS[3], 'mt', math.max(0, tonumber(ot[2]) + delta))
end

local finished = tonumber(ARGV[11])
if finished == 0 then finished = clock(ARGV[12]) end
local days = epoch_days(finished)
local used_day = day_id(days)
local keep = tonumber(ARGV[15])
local usage = KEYS[6] .. used_day
local model = ARGV[5]
-- TTLs are set when a day's hash gains a model and when the index gains a day, not every time
local new_model = redis.call('HINCRBY', usage, 'r:' .. model, 1) == 1
redis.call('HINCRBY', usage, 'p:' .. model, ARGV[6])
redis.call('HINCRBY', usage, 'c:' .. model, ARGV[7])
if ARGV[8] ~= '0' then redis.call('HINCRBY', usage, 'e:' .. model, ARGV[8]) end
local total = tonumber(redis.call('HGET', usage, 'l:' .. model) or '0')
redis.call('HSET', usage, 'l:' .. model, fmt(total + tonumber(ARGV[9])))
redis.call('HINCRBY', usage, 'b' .. ARGV[10] .. ':' .. model, 1)
-- The day joins the index of days when its hash gains a model, and the index's TTL is renewed
-- then too: the index outlives every day hash it names, and a day hash that already has this
-- model is already in it.
if new_model then
  redis.call('EXPIRE', usage, keep * 86400)
  if redis.call('ZADD', KEYS[7], used_day, used_day) == 1 then
    redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. day_id(days - keep))
  end
  redis.call('EXPIRE', KEYS[7], keep * 86400)
end
redis.call('HSET', KEYS[5], ARGV[13], fmt(finished))
return 1
