-- Capacity: a request counts until it is dropped (expiry plus grace) or released. Counts are
-- kept per minute of the drop time, so the key stays small however many requests are live.
-- KEYS[1] the counter hash.  ARGV: now_ms, drop_at_ms, capacity, bucket_ms.
-- Returns 1 (reserved) or 0 (full: nothing is evicted).
local k = KEYS[1]
local now, drop, cap, width = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local current = math.floor(now / width)
local live = 0
local all = redis.call('HGETALL', k)
for i = 1, #all, 2 do
  if tonumber(all[i]) < current then
    redis.call('HDEL', k, all[i])
  else
    live = live + tonumber(all[i + 1])
  end
end
if live >= cap then
  return 0
end
local bucket = math.floor(drop / width)
redis.call('HINCRBY', k, bucket, 1)
local ttl = (bucket + 1) * width - now
if redis.call('PTTL', k) < ttl then
  redis.call('PEXPIRE', k, ttl)
end
return 1
