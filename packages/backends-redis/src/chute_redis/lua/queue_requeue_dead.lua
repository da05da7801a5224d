-- Send dead letters back to the queue, visible at once: all of them, or those named.
-- KEYS: visible, dead, dead_info, wake   ARGV: id...
-- Returns how many were requeued.
local ids = ARGV
if #ids == 0 then ids = redis.call('ZRANGE', KEYS[2], 0, -1) end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[2], id) == 1 then
    redis.call('HDEL', KEYS[3], id)
    redis.call('RPUSH', KEYS[1], id)
    n = n + 1
  end
end
if n > 0 and redis.call('LLEN', KEYS[4]) == 0 then redis.call('RPUSH', KEYS[4], 1) end
return n
