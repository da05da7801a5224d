-- Remove a message for good, if the caller still holds it.
-- KEYS: leased, receipts, attempts, visible, ready (old layout)   ARGV: id, receipt
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  -- The lease lapsed and a receive put the message back, but nobody took it yet: take it out.
  redis.call('LREM', KEYS[4], 0, ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
