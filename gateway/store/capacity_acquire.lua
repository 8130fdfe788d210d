-- A slot of the first upstream (in the caller's order) that has one free, as a lease.
-- KEYS: the lease sets of the candidate upstreams (one {gw:cap} slot), then, if ARGV[3] is '1',
-- the queue of the model (capacity_queue.lua's 'z'): while anyone waits in it, no slot is taken
-- here (a newcomer joins the queue instead of passing the requests already waiting).
-- ARGV: lease id, lease ms, '1' or '0', then each upstream's cap, in KEYS order.
-- Returns the 1-based index of the upstream whose slot was taken, or 0 if all are full.
-- Time is Redis TIME, so processes with skewed clocks agree; expired leases (a process that
-- died) are dropped before counting.
local n = #KEYS
if ARGV[3] == '1' then
  n = n - 1
  if redis.call('ZCARD', KEYS[n + 1]) > 0 then
    return 0
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i = 1, n do
  local key = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) < tonumber(ARGV[i + 3]) then
    redis.call('ZADD', key, now + ttl, ARGV[1])
    redis.call('PEXPIRE', key, ttl * 4)
    return i
  end
end
return 0
