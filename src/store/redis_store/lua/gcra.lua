-- One request against a GCRA rate limit (the same rule as src/ratelimit.rs, for replicas that
-- share it). KEYS[1] the key's theoretical arrival time.  ARGV: now_ms, interval_ms, tolerance_ms.
-- Returns -1 (allowed) or the milliseconds to wait (refused, and not counted).
local now, interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
if start - now > tolerance then
  return start - tolerance - now
end
redis.call('SET', KEYS[1], start + interval, 'PX', start + interval - now)
return -1
