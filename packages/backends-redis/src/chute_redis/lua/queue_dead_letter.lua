-- Move a message to the dead letter, if the caller still holds it. The attempt count is kept
-- (it is the store's fencing token, and a requeued message must go on counting). Dead letters
-- are scored by a counter, not a clock, so they list in the order they died.
-- KEYS: ready, leased, receipts, dead, dead_info, dead_seq   ARGV: id, receipt, info (JSON)
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[6]), ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
return 1
