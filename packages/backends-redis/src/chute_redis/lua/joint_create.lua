-- The store's create (store_create.lua, run as `create` above) and, when it created the
-- request, the queue's send (queue_send.lua, run as `send`) in one atomic step: a submit is
-- one round trip, and a stored request is never left unqueued.
-- KEYS: record, payload, upload, listing index, visible, delayed, attempts, wake
-- ARGV: as store_create (9; the 6th is the id)
-- Returns what store_create returns (1 created, 2 created by this very call already: it was
-- sent then, 0 the id is taken: nothing sent).
local created = create({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, ARGV)
if created == 1 then
  send({KEYS[5], KEYS[6], KEYS[7], KEYS[8]}, {ARGV[6], '0', '1'})
end
return created
