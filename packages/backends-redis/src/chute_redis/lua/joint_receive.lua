-- The receive script (queue_receive.lua, run as `receive` above), plus each delivered id's
-- record, version and payload (when the record hash holds it: payloads up to the inline
-- size) read in the same step. Queue and store share the server.
-- KEYS: as queue_receive   ARGV: as queue_receive, then the store's key prefix
-- ("<prefix>:s:<api>:")
-- Returns {wait_ms, id1, attempt1, receipt1, record1, version1, payload1, id2, ...}; record
-- and version are nil when the record is gone, payload is nil when it is not in the hash.
local out = receive(KEYS, ARGV)
local joined = {out[1]}
for i = 2, #out, 3 do
  local found = redis.call('HMGET', ARGV[4] .. '{' .. out[i] .. '}', 'record', 'version', 'payload')
  joined[#joined + 1] = out[i]
  joined[#joined + 1] = out[i + 1]
  joined[#joined + 1] = out[i + 2]
  joined[#joined + 1] = found[1]
  joined[#joined + 1] = found[2]
  joined[#joined + 1] = found[3]
end
return joined
