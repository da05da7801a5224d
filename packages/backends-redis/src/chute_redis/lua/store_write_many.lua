-- Several compare-and-sets (store_write_if.lua, run as `write_if` above), each on its own
-- condition: one that finds its record moved changes nothing for the others.
-- KEYS: record1, payload1, record2, payload2, ...   ARGV: 5 per write, as store_write_if
-- Returns {new_version1, new_version2, ...}, 0 where that version moved on.
local out = {}
for i = 1, #KEYS / 2 do
  local a = (i - 1) * 5
  out[i] = write_if(
    {KEYS[2 * i - 1], KEYS[2 * i]},
    {ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]}
  )
end
return out
