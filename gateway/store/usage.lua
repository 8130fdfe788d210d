-- Write usage rows in one usage stripe (a Cluster's second step of settlement; settle.lua took
-- the leases, in the owners' slots, and said which settlements counted). Every key carries the
-- stripe's hash tag. Exactly once under retries: each gateway process numbers the usage it
-- sends (1, 2, 3, ...), always sends a stripe its oldest unconfirmed first, in order, and this
-- script keeps the process's high-water mark in the stripe (KEYS 1): a number at or under it was
-- written before (a call whose reply was lost, sent again) and is skipped.
-- KEYS: 1 the process's high-water mark in this stripe (a string, expiring ARGV 1 seconds after
--       its last write), then 2 per row: the key's usage key prefix (the UTC day is appended),
--       the key's usage days (ZSET of day ids)
-- ARGV: 1 the mark's TTL (seconds), then 9 per row: number, model (and API), prompt tokens,
--       completion tokens, error (0/1), latency ms, latency bucket, finished at, days kept
-- Returns how many rows were written (those written before are skipped).

local mark = tonumber(redis.call('GET', KEYS[1]) or '0')
local top, written = mark, 0
for i = 0, (#KEYS - 1) / 2 - 1 do
  local k, a = 1 + 2 * i, 1 + 9 * i
  local n = tonumber(ARGV[a + 1])
  if n > mark then
    record_usage(KEYS[k + 1], KEYS[k + 2], tonumber(ARGV[a + 9]), ARGV[a + 2], ARGV[a + 3],
      ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], tonumber(ARGV[a + 8]))
    written = written + 1
    if n > top then top = n end
  end
end
write_usage()
if top > mark then redis.call('SET', KEYS[1], top, 'EX', ARGV[1]) end
return written
