-- Several settles (joint_finish.lua's steps), each with its own outcome: every compare-and-set
-- first (store_write_if.lua, run as `write_if`), then one ack (queue_ack.lua, run as `ack`)
-- per API for all the settles that wrote, so a batch pays the ack's commands once.
-- KEYS: per API its queue_ack keys (5 x ARGV[1]), then per settle its record and payload keys
-- ARGV: the number of APIs, then per settle: its API's place among them (1-based),
-- store_write_if's 5 arguments, the id and the receipt (8 each)
-- Returns {version1, acked1, version2, acked2, ...}; {0, 0} where the version moved on.
local apis = tonumber(ARGV[1])
local first = 1 + 5 * apis  -- the first settle's keys
local out = {}
local groups, order = {}, {}
-- One table of keys and one of arguments for every compare-and-set, filled anew each time.
local keys, args = {}, {}
for i = 1, (#KEYS - first + 1) / 2 do
  local k, a = first + (i - 1) * 2, 2 + (i - 1) * 8
  keys[1], keys[2] = KEYS[k], KEYS[k + 1]
  args[1], args[2], args[3], args[4], args[5] =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local version = write_if(keys, args)
  out[2 * i - 1] = version
  out[2 * i] = 0
  if version ~= 0 then
    local api = tonumber(ARGV[a])
    local group = groups[api]
    if group == nil then
      local q = (api - 1) * 5
      group = {keys = {KEYS[q + 1], KEYS[q + 2], KEYS[q + 3], KEYS[q + 4], KEYS[q + 5]},
        args = {}, at = {}}
      groups[api] = group
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
