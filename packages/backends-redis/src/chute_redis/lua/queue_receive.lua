-- Lease up to N visible messages, oldest first.
-- KEYS: visible, delayed, leased, receipts, attempts, wake, ready (the sorted set of visible
-- and delayed messages before the list; moved over as it is found)
-- ARGV: max, lease_ms, nonce, promote ('1': first move what is due to the visible list;
-- '': only if the visible list cannot fill this receive, so a busy queue pays that once per
-- the caller's interval, not per receive)
-- Returns {wait_ms, id1, attempt1, receipt1, id2, ...}. wait_ms is -2 when visible messages
-- remain (the wake-up was passed on); otherwise the queue was drained: -1 when nothing else is
-- pending, else the time until the next delayed message becomes visible or the next lease
-- lapses, which caps the caller's BLPOP on the wake list (its next wait, when it leased
-- messages: it may start with that BLPOP instead of running this script on an empty queue).
local visible, delayed, leased, receipts = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local attempts, wake, old_ready = KEYS[5], KEYS[6], KEYS[7]
local max, lease, nonce = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
-- Redis turns each number given to a command into text with a float printf: arguments go as
-- text, small numbers (attempts) from this table, the lease's deadline once per receive.
local call, SMALL = redis.call, {'1', '2', '3', '4', '5', '6', '7', '8'}
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_text = string.format('%d', now)

-- The first score of each timed set as the promotion found it (nil: empty; false: not known,
-- what was due was moved), so that a drained receive's wait needs no second look.
local firsts = nil

local function first_score(timed)
  local first = call('ZRANGE', timed, '0', '0', 'WITHSCORES')
  if #first == 0 then return nil end
  return tonumber(first[2])
end

-- Messages queued by a version that kept them in a sorted set: into the new layout, ahead
-- of the list (they were queued before it, oldest first). Then lapsed leases and due delayed
-- messages join the visible ones, as a send would at the time they became due. A lapsed
-- lease's receipt stays until the next delivery replaces it, so a slow holder may still ack
-- or extend until then. Each timed set's first score tells whether anything is due: the
-- common case (nothing) costs one command per set.
local function promote()
  local pushed = 0
  if call('EXISTS', old_ready) == 1 then
    local old = call('ZRANGE', old_ready, 0, 999, 'WITHSCORES')
    for i = #old - 1, 1, -2 do
      if tonumber(old[i + 1]) <= now then
        call('LPUSH', visible, old[i])
        pushed = pushed + 1
      else
        call('ZADD', delayed, old[i + 1], old[i])
      end
    end
    call('ZREMRANGEBYRANK', old_ready, 0, #old / 2 - 1)
  end
  firsts = {}
  for _, timed in ipairs({leased, delayed}) do
    local score = first_score(timed)
    firsts[timed] = score
    if score ~= nil and score <= now then
      local due = call('ZRANGEBYSCORE', timed, '-inf', now_text, 'LIMIT', '0', '1000')
      call('ZREMRANGEBYRANK', timed, '0', string.format('%d', #due - 1))
      call('RPUSH', visible, unpack(due))
      pushed = pushed + #due
      firsts[timed] = false
    end
  end
  return pushed
end

-- The wait until the next timed message is due, or -1 when none is pending. `leased_until`:
-- the deadline of the leases this receive wrote (nil when it wrote none), the only change to
-- the timed sets since the promotion looked at them.
local function next_due(leased_until)
  local due = leased_until
  for _, timed in ipairs({delayed, leased}) do
    local score
    if firsts ~= nil and firsts[timed] ~= false then
      score = firsts[timed]
    else
      score = first_score(timed)
    end
    if score ~= nil and (due == nil or score < due) then due = score end
  end
  if due == nil then return -1 end
  return math.max(due - now, 1)
end

local out = {-1}
local promoted = ARGV[4] == '1'
if promoted then promote() end
local ids = call('LPOP', visible, ARGV[1]) or {}
if #ids < max and not promoted and promote() > 0 then
  -- Short of what was asked: what was due fills the rest.
  for _, id in ipairs(call('LPOP', visible, string.format('%d', max - #ids))) do ids[#ids + 1] = id end
end
if #ids > 0 then
  local held, leases, counted = {}, {}, {}
  local deadline = string.format('%d', now + lease)
  -- Each one's attempt + 1: HINCRBY for one, else one HMGET and one HSET for all.
  local before = {false}
  if #ids > 1 then before = call('HMGET', attempts, unpack(ids)) end
  local latest = {}
  for j, id in ipairs(ids) do
    local attempt
    if #ids == 1 then
      attempt = call('HINCRBY', attempts, id, '1')
    else
      attempt = (latest[id] or tonumber(before[j]) or 0) + 1
      latest[id] = attempt
    end
    local text = SMALL[attempt] or string.format('%d', attempt)
    if #ids > 1 then
      counted[#counted + 1] = id
      counted[#counted + 1] = text
    end
    local receipt = nonce .. '.' .. text
    held[#held + 1] = id
    held[#held + 1] = receipt
    leases[#leases + 1] = deadline
    leases[#leases + 1] = id
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = receipt
  end
  if #counted > 0 then call('HSET', attempts, unpack(counted)) end
  call('HSET', receipts, unpack(held))
  call('ZADD', leased, unpack(leases))
  -- Pass the wake-up on while visible messages remain; drop stale tokens otherwise.
  if #ids == max and call('LLEN', visible) > 0 then
    if call('LLEN', wake) == 0 then call('RPUSH', wake, '1') end
    out[1] = -2
  else
    call('DEL', wake)
    out[1] = next_due(now + lease)
  end
  return out
end

out[1] = next_due()
return out
