-- Renew leases by another ARGV[1] ms. KEYS: a lease set per lease; ARGV[i + 1]: the lease id in
-- KEYS[i]. Expired leases are dropped first, so a renewal (XX: only members still there) never
-- revives a lease whose slot another process may already hold.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl * 4)
end
return #KEYS
