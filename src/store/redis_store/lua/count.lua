-- Adds one to a counter whose window starts with its first increment (the user-code lockout).
-- KEYS[1] the counter.  ARGV: window_ms.  Returns the count.
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
