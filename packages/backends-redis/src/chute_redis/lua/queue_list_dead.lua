-- The oldest dead letters. KEYS: dead, dead_info   ARGV: limit
-- Returns {id1, info1, id2, info2, ...}; every dead id has its info (one script writes both).
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id)
end
return out
