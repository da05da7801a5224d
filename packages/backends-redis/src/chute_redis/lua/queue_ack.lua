-- Remove a message for good, if the caller still holds it.
-- KEYS: ready, leased, receipts, attempts   ARGV: id, receipt
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
