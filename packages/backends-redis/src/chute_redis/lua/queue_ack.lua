-- Remove messages of one API for good, each only if the caller still holds it: one HMGET of
-- the receipts, one ZREM of the leases and one HDEL each of receipts and attempts for all.
-- KEYS: leased, receipts, attempts, visible, ready (old layout)
-- ARGV: id1, receipt1, id2, receipt2, ...
-- Returns {acked1, acked2, ...}: 1, or 0 when that receipt is no longer the message's
-- (LeaseLost).
local ids = {}
for j = 1, #ARGV / 2 do ids[j] = ARGV[2 * j - 1] end
local held = redis.call('HMGET', KEYS[2], unpack(ids))
local out, mine = {}, {}
for j, id in ipairs(ids) do
  if held[j] == ARGV[2 * j] then
    out[j] = 1
    mine[#mine + 1] = id
  else
    out[j] = 0
  end
end
if #mine > 0 then
  if redis.call('ZREM', KEYS[1], unpack(mine)) < #mine then
    -- A lease lapsed and a receive put its message back, but nobody took it yet: take it
    -- out (the ids that were leased are in neither, so this finds nothing for them).
    for _, id in ipairs(mine) do
      redis.call('LREM', KEYS[4], 0, id)
      redis.call('ZREM', KEYS[5], id)
    end
  end
  redis.call('HDEL', KEYS[2], unpack(mine))
  redis.call('HDEL', KEYS[3], unpack(mine))
end
return out
