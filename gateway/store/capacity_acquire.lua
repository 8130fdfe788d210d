-- A slot of the first upstream (in the caller's order) that has one free, as a lease.
-- KEYS: the lease sets of the candidate upstreams (one {gw:cap} slot).
-- ARGV: lease id, lease ms, then each upstream's cap, in KEYS order.
-- Returns the 1-based index of the upstream whose slot was taken, or 0 if all are full.
-- Time is Redis TIME, so processes with skewed clocks agree; expired leases (a process that
-- died) are dropped before counting.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) < tonumber(ARGV[i + 2]) then
    redis.call('ZADD', key, now + ttl, ARGV[1])
    redis.call('PEXPIRE', key, ttl * 4)
    return i
  end
end
return 0
