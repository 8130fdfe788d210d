-- A request joins the queue of model ARGV[1] as ticket ARGV[2] of owner ARGV[3], at cost
-- ARGV[4] (1 / share), priority ARGV[5]; ARGV[6]: lease ms; ARGV[7]: the owner's max_queued
-- for this model across processes (-1: none); then (upstream, cap) pairs of the model.
-- KEYS[1]: the model's queue (routes the call on a Cluster).
-- Returns {1, upstream} when a slot was free for it at once, {0, tickets ahead} when it waits,
-- {-1, the owner's tickets waiting} when the owner is at its max_queued; then the slots the
-- model's waiting requests got per second lately, in thousandths (for a Retry-After).
-- A ticket that waits for an upstream no model waited for before publishes its name (names
-- tab-separated) on 'gw:wanted': every process keeping idle leases of it gives them back.
local q = qkeys(ARGV[1])
local ticket, owner = ARGV[2], ARGV[3]
local prio, ttl, most = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
local mine = tonumber(redis.call('HGET', q.n, owner) or '0')
if most >= 0 and mine >= most then
  return {-1, mine, rate(q, now)}
end
redis.call('DEL', q.u)
local new = {}
for i = 8, #ARGV - 1, 2 do
  redis.call('HSET', q.u, ARGV[i], ARGV[i + 1])
  if redis.call('SADD', waiting_on(ARGV[i]), q.model) == 1 then
    new[#new + 1] = ARGV[i]
  end
end
local v = tonumber(redis.call('GET', q.v) or '0')
local last = tonumber(redis.call('HGET', q.l, owner) or '0')
local finish = math.max(v, last) + tonumber(ARGV[4])
local member = string.format('%04d', 1000 - prio) .. tag(finish)
  .. string.format('%012d', redis.call('INCR', q.s)) .. ticket
redis.call('ZADD', q.z, 0, member)
redis.call('HSET', q.t, ticket, member .. '\t' .. ARGV[4] .. '\t' .. owner)
redis.call('ZADD', q.e, now + ttl, ticket)
redis.call('HINCRBY', q.n, owner, 1)
redis.call('HSET', q.l, owner, tag(finish))
touch(q, ttl)
local got = settle(q, now, ttl, ticket)
if got then
  return {1, got, 0}
end
if #new > 0 then
  redis.call('PUBLISH', 'gw:wanted', table.concat(new, '\t'))
end
return {0, redis.call('ZRANK', q.z, member), rate(q, now)}
