-- Settle admitted requests, each at most once per request id (store/memory.py is the reference):
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
-- Several settlements in one call: KEYS and ARGV hold 7 and 15 per settlement, one after the
-- other (on one Redis, a batch of any owners; on a Cluster, one owner's: one slot).
-- Returns how many were settled (those settled before are skipped).

local function settle_one(k, a)
  if not redis.call('SET', KEYS[k + 4], '1', 'NX', 'EX', ARGV[a + 14]) then return 0 end
  redis.call('ZREM', KEYS[k + 1], ARGV[a + 1])

  local day, month, delta = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local kt = redis.call('HMGET', KEYS[k + 2], 'd', 'dt', 'm', 'mt')
  local moved = {}  -- the counters of periods still current, moved in one HSET
  if tonumber(kt[1]) == day then
    table.insert(moved, 'dt')
    table.insert(moved, math.max(0, tonumber(kt[2]) + delta))
  end
  if tonumber(kt[3]) == month then
    table.insert(moved, 'mt')
    table.insert(moved, math.max(0, tonumber(kt[4]) + delta))
  end
  if #moved > 0 then redis.call('HSET', KEYS[k + 2], unpack(moved)) end
  local ot = redis.call('HMGET', KEYS[k + 3], 'm', 'mt')
  if tonumber(ot[1]) == month then
    redis.call('HSET', KEYS[k + 3], 'mt', math.max(0, tonumber(ot[2]) + delta))
  end

  local finished = tonumber(ARGV[a + 11])
  if finished == 0 then finished = clock(ARGV[a + 12]) end
  local days = epoch_days(finished)
  local used_day = day_id(days)
  local keep = tonumber(ARGV[a + 15])
  local usage = KEYS[k + 6] .. used_day
  local model = ARGV[a + 5]
  -- the day hash's TTL is set when it gains a model, not every time
  local new_model = redis.call('HINCRBY', usage, 'r:' .. model, 1) == 1
  redis.call('HINCRBY', usage, 'p:' .. model, ARGV[a + 6])
  redis.call('HINCRBY', usage, 'c:' .. model, ARGV[a + 7])
  if ARGV[a + 8] ~= '0' then redis.call('HINCRBY', usage, 'e:' .. model, ARGV[a + 8]) end
  redis.call('HINCRBYFLOAT', usage, 'l:' .. model, ARGV[a + 9])
  redis.call('HINCRBY', usage, 'b' .. ARGV[a + 10] .. ':' .. model, 1)
  -- The day joins the index of days when its hash gains a model, and the index's TTL is renewed
  -- then too: the index outlives every day hash it names, and a day hash that already has this
  -- model is already in it.
  if new_model then
    redis.call('EXPIRE', usage, keep * 86400)
    if redis.call('ZADD', KEYS[k + 7], used_day, used_day) == 1 then
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 7], '-inf', '(' .. day_id(days - keep))
    end
    redis.call('EXPIRE', KEYS[k + 7], keep * 86400)
  end
  redis.call('HSET', KEYS[k + 5], ARGV[a + 13], fmt(finished))
  return 1
end

local settled = 0
for i = 0, #KEYS / 7 - 1 do
  settled = settled + settle_one(7 * i, 15 * i)
end
return settled
