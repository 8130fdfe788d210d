-- Give leases back: KEYS[i] is a lease set, ARGV[i + 1] the lease id in it; ARGV[1]: lease ms.
-- Each lease set is written once (one ZREM for all its leases); each upstream a lease was freed
-- on hands its free slots to the models waiting for it (if any: TIME only then).
local ttl = tonumber(ARGV[1])
local leases, order = {}, {}
for i, key in ipairs(KEYS) do
  if leases[key] == nil then
    leases[key] = {}
    order[#order + 1] = key
  end
  local ids = leases[key]
  ids[#ids + 1] = ARGV[i + 1]
end
local now = nil
for _, key in ipairs(order) do
  redis.call('ZREM', key, unpack(leases[key]))
  local name = string.sub(key, #LP + 1)
  local models = redis.call('SMEMBERS', waiting_on(name))
  if #models > 0 then
    now = now or now_ms()
    for _, model in ipairs(models) do
      settle(qkeys(model), now, ttl, nil)
    end
  end
end
return #KEYS
