-- Extend the leases of running requests of one owner (store/memory.py is the reference: only a
-- lease still present is renewed).
-- KEYS: the leases ZSET of each request's key (one per request, all with the owner's hash tag)
-- ARGV: 1 clock override (''), 2 lease seconds, 3.. the request ids, in KEYS order

local now = clock(ARGV[1])
local lease = tonumber(ARGV[2])
local expiry = fmt(now + lease)
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', expiry, ARGV[i + 2]) == 1 then
    redis.call('EXPIRE', key, lease + 60)
  end
end
return 1
