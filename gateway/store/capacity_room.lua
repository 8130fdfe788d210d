-- Which of the upstreams whose idle leases a process keeps still have room to spare
-- (capacity_queue.lua's roomy), asked with its renewals. KEYS: their lease sets; ARGV: their
-- caps. Returns 1 or 0 per upstream. Expired leases are not counted.
local now = now_ms()
local out = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('ZCOUNT', key, now + 1, '+inf')
  out[i] = roomy(key, held, tonumber(ARGV[i])) and 1 or 0
end
return out
