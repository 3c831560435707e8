-- Gives back the place of a request that is gone before its drop time.
-- KEYS[1] the counter hash.  ARGV: drop_at_ms, bucket_ms.
local bucket = math.floor(tonumber(ARGV[1]) / tonumber(ARGV[2]))
local n = tonumber(redis.call('HGET', KEYS[1], bucket) or '0')
if n > 1 then
  redis.call('HINCRBY', KEYS[1], bucket, -1)
elseif n == 1 then
  redis.call('HDEL', KEYS[1], bucket)
end
return n
