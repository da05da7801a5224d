-- Push a lease's end further out, if the caller still holds it.
-- KEYS: ready, leased, receipts   ARGV: id, receipt, lease_ms
-- Returns 1, or 0 when the receipt is no longer the message's (LeaseLost).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
-- A lapsed lease that nobody took yet was moved back to ready: take it back.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return 1
