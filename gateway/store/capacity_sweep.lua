-- A process vouches for its tickets ARGV[3..] waiting for model ARGV[1] (ARGV[2]: lease ms),
-- then the queue is settled (slots freed by expiry go to the head), and each ticket's fate is
-- returned in order: '' still waiting, an upstream's name if granted, '-' gone (expired).
-- KEYS[1]: the model's queue.
local q = qkeys(ARGV[1])
local ttl = tonumber(ARGV[2])
local now = now_ms()
for i = 3, #ARGV do
  redis.call('ZADD', q.e, 'XX', now + ttl, ARGV[i])
end
if #ARGV > 2 then
  touch(q, ttl)
end
local ups = redis.call('HKEYS', q.u)
settle(q, now, ttl, nil)
local out = {}
for i = 3, #ARGV do
  local fate = '-'
  if redis.call('HEXISTS', q.t, ARGV[i]) == 1 then
    fate = ''
  else
    for _, name in ipairs(ups) do
      if redis.call('ZSCORE', LP .. name, ARGV[i]) then
        fate = name
        break
      end
    end
  end
  out[#out + 1] = fate
end
return out
