-- Several settles (joint_finish.lua's steps), each with its own outcome: every compare-and-set
-- first (store_write_if.lua, run as `write_if`), then one ack (queue_ack.lua, run as `ack`)
-- per API for all the settles that wrote, so a batch pays the ack's commands once.
-- KEYS: 7 per settle, as joint_finish   ARGV: 7 per settle, as joint_finish
-- Returns {version1, acked1, version2, acked2, ...}; {0, 0} where the version moved on.
local out = {}
local groups, order = {}, {}
for i = 1, #KEYS / 7 do
  local k, a = (i - 1) * 7, (i - 1) * 7
  local version = write_if(
    {KEYS[k + 1], KEYS[k + 2]},
    {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]}
  )
  out[2 * i - 1] = version
  out[2 * i] = 0
  if version ~= 0 then
    local receipts = KEYS[k + 4]
    local group = groups[receipts]
    if group == nil then
      group = {keys = {KEYS[k + 3], receipts, KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]},
        args = {}, at = {}}
      groups[receipts] = group
      order[#order + 1] = group
    end
    group.args[#group.args + 1] = ARGV[a + 6]
    group.args[#group.args + 1] = ARGV[a + 7]
    group.at[#group.at + 1] = 2 * i
  end
end
for _, group in ipairs(order) do
  local acked = ack(group.keys, group.args)
  for j, at in ipairs(group.at) do out[at] = acked[j] end
end
return out
