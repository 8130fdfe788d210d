-- The waiting room of full models, shared by every gateway process of the store: the functions
-- each of the queue scripts starts with (capacity_redis.py puts them in front of each script).
--
-- A model M's queue lives under 'gw:{cap}|q|M|' (one Cluster slot with the lease sets, which are
-- 'gw:{cap}:<upstream>'; the '|' keeps a queue key from ever being an upstream's lease set):
--   z  sorted set, every score 0, ordered by its members' bytes:
--      4 digits (1000 - priority) .. 20 chars finish tag .. 12 digits arrival .. ticket
--   t  hash ticket -> member \t cost \t owner
--   e  sorted set ticket -> ms until which its process vouches for it (then it is dropped)
--   n  hash owner -> its tickets waiting;  l  hash owner -> finish tag of its latest ticket
--   v  the virtual time (the tag of the last ticket served);  s  the arrival counter
--   u  hash upstream -> its cap (the model's capped upstreams, as the last joiner saw them)
--   r  hash: t the ms of the first grant since the queue last emptied, n the grants since
-- 'gw:{cap}|w|<upstream>' is the set of models with tickets waiting for that upstream: a
-- released lease wakes exactly them. A grant is a lease whose id is the ticket, and a PUBLISH
-- of "ticket \t upstream" on 'gw:grant:<process>' (the ticket's prefix before ':').
local P = 'gw:{cap}|'
local LP = 'gw:{cap}:'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function qkeys(model)
  local b = P .. 'q|' .. model .. '|'
  return {model = model, z = b .. 'z', t = b .. 't', e = b .. 'e', n = b .. 'n', l = b .. 'l',
          v = b .. 'v', s = b .. 's', u = b .. 'u', r = b .. 'r'}
end

local function waiting_on(upstream)
  return P .. 'w|' .. upstream
end

-- Has lease set `key` (`held` leases live, idle ones of every process counted) room to spare
-- under `cap`: a quarter of it (and 2) still free, and no model waiting for the upstream? The
-- process that asks may then keep the leases its requests free (routing.capacity_pool).
local function roomy(key, held, cap)
  return cap - held >= math.max(2, cap / 4)
    and redis.call('EXISTS', waiting_on(string.sub(key, #LP + 1))) == 0
end

local function tag(x)
  return string.format('%020.6f', x)
end

-- Keys live on while some process vouches for a waiting ticket (a sweep every 250 ms), and go
-- a minute after the last one stopped.
local function touch(q, ttl)
  for _, key in ipairs({q.z, q.t, q.e, q.n, q.l, q.v, q.s, q.u, q.r}) do
    redis.call('PEXPIRE', key, ttl * 15)
  end
  for _, name in ipairs(redis.call('HKEYS', q.u)) do
    redis.call('PEXPIRE', waiting_on(name), ttl * 15)
  end
end

-- Takes a ticket out of the queue. Served: the virtual time moves to its tag. Not served (it
-- left, or expired): if it was its owner's latest, the owner's time is handed back.
local function leave(q, ticket, served)
  local info = redis.call('HGET', q.t, ticket)
  if not info then
    return false
  end
  local member, cost, owner = string.match(info, '^([^\t]*)\t([^\t]*)\t(.*)$')
  local finish = tonumber(string.sub(member, 5, 24))
  redis.call('ZREM', q.z, member)
  redis.call('HDEL', q.t, ticket)
  redis.call('ZREM', q.e, ticket)
  local left = redis.call('HINCRBY', q.n, owner, -1)
  if left <= 0 then
    redis.call('HDEL', q.n, owner)
  end
  local v = tonumber(redis.call('GET', q.v) or '0')
  local last = redis.call('HGET', q.l, owner)
  if served then
    if finish > v then
      v = finish
      redis.call('SET', q.v, tag(v))
    end
  elseif last == tag(finish) then
    last = tag(finish - tonumber(cost))
    redis.call('HSET', q.l, owner, last)
  end
  if left <= 0 and last and tonumber(last) <= v then
    redis.call('HDEL', q.l, owner)
  end
  return true
end

-- Nothing waits: no credit is left to remember, no upstream needs to wake the model.
local function emptied(q)
  for _, name in ipairs(redis.call('HKEYS', q.u)) do
    redis.call('SREM', waiting_on(name), q.model)
  end
  redis.call('DEL', q.z, q.t, q.e, q.n, q.l, q.v, q.s, q.u, q.r)
end

-- The model's upstreams with a free slot, and how many, expired leases dropped first.
local function slots(q, now)
  local spec = redis.call('HGETALL', q.u)
  local free = {}
  for i = 1, #spec, 2 do
    local key = LP .. spec[i]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local n = tonumber(spec[i + 1]) - redis.call('ZCARD', key)
    if n > 0 then
      free[#free + 1] = {spec[i], n}
    end
  end
  return free
end

-- Hands the model's free slots to the head of its queue, one by one, until either nobody waits
-- or every upstream is full. Tickets whose process stopped vouching for them are dropped on the
-- way; a granted lease expires when its ticket would have (its process renews it once told). Returns the upstream granted to ticket `mine` (it is told by the reply, not published).
local function settle(q, now, ttl, mine)
  local free, got = nil, nil
  for _ = 1, 256 do
    local head = redis.call('ZRANGE', q.z, 0, 0)
    if #head == 0 then
      emptied(q)
      break
    end
    local ticket = string.sub(head[1], 37)
    local vouched = tonumber(redis.call('ZSCORE', q.e, ticket) or '0')
    if vouched <= now then
      leave(q, ticket, false)
    else
      free = free or slots(q, now)
      local slot = free[#free]
      if not slot then
        break
      end
      slot[2] = slot[2] - 1
      if slot[2] == 0 then
        free[#free] = nil
      end
      -- The lease lasts as long as the ticket's process last vouched for: a dead process's
      -- waiting requests hold a slot no longer than its own leases would.
      redis.call('ZADD', LP .. slot[1], vouched, ticket)
      redis.call('PEXPIRE', LP .. slot[1], ttl * 4)
      leave(q, ticket, true)
      redis.call('HSETNX', q.r, 't', now)
      redis.call('HINCRBY', q.r, 'n', 1)
      if ticket == mine then
        got = slot[1]
      else
        local process = string.match(ticket, '^[^:]*')
        redis.call('PUBLISH', 'gw:grant:' .. process, ticket .. '\t' .. slot[1])
      end
    end
  end
  return got
end

-- Slots the model's waiting requests got per second since its queue last emptied, in
-- thousandths (0: too few to tell).
local function rate(q, now)
  local r = redis.call('HMGET', q.r, 't', 'n')
  if not r[1] or not r[2] or tonumber(r[2]) < 2 or now <= tonumber(r[1]) then
    return 0
  end
  return math.floor(tonumber(r[2]) * 1000000 / (now - tonumber(r[1])))
end

-- A slot of `upstream` freed: every model waiting for it gets the chance to take it.
local function wake(upstream, now, ttl)
  for _, model in ipairs(redis.call('SMEMBERS', waiting_on(upstream))) do
    settle(qkeys(model), now, ttl, nil)
  end
end

-- Gives back n leases: KEYS[k + i - 1] is a lease set, ARGV[a + i - 1] the lease id in it. Each
-- lease set is written once (one ZREM for all its leases); each upstream a lease was freed on
-- hands its free slots to the models waiting for it (TIME read only if one waits).
local function give_back(k, a, n, ttl)
  local leases, order = {}, {}
  for i = 0, n - 1 do
    local key = KEYS[k + i]
    if leases[key] == nil then
      leases[key] = {}
      order[#order + 1] = key
    end
    local ids = leases[key]
    ids[#ids + 1] = ARGV[a + i]
  end
  local now = nil
  for _, key in ipairs(order) do
    local ids = leases[key]
    for i = 1, #ids, 1000 do  -- unpack takes a bounded number of values at a time
      redis.call('ZREM', key, unpack(ids, i, math.min(i + 999, #ids)))
    end
    local models = redis.call('SMEMBERS', waiting_on(string.sub(key, #LP + 1)))
    if #models > 0 then
      now = now or now_ms()
      for _, model in ipairs(models) do
        settle(qkeys(model), now, ttl, nil)
      end
    end
  end
end
