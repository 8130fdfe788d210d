-- Extend the leases of running requests of one owner (store/memory.py is the reference: only a
-- lease still present and not yet expired is renewed; an expired one stays expired).
-- KEYS: the leases ZSET of each request's key (gw:{owner}:held:<keyId>, request id ->
--   lease_score, new leases first: calendar.lua; one per request, all with the owner's hash tag)
-- ARGV: 1 clock override (''), 2 lease seconds, 3.. the request ids, in KEYS order

local now = clock(ARGV[1])
local lease = tonumber(ARGV[2])
local score = whole(lease_score(now, lease))
for i, key in ipairs(KEYS) do
  local current = redis.call('ZSCORE', key, ARGV[i + 2])
  if current and lease_end(tonumber(current)) > now then
    redis.call('ZADD', key, 'XX', score, ARGV[i + 2])
    redis.call('EXPIRE', key, lease + 60)
  end
end
return 1
