-- The leases given back and the slots asked for in one turn of a process's loop, in one call:
-- first the leases given back (capacity_queue.lua's give_back: their slots go to the models
-- waiting for them first), then each request, in order, decided exactly as a call of its own
-- would be at this instant: it takes a slot of the first of its upstreams (in its order) that
-- has one free, as a lease.
-- ARGV[1]: lease ms; ARGV[2]: r, the leases given back, then their r lease ids; then per
-- request: its lease id, its flags (0 to 3: + 1, a queue key follows its upstreams'; + 2,
-- bounded), n (its upstreams), then the n upstreams' caps; bounded, then its load factor f
-- and the n upstreams' weights.
-- A bounded request (affinity's placement: consistent hashing with bounded loads) takes the
-- first of its upstreams in order with a free slot whose live leases are also under
-- ceil(f x (T + 1) x w / W), T and W the live leases and the weights of those of its
-- upstreams with a free slot: the bound counts every process's requests at this instant
-- (routing.ring's rule; store/capacity.py's under_bound is its twin for the memory store).
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

-- The live leases of lease set `key` (expired ones dropped once; this call's counted).
local function count(key)
  local held = live[key]
  if held == nil then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    held = redis.call('ZCARD', key)
    live[key] = held
  end
  return held
end

-- A bounded request's bound per upstream (KEYS[k..], caps ARGV[a + 3..], then f and the
-- weights): ceil(f x (T + 1) x w / W) over those with a free slot; 1e-9 absorbs the float
-- error of the scale (the bound is a whole number of requests), as in routing.ring.
local function bounds(k, a, n)
  local total, weight = 0, 0
  local f = tonumber(ARGV[a + 3 + n])
  for i = 1, n do
    local held = count(KEYS[k + i - 1])
    if held < tonumber(ARGV[a + 2 + i]) then
      total = total + held
      weight = weight + tonumber(ARGV[a + 3 + n + i])
    end
  end
  local out = {}
  for i = 1, n do
    out[i] = 0
    if weight > 0 then
      out[i] = math.ceil(f * (total + 1) / weight * tonumber(ARGV[a + 3 + n + i]) - 1e-9)
    end
  end
  return out
end

local out = {}
local k, a = 1 + r, 3 + r
while a <= #ARGV do
  local lease, flags, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local queued, bounded = flags % 2 == 1, flags >= 2
  local got = 0
  local blocked = false
  if queued then
    local q = KEYS[k + n]
    if waits[q] == nil then
      waits[q] = redis.call('ZCARD', q) > 0
    end
    blocked = waits[q]
  end
  local limits = nil
  if bounded and not blocked then
    limits = bounds(k, a, n)
  end
  if not blocked then
    for i = 1, n do
      local key = KEYS[k + i - 1]
      local held = count(key)
      local cap = tonumber(ARGV[a + 2 + i])
      local limit = cap
      if limits ~= nil and limits[i] < limit then
        limit = limits[i]
      end
      if held < limit then
        live[key] = held + 1
        if added[key] == nil then
          added[key] = {}
          touched[#touched + 1] = key
        end
        local members = added[key]
        members[#members + 1] = now + ttl
        members[#members + 1] = lease
        got = i
        if not bounded and roomy(key, held + 1, cap) then
          got = i + 1024
        end
        break
      end
    end
  end
  out[#out + 1] = got
  k = k + n + (queued and 1 or 0)
  a = a + 3 + n + (bounded and 1 + n or 0)
end
for _, key in ipairs(touched) do
  redis.call('ZADD', key, unpack(added[key]))
  redis.call('PEXPIRE', key, ttl * 4)
end
return out
