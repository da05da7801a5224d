-- The receive script (queue_receive.lua, run as `receive` above), plus each delivered id's
-- record, version and small payload read in the same step. Queue and store share the server.
-- KEYS: as queue_receive   ARGV: as queue_receive, then the store's key prefix
-- ("<prefix>:s:<api>:"), the largest payload (bytes) to return along
-- Returns {wait_ms, id1, attempt1, receipt1, record1, version1, payload1, id2, ...}; record
-- and version are nil when the record is gone, payload is nil when it is missing or larger.
local out = receive(KEYS, ARGV)
local joined = {out[1]}
local inline = tonumber(ARGV[5])
for i = 2, #out, 3 do
  local key = ARGV[4] .. '{' .. out[i] .. '}'
  local found = redis.call('HMGET', key, 'record', 'version')
  local payload = false
  if redis.call('STRLEN', key .. ':payload') <= inline then
    payload = redis.call('GET', key .. ':payload')
  end
  joined[#joined + 1] = out[i]
  joined[#joined + 1] = out[i + 1]
  joined[#joined + 1] = out[i + 2]
  joined[#joined + 1] = found[1]
  joined[#joined + 1] = found[2]
  joined[#joined + 1] = payload
end
return joined
