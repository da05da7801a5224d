-- Enqueue one message, visible after a delay; wake one blocked receiver.
-- KEYS: visible, delayed, attempts, wake   ARGV: id, delay_ms, fresh (1: the caller knows the
-- id is new, as a create that just made it does; the duplicate check is skipped), quiet (1:
-- no wake-up, the caller sends one for a whole batch)
-- Returns 1 if queued, 0 if the id was already waiting, leased or dead (sending is
-- idempotent: an id is known to the queue by its attempts entry, from its send to its ack).
if ARGV[3] ~= '1' and redis.call('HSETNX', KEYS[3], ARGV[1], '0') == 0 then
  return 0
end
local delay = tonumber(ARGV[2])
if delay > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + delay, ARGV[1])
else
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
-- A delayed message also wakes a receiver, so that it shortens its wait to the new due time.
if ARGV[4] ~= '1' and redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('RPUSH', KEYS[4], '1')
end
return 1
