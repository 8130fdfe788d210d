-- Count one event on a counter in its fixed one-minute window (store/memory.py is the reference:
-- the window starts at the first event and restarts once it has ended). Failed authentications
-- are the counter "authfail:<client>".
-- KEYS: 1 the counter's window (HASH s = start, c = count)
-- ARGV: 1 clock override (''), 2 window seconds
-- Returns {events in the window, seconds until the window ends (text)}

local now = clock(ARGV[1])
local window = tonumber(ARGV[2])
local w = redis.call('HMGET', KEYS[1], 's', 'c')
local start, count = tonumber(w[1]), tonumber(w[2])
if start == nil or now - start >= window then start, count = now, 0 end
count = count + 1
redis.call('HSET', KEYS[1], 's', fmt(start), 'c', count)
redis.call('PEXPIRE', KEYS[1], math.ceil((start + window - now) * 1000) + 1000)
return {count, fmt(start + window - now)}
