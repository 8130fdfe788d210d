-- Give leases back: KEYS[i] is a lease set, ARGV[i + 1] the lease id in it; ARGV[1]: lease ms.
-- Each upstream a lease was freed on hands its free slots to the models waiting for it.
local ttl = tonumber(ARGV[1])
local now = now_ms()
local freed = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREM', key, ARGV[i + 1])
  freed[string.sub(key, #LP + 1)] = true
end
for name in pairs(freed) do
  wake(name, now, ttl)
end
return #KEYS
