-- Several joint creates (joint_create.lua's steps: store_create.lua run as `create`, then
-- queue_send.lua run as `send` when it created), each with its own outcome.
-- KEYS: 8 per request, as joint_create   ARGV: 8 per request, as joint_create
-- Returns {created1, created2, ...} as store_create answers each. One wake-up per API of the
-- batch, after all of it is queued.
local out = {}
local wakes, seen = {}, {}
for i = 1, #KEYS / 8 do
  local k, a = (i - 1) * 8, (i - 1) * 8
  local created = create(
    {KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]},
    {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
      ARGV[a + 8]}
  )
  if created == 1 then
    send({KEYS[k + 5], KEYS[k + 6], KEYS[k + 7], KEYS[k + 8]}, {ARGV[a + 6], '0', '1', '1'})
    if not seen[KEYS[k + 8]] then
      seen[KEYS[k + 8]] = true
      wakes[#wakes + 1] = KEYS[k + 8]
    end
  end
  out[i] = created
end
for _, wake in ipairs(wakes) do
  if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
end
return out
