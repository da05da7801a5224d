-- Push a lease's end further out, if the caller still holds it.
-- KEYS: leased, receipts, visible, ready (old layout)   ARGV: id, receipt, lease_ms
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
if redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1]) == 1 then
  -- The lease had lapsed and a receive put the message back, unclaimed: take it back.
  redis.call('LREM', KEYS[3], 0, ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
return 1
