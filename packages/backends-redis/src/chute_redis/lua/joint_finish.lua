-- The store's compare-and-set (store_write_if.lua, run as `write_if` above) and, when it
-- wrote, the queue's ack (queue_ack.lua, run as `ack`) in one atomic step.
-- KEYS: record, payload, then queue_ack's 5   ARGV: as store_write_if (5), then id, receipt
-- Returns {new_version, acked}: {0, 0} when the version moved on (nothing written or acked);
-- acked is 0 when the receipt is no longer the caller's (the outcome is written anyway).
local version = write_if({KEYS[1], KEYS[2]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]})
if version == 0 then
  return {0, 0}
end
return {version, ack({KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]}, {ARGV[6], ARGV[7]})[1]}
