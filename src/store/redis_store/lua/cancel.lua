-- Removes a request (its user could not be reached) and wakes its held polls.
-- KEYS[1] the request's hash.  ARGV: channel, id hash.  Returns its expiry, or false.
local b = redis.call('HGET', KEYS[1], 'e')
if not b then
  return false
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return b
