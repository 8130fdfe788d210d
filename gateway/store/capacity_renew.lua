-- Renew leases by another ARGV[1] ms, and tell which upstreams have room to spare. ARGV[2]: n,
-- the leases; KEYS[i] (i <= n) is a lease set, ARGV[i + 2] the lease id in it; then each
-- further KEYS[i] is the lease set of an upstream whose idle leases the process keeps, of cap
-- ARGV[i + 2]. Expired leases are dropped first, so a renewal (XX: only members still there)
-- never revives a lease whose slot another process may already hold. Returns per upstream
-- asked about 1 if it has room to spare (capacity_queue.lua's roomy), else 0; then the index
-- (1-based) of each lease that was no longer there (expired, or lost by Redis).
local now = now_ms()
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local gone = {}
for i = 1, n do
  local key = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, ARGV[i + 2]) then
    redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 2])
  else
    gone[#gone + 1] = i
  end
  redis.call('PEXPIRE', key, ttl * 4)
end
local out = {}
for i = n + 1, #KEYS do
  local held = redis.call('ZCOUNT', KEYS[i], now + 1, '+inf')
  out[#out + 1] = roomy(KEYS[i], held, tonumber(ARGV[i + 2])) and 1 or 0
end
for _, i in ipairs(gone) do
  out[#out + 1] = i
end
return out
