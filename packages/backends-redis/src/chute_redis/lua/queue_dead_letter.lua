-- Move a message to the dead letter, if the caller still holds it. The attempt count is kept
-- (it is the store's fencing token, and a requeued message must go on counting). Dead letters
-- are scored by a counter, not a clock, so they list in the order they died.
-- KEYS: leased, receipts, dead, dead_info, dead_seq, visible, ready (old layout)
-- ARGV: id, receipt, info (JSON)
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  redis.call('LREM', KEYS[6], 0, ARGV[1])  -- lapsed and put back: take it out
  redis.call('ZREM', KEYS[7], ARGV[1])
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[5]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
return 1
