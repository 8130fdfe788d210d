-- The leases given back and the slots asked for in one turn of a process's loop, in one call:
-- first the leases given back (capacity_queue.lua's give_back: their slots go to the models
-- waiting for them first), then each request, in order, decided exactly as a call of its own
-- would be at this instant: it takes a slot of the first of its upstreams (in its order) that
-- has one free, as a lease.
-- ARGV[1]: lease ms; ARGV[2]: r, the leases given back, then their r lease ids; then per
-- request: its lease id, '1' or '0' (a queue key follows its upstreams'), n (its upstreams),
-- then the n upstreams' caps.
-- KEYS: the r lease sets of the leases given back; then per request, the lease sets of its n
-- upstreams (one {gw:cap} slot), then, if its flag is '1', the queue of its model ('z'): while
-- anyone waits in it, no slot is taken for the request (a newcomer joins the queue instead of
-- passing the requests waiting).
-- Returns per request the 1-based index of the upstream whose slot it took, or 0; plus ROOMY
-- (1024) when that upstream has room to spare after it (capacity_queue.lua's roomy).
-- Time is Redis TIME, so processes with skewed clocks agree; expired leases (a process that
-- died) are dropped before counting. Each lease set is read once and written once.
local ttl = tonumber(ARGV[1])
local r = tonumber(ARGV[2])
if r > 0 then
  give_back(1, 3, r, ttl)
end
if #ARGV == 2 + r then
  return {}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live, added, touched, waits = {}, {}, {}, {}
local out = {}
local k, a = 1 + r, 3 + r
while a <= #ARGV do
  local lease, queued, n = ARGV[a], ARGV[a + 1] == '1', tonumber(ARGV[a + 2])
  local got = 0
  local blocked = false
  if queued then
    local q = KEYS[k + n]
    if waits[q] == nil then
      waits[q] = redis.call('ZCARD', q) > 0
    end
    blocked = waits[q]
  end
  if not blocked then
    for i = 1, n do
      local key = KEYS[k + i - 1]
      local held = live[key]
      if held == nil then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        held = redis.call('ZCARD', key)
      end
      live[key] = held
      local cap = tonumber(ARGV[a + 2 + i])
      if held < cap then
        live[key] = held + 1
        if added[key] == nil then
          added[key] = {}
          touched[#touched + 1] = key
        end
        local members = added[key]
        members[#members + 1] = now + ttl
        members[#members + 1] = lease
        got = i
        if roomy(key, held + 1, cap) then
          got = i + 1024
        end
        break
      end
    end
  end
  out[#out + 1] = got
  k = k + n + (queued and 1 or 0)
  a = a + 3 + n
end
for _, key in ipairs(touched) do
  redis.call('ZADD', key, unpack(added[key]))
  redis.call('PEXPIRE', key, ttl * 4)
end
return out
