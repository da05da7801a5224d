-- Give a message back, visible again after a delay; its attempt count is kept.
-- KEYS: leased, receipts, visible, delayed, wake, ready (old layout)   ARGV: id, receipt, delay_ms
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  redis.call('LREM', KEYS[3], 0, ARGV[1])  -- lapsed and put back: queued once, below
  redis.call('ZREM', KEYS[6], ARGV[1])
end
redis.call('HDEL', KEYS[2], ARGV[1])
local delay = tonumber(ARGV[3])
if delay > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[4], now + delay, ARGV[1])
else
  redis.call('RPUSH', KEYS[3], ARGV[1])
end
if redis.call('LLEN', KEYS[5]) == 0 then redis.call('RPUSH', KEYS[5], '1') end
return 1
