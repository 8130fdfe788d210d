-- Usage rows, shared by settle.lua and usage.lua (prepended to each when it is loaded): a day's
-- usage of a key, per model (and API), gathered in Lua tables as settlements are taken in order
-- and written once per hash (and per field) by ``write_usage`` at the end. The script is atomic,
-- so the end state is the one writing them one by one gives.

local function ordered()  -- a table that remembers the order its keys were first set in
  return {keys = {}, values = {}}
end

-- ``t``'s value of ``key``, made by ``make(a, b, c, d)`` when it has none (a function defined
-- once, given its arguments here: a closure made per call costs more than the look-up it
-- guards, and a vararg call more than these four).
local function slot(t, key, make, a, b, c, d)
  local value = t.values[key]
  if value == nil then
    value = make(a, b, c, d)
    t.values[key] = value
    table.insert(t.keys, key)
  end
  return value
end

local function put(t, key, value)
  if t.values[key] == nil then table.insert(t.keys, key) end
  t.values[key] = value
end

local function add(t, key, n)
  put(t, key, (t.values[key] or 0) + n)
end

local usage = ordered()      -- usage day hash -> {days index, day, days, keep, models}

local function usage_day(key, index, day, days)
  return {key = key, index = index, day = day, days = days, models = ordered()}
end

-- the latency total is added to in Lua, one settlement after the other, so the sum is the
-- double the reference's additions give (HINCRBYFLOAT adds in long double)
local function model_line(key, line)
  local total = tonumber(redis.call('HGET', key, 'l:' .. line) or '0')
  return {r = 0, p = 0, c = 0, e = 0, l = total, buckets = ordered()}
end

-- Worked out once per call, not per request: a key's usage day by its prefix and day number
-- (usage's value; its key the prefix and the day id), a bucket's field by the bucket's text.
local usage_of = {}
local bucket_names = {}

-- One request's usage: ``prefix`` the key's usage key prefix (the day id is appended), ``index``
-- the key's days index, ``keep`` the days it is kept, ``line`` its model (and API), then its
-- prompt and completion tokens, error (0/1), latency (ms), latency bucket and end time.
local function record_usage(prefix, index, keep, line, p, c, e, l, bucket, finished)
  local days = epoch_days(finished)
  local by_day = usage_of[prefix]
  if by_day == nil then
    by_day = {}
    usage_of[prefix] = by_day
  end
  local u = by_day[days]
  if u == nil then
    local id = day_id(days)
    local ukey = prefix .. string.format('%d', id)
    u = slot(usage, ukey, usage_day, ukey, index, id, days)
    by_day[days] = u
  end
  u.keep = keep
  local m = slot(u.models, line, model_line, u.key, line)
  m.r = m.r + 1
  m.p = m.p + num(p)  -- token counts and the error flag repeat from request to request: each
  m.c = m.c + num(c)  -- text parsed once per call (num, calendar.lua)
  m.e = m.e + num(e)
  m.l = m.l + tonumber(l)
  local name = bucket_names[bucket]
  if name == nil then
    name = 'b' .. bucket
    bucket_names[bucket] = name
  end
  add(m.buckets, name, 1)
end

local function write_usage()
  for _, key in ipairs(usage.keys) do
    local u = usage.values[key]
    for _, model in ipairs(u.models.keys) do
      local m = u.models.values[model]
      -- the day hash's TTL is set when it gains a model, not every time
      local new_model = redis.call('HINCRBY', key, 'r:' .. model, whole(m.r)) == m.r
      redis.call('HINCRBY', key, 'p:' .. model, whole(m.p))
      redis.call('HINCRBY', key, 'c:' .. model, whole(m.c))
      if m.e ~= 0 then redis.call('HINCRBY', key, 'e:' .. model, whole(m.e)) end
      redis.call('HSET', key, 'l:' .. model, fmt(m.l))
      for _, bucket in ipairs(m.buckets.keys) do
        redis.call('HINCRBY', key, bucket .. ':' .. model, whole(m.buckets.values[bucket]))
      end
      -- The day joins the index of days when its hash gains a model, and the index's TTL is
      -- renewed then too: the index outlives every day hash it names, and a day hash that
      -- already has this model is already in it.
      if new_model then
        redis.call('EXPIRE', key, whole(u.keep * 86400))
        if redis.call('ZADD', u.index, whole(u.day), whole(u.day)) == 1 then
          redis.call('ZREMRANGEBYSCORE', u.index, '-inf', '(' .. day_id(u.days - u.keep))
        end
        redis.call('EXPIRE', u.index, whole(u.keep * 86400))
      end
    end
  end
end
