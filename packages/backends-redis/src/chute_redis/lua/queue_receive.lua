-- Lease up to N visible messages, oldest first.
-- KEYS: ready, leased, receipts, attempts, wake   ARGV: max, lease_ms, nonce
-- Returns {wait_ms, id1, attempt1, receipt1, id2, ...}. wait_ms is -1 when messages were
-- leased or nothing is pending; otherwise the time until the next delayed message becomes
-- visible or the next lease lapses, which caps the caller's BLPOP on the wake list.
local ready, leased, receipts, attempts, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local max, lease, nonce = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Lapsed leases become visible again, ordered by when they lapsed. The receipt stays until
-- the next delivery replaces it, so a slow holder may still ack or extend until then.
local lapsed = redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #lapsed, 2 do
  redis.call('ZREM', leased, lapsed[i])
  redis.call('ZADD', ready, lapsed[i + 1], lapsed[i])
end

local ids = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, max)
local out = {-1}
for _, id in ipairs(ids) do
  redis.call('ZREM', ready, id)
  local attempt = redis.call('HINCRBY', attempts, id, 1)
  local receipt = nonce .. '.' .. attempt
  redis.call('HSET', receipts, id, receipt)
  redis.call('ZADD', leased, now + lease, id)
  out[#out + 1] = id
  out[#out + 1] = attempt
  out[#out + 1] = receipt
end

if #ids > 0 then
  -- Pass the wake-up on while visible messages remain; drop stale tokens otherwise.
  if redis.call('ZCOUNT', ready, '-inf', now) > 0 then
    if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
  else
    redis.call('DEL', wake)
  end
  return out
end

local due = nil
local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
if #first > 0 then due = tonumber(first[2]) end
local lease_end = redis.call('ZRANGE', leased, 0, 0, 'WITHSCORES')
if #lease_end > 0 and (due == nil or tonumber(lease_end[2]) < due) then
  due = tonumber(lease_end[2])
end
if due ~= nil then out[1] = math.max(due - now, 1) end
return out
