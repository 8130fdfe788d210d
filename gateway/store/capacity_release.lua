-- Give leases back: KEYS[i] is a lease set, ARGV[i + 1] the lease id in it; ARGV[1]: lease ms.
-- The freed slots go to the models waiting for their upstreams first (capacity_queue.lua's
-- give_back).
give_back(1, 2, #KEYS, tonumber(ARGV[1]))
return #KEYS
