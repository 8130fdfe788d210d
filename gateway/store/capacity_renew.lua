-- Renew (ARGV[1] = lease ms) or release (ARGV[1] = '0') leases.
-- KEYS: a lease set per lease; ARGV[i + 1]: the lease id in KEYS[i].
-- A renewal only extends leases still held (XX): one that expired is not revived.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if ttl == 0 then
    redis.call('ZREM', key, ARGV[i + 1])
  elseif redis.call('ZADD', key, 'XX', 'CH', now + ttl, ARGV[i + 1]) >= 0 then
    redis.call('PEXPIRE', key, ttl * 4)
  end
end
return #KEYS
