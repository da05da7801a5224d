-- Compare-and-set a record on its version, with its result in the same step. The keys'
-- expiry is set again only when the record's expires_at changed (never, for the gateway's
-- and the dequeuer's moves): the create set it, and writing a hash field keeps it.
-- KEYS: record, payload   ARGV: version, record JSON, expires_at_ms, has_result (0/1), result
-- Returns the new version when written, 0 when the version moved on (or the record is gone).
local held = redis.call('HMGET', KEYS[1], 'version', 'expires')
if held[1] ~= ARGV[1] then
  return 0
end
local version = tonumber(held[1]) + 1
local version_text = string.format('%d', version)  -- a number would be printf'd as a float
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'record', ARGV[2], 'version', version_text, 'result', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'record', ARGV[2], 'version', version_text)
end
if held[2] ~= ARGV[3] then
  -- A new expiry, or a record written before the expiry was kept in the hash.
  redis.call('HSET', KEYS[1], 'expires', ARGV[3])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  redis.call('PEXPIREAT', KEYS[2], ARGV[3])
end
return version
