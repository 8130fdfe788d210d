-- Ticket ARGV[2] of model ARGV[1] leaves (its client went, or it waited too long); ARGV[3]:
-- lease ms. KEYS[1]: the model's queue. Returns 0 if it was still waiting (taken out), 1 if it
-- had been granted a slot (the slot is given back, to the next in line), -1 if neither.
local q = qkeys(ARGV[1])
local ticket, ttl = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
if leave(q, ticket, false) then
  settle(q, now, ttl, nil)
  return 0
end
for _, name in ipairs(redis.call('HKEYS', q.u)) do
  if redis.call('ZREM', LP .. name, ticket) == 1 then
    wake(name, now, ttl)
    return 1
  end
end
return -1
