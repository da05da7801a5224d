-- Waiting, leased and dead counts in O(log n). A lease that lapsed but was not yet reclaimed
-- by a receive counts as waiting.
-- KEYS: visible, delayed, leased, dead, ready (old layout)
-- Returns {queued, in_flight, dead, delayed}: delayed (not due yet) is a part of queued.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = redis.call('ZCOUNT', KEYS[3], '-inf', now)
return {
  redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[5])
    + lapsed,
  redis.call('ZCARD', KEYS[3]) - lapsed,
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'),
}
