-- Claims the expiries that are due (push requests whose client must be told `expired_token`).
-- A claim is a lease: the member's score moves to now + lease_ms, so that no other replica
-- claims it meanwhile; the claimer removes it once handled (`ZREM`), and if the claimer dies
-- first another replica claims it when the lease runs out (the store's `take` still hands the
-- expiry out once).
-- KEYS[1] the sorted set (score: due ms; member: the request's key hash).
-- ARGV: now_ms, max, lease_ms.  Returns the claimed members.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), m)
end
return due
