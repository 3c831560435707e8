-- Records how far a live request's notification got (never re-creates a request that is gone).
-- KEYS[1] the request's hash.  ARGV: the delivery state ('' = pending).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'd')
else
  redis.call('HSET', KEYS[1], 'd', ARGV[1])
end
return 1
