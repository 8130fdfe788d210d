-- Add a key id to its owner's set unless the owner already has max_keys keys (atomic per owner).
-- KEYS: 1 the owner's set of key ids
-- ARGV: 1 key id, 2 max keys ('' when unlimited)
-- Returns 1 added, 0 refused (full), -1 the id is already there.

if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return -1 end
local max = tonumber(ARGV[2])
if max and redis.call('SCARD', KEYS[1]) >= max then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
