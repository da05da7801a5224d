-- Several joint creates (joint_create.lua's steps), each with its own outcome: each create
-- (store_create.lua, run as `create`), then for all those created one RPUSH per queue (a
-- fresh, undelayed send: queue_send.lua's path for a new id), one ZADD per listing index
-- (and its trim when asked) and one wake-up per API, after all of the batch is queued.
-- KEYS: 8 per request, as joint_create   ARGV: 9 per request, as joint_create
-- Returns {created1, created2, ...} as store_create answers each.
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
for i = 1, #KEYS / 8 do
  local k, a = (i - 1) * 8, (i - 1) * 9
  local created = create(
    {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]},
    {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], '', '',
      ARGV[a + 9]}
  )
  if created == 1 then
    local id = ARGV[a + 6]
    local q = group(queues, KEYS[k + 5]).items
    q[#q + 1] = id
    local index = group(indexes, KEYS[k + 4])
    index.items[#index.items + 1] = ARGV[a + 7]
    index.items[#index.items + 1] = id
    if ARGV[a + 8] ~= '' then index.trim = ARGV[a + 8] end
    group(wakes, KEYS[k + 8])
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
