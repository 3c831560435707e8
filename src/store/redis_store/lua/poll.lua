-- A client's poll of one request (TOK-02..05). Atomic: under concurrent polls of an approved
-- request exactly one gets 'a'.
-- KEYS[1] the request's hash.  ARGV: client_id, now_ms, pacing ('c' checked, 'h' held).
-- Returns {'u'} unknown | {'p'} pending | {'s', interval} slow_down | {'x', expires} expired |
--         {'d', expires} denied | {'a', field, value, ...} approved: every field (the request
--         is gone).
local r = KEYS[1]
local f = redis.call('HMGET', r, 'c', 'e', 's', 'l', 'i')
-- TOK-02: another client's id is an unknown one and leaves no trace.
if not f[1] or f[1] ~= ARGV[1] or f[3] == 't' then
  return {'u'}
end
local now = tonumber(ARGV[2])
if now >= tonumber(f[2]) then
  redis.call('DEL', r)
  return {'x', f[2]}
end
if f[3] == 'a' then
  local out = redis.call('HGETALL', r)
  table.insert(out, 1, 'a')
  redis.call('DEL', r)
  return out
end
if f[3] == 'd' then
  redis.call('DEL', r)
  return {'d', f[2]}
end
local interval = tonumber(f[5])
if ARGV[3] == 'h' then
  -- The hold paced the client: never slow_down, and the next poll is not counted against it.
  redis.call('HDEL', r, 'l')
  return {'p'}
end
redis.call('HSET', r, 'l', ARGV[2])
if f[4] and now - tonumber(f[4]) < interval * 1000 then
  -- TOK-05 / GW-05: the interval grows by 5 s and the raised one is enforced.
  interval = interval + 5
  redis.call('HSET', r, 'i', interval)
  return {'s', tostring(interval)}
end
return {'p'}
