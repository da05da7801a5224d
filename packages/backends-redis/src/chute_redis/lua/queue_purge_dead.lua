-- Delete every dead letter. KEYS: dead, dead_info, attempts, dead_seq   Returns how many.
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[3], id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
return #ids
