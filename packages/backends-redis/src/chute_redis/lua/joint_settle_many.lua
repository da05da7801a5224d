-- Several settles (joint_finish.lua's steps: store_write_if.lua run as `write_if`, then
-- queue_ack.lua run as `ack` when it wrote), each with its own outcome.
-- KEYS: 7 per settle, as joint_finish   ARGV: 7 per settle, as joint_finish
-- Returns {version1, acked1, version2, acked2, ...}; {0, 0} where the version moved on.
local out = {}
for i = 1, #KEYS / 7 do
  local k, a = (i - 1) * 7, (i - 1) * 7
  local version = write_if(
    {KEYS[k + 1], KEYS[k + 2]},
    {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]}
  )
  local acked = 0
  if version ~= 0 then
    acked = ack(
      {KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]},
      {ARGV[a + 6], ARGV[a + 7]}
    )
  end
  out[#out + 1] = version
  out[#out + 1] = acked
end
return out
