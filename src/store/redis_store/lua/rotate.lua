-- Refresh-token rotation with reuse detection (RFC 9700 §4.14).
-- KEYS[1] the family's hash.  ARGV: presented, next, now_ms.
-- Returns 'o' rotated | 'r' reused (family revoked) | 'g' gone.
local k = KEYS[1]
local f = redis.call('HMGET', k, 'c', 'u', 'i', 'v')
if not f[1] then
  return 'g'
end
local now = tonumber(ARGV[3])
if f[4] == '1' or now - tonumber(f[2]) > tonumber(f[3]) then
  redis.call('HSET', k, 'v', '1')
  return 'g'
end
if f[1] ~= ARGV[1] then
  redis.call('HSET', k, 'v', '1')
  return 'r'
end
redis.call('HSET', k, 'c', ARGV[2], 'u', ARGV[3])
return 'o'
