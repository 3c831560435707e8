-- The user's decision, once, never after expiry; announced to every instance so that held
-- polls wake wherever they are held.
-- KEYS[1] the request's hash.  ARGV: now_ms, status ('a' | 'd'), approval, channel, id hash,
-- the handle presented (compared through digests: no timing tells how much of it matched).
-- Returns {'n'} not pending | {'x'} expired | {'ok', field, value, ...} (every field).
local r = KEYS[1]
local f = redis.call('HMGET', r, 's', 'e', 'h')
if f[1] ~= 'p' or redis.sha1hex(f[3]) ~= redis.sha1hex(ARGV[6]) then
  return {'n'}
end
if tonumber(ARGV[1]) >= tonumber(f[2]) then
  return {'x'}
end
if ARGV[2] == 'a' then
  redis.call('HSET', r, 's', 'a', 'a', ARGV[3])
else
  redis.call('HSET', r, 's', 'd')
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
local out = redis.call('HGETALL', r)
table.insert(out, 1, 'ok')
return out
