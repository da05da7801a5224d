-- Compare-and-set a record on its version, with its result in the same step.
-- KEYS: record, payload   ARGV: version, record JSON, expires_at_ms, has_result (0/1), result
-- Returns the new version when written, 0 when the version moved on (or the record is gone).
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  return 0
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'record', ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'result', ARGV[5])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[3])
return version
