-- Create a request: one hash holding record, version, expiry and (when small) the payload,
-- expiring with the record; a larger payload is a string key of its own.
-- The request joins its API's listing index (chute_redis/listing.py), which it trims of
-- expired entries when asked.
-- KEYS: record, payload, upload (a temporary key holding a streamed payload), listing index
-- ARGV: record JSON, expires_at_ms, 'hash' | 'inline' | 'upload', payload (hash and inline
-- modes), call token, id, created_at (the index score; '': the caller indexes it), trim
-- bound ('': no trim; else the index members scored below it are expired), start hint (where
-- the receive script starts the record without decoding it: chute_redis.store.start_hint)
-- Returns 1 when created, 2 when this very call created it already (redis-py retried it after
-- a lost reply), 0 when the id is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  if redis.call('HGET', KEYS[1], 'token') == ARGV[5] then return 2 end
  return 0
end
local function index()
  if ARGV[7] == '' then return end
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[6])
  if ARGV[8] ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[8]) end
end
if ARGV[3] == 'hash' then
  redis.call('HSET', KEYS[1], 'record', ARGV[1], 'version', '1', 'token', ARGV[5],
    'expires', ARGV[2], 'start', ARGV[9], 'payload', ARGV[4])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  index()
  return 1
end
if ARGV[3] == 'upload' then
  if redis.call('EXISTS', KEYS[3]) == 0 then
    return redis.error_reply('payload upload ' .. KEYS[3] .. ' vanished before the record was created')
  end
  redis.call('RENAME', KEYS[3], KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[4])
end
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'version', '1', 'token', ARGV[5], 'expires', ARGV[2],
  'start', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
index()
return 1
