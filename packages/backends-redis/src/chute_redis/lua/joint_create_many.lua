-- Several joint creates (joint_create.lua's steps), each with its own outcome: each create
-- (store_create.lua, run as `create`), then for all those created one RPUSH per queue (a
-- fresh, undelayed send: queue_send.lua's path for a new id), one ZADD per listing index
-- (and its trim when asked) and one wake-up per API, after all of the batch is queued.
-- The keys of an API's queue come once per batch, not once per request (each argument costs
-- Redis a string and a table slot).
-- KEYS: the upload key every create is given (none is used: these payloads came whole), then
-- per API its queue's visible, delayed, attempts and wake keys (4 x ARGV[1]), then per request
-- its record, payload and listing index keys (3 each)
-- ARGV: the number of APIs, then per request: its API's place among them (1-based) and
-- store_create's 9 arguments (the 7th and 8th, the index score and trim, are this script's:
-- the create itself indexes nothing)
-- Returns {created1, created2, ...} as store_create answers each.
local apis = tonumber(ARGV[1])
local first = 2 + 4 * apis  -- the first request's keys
local out = {}
local queues, indexes, wakes, seen = {}, {}, {}, {}
local function group(list, key)
  local g = seen[key]
  if g == nil then
    g = {key = key, items = {}}
    seen[key] = g
    list[#list + 1] = g
  end
  return g
end
-- One table of keys and one of arguments for every create, filled anew each time.
local keys, args = {false, false, KEYS[1], false}, {}
for i = 1, (#KEYS - first + 1) / 3 do
  local k, a = first + (i - 1) * 3, 2 + (i - 1) * 10
  keys[1], keys[2], keys[4] = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  for j = 1, 9 do args[j] = ARGV[a + j] end
  args[7], args[8] = '', ''
  local created = create(keys, args)
  if created == 1 then
    local id, api = ARGV[a + 6], 2 + 4 * (tonumber(ARGV[a]) - 1)
    local q = group(queues, KEYS[api]).items
    q[#q + 1] = id
    local index = group(indexes, KEYS[k + 2])
    index.items[#index.items + 1] = ARGV[a + 7]
    index.items[#index.items + 1] = id
    if ARGV[a + 8] ~= '' then index.trim = ARGV[a + 8] end
    group(wakes, KEYS[api + 3])
  end
  out[i] = created
end
for _, q in ipairs(queues) do redis.call('RPUSH', q.key, unpack(q.items)) end
for _, index in ipairs(indexes) do
  redis.call('ZADD', index.key, unpack(index.items))
  if index.trim then redis.call('ZREMRANGEBYSCORE', index.key, '-inf', '(' .. index.trim) end
end
for _, wake in ipairs(wakes) do
  if redis.call('LLEN', wake.key) == 0 then redis.call('RPUSH', wake.key, '1') end
end
return out
