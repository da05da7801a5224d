-- Enqueue one message, visible after a delay; wake one blocked receiver.
-- KEYS: ready, leased, wake   ARGV: id, delay_ms
-- Returns 1 if queued, 0 if the id was already waiting or leased (sending is idempotent).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local added = redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[2]), ARGV[1])
-- A delayed message also wakes a receiver, so that it shortens its wait to the new due time.
if added == 1 and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('RPUSH', KEYS[3], 1)
end
return added
