-- Takes a push request's decision or expiry, once (PUSH-01, PUSH-ERR-01): the request stays (never redeemable) to carry
-- its delivery state.
-- KEYS[1] the request's hash.  ARGV: now_ms.
-- Returns {'u'} | {'p'} | {'x'} | {'d'} | {'a', field, value, ...} (every field).
local r = KEYS[1]
local f = redis.call('HMGET', r, 's', 'e')
if not f[1] or f[1] == 't' then
  return {'u'}
end
if f[1] == 'p' then
  if tonumber(ARGV[1]) >= tonumber(f[2]) then
    -- The expiry is taken once too: one `expired_token` push, whichever replica asks.
    redis.call('HSET', r, 's', 't')
    return {'x'}
  end
  return {'p'}
end
redis.call('HSET', r, 's', 't')
if f[1] == 'd' then
  return {'d'}
end
local out = redis.call('HGETALL', r)
table.insert(out, 1, 'a')
redis.call('HDEL', r, 'a')
return out
