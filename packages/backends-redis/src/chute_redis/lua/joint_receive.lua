-- The receive script (queue_receive.lua, run as `receive` above), plus each delivered id's
-- record, version and payload (when the record hash holds it: payloads up to the inline
-- size) read in the same step. Queue and store share the server.
-- When asked to start (ARGV[6] = '1'), each record the state machine lets this delivery start
-- is moved to `in_progress` for the delivery's attempt in the same step (the start of
-- chute.lifecycle.apply_transition, written as a compare-and-set would write it: the record
-- and version + 1); any other record is returned as read, for the caller's own path to decide.
-- KEYS: as queue_receive   ARGV: as queue_receive, then the store's key prefix
-- ("<prefix>:s:<api>:"), start ('1' or ''), the caller's time (seconds, as msgspec encodes a
-- float: it becomes started_at) and the API's queue limit (seconds, '' for none)
-- A record still as its create wrote it (version 1) comes with a start hint (the `start` field,
-- chute_redis.store.start_hint): where its status is and where `attempt` and `started_at` go,
-- and the values the decision needs, so it is started without decoding it; the same bytes.
-- Returns {wait_ms, id1, attempt1, receipt1, record1, version1, payload1, started1, id2, ...};
-- record and version are nil when the record is gone, payload is nil when it is not in the
-- hash, started is 1 when this step started the record (record and version are the new ones).
local out = receive(KEYS, ARGV)
local call, find, sub, decode = redis.call, string.find, string.sub, cjson.decode
local start, at_text = ARGV[6] == '1', ARGV[7]
local at, limit = tonumber(at_text), tonumber(ARGV[8])

-- The fields a started record has, in the order msgspec writes RequestRecord's fields (it
-- leaves out those at their default): what comes before `attempt` is kept (the status
-- changed), then `attempt` and `started_at`, then what comes after `error`.
local BETWEEN = {'attempt', 'started_at'}
local AFTER = {'queue_deadline', 'timeout', 'cancel_requested', 'extra'}
-- Small numbers as text without a printf (attempts, versions).
local SMALL = {'1', '2', '3', '4', '5', '6', '7', '8'}
local function text(n)
  return SMALL[n] or string.format('%d', n)
end
local KNOWN = {
  id = true, api = true, status = true, created_at = true, expires_at = true,
  content_type = true, headers = true, payload_size = true, attempt = true, started_at = true,
  queue_deadline = true, timeout = true, cancel_requested = true, extra = true,
}

-- Where the top-level field `key` starts (its leading comma). A `,"key":` in the text is a key
-- of some object (a quote after a comma is never inside a string, where quotes are escaped);
-- no object comes before `extra`, so the first one is the record's own.
local function field_at(raw, key)
  return find(raw, ',"' .. key .. '":', 1, true)
end

local function first_of(raw, record, keys)
  for _, key in ipairs(keys) do
    if record[key] ~= nil then return field_at(raw, key) end
  end
  return #raw  -- the closing brace
end

-- The started record's JSON, or nil when the state machine does not let this delivery start
-- it here (terminal, an attempt not newer, past its retention or its queue deadline) or the
-- record is not in the form this script writes exactly (an error to clear, a field written
-- at its default, a field unknown here): the caller decides then, as without the start.
local function started(raw, attempt)
  local ok, record = pcall(decode, raw)
  if not ok or type(record) ~= 'table' then return nil end
  for key, value in pairs(record) do
    if not KNOWN[key] or value == cjson.null then return nil end
  end
  local status = record.status
  if status ~= 'in_queue' and status ~= 'in_progress' then return nil end
  if record.attempt == 0 or record.payload_size == 0 or record.cancel_requested == false
    or (type(record.headers) == 'table' and next(record.headers) == nil)
    or (type(record.extra) == 'table' and next(record.extra) == nil) then
    return nil  -- written at a default: not as msgspec writes it
  end
  if (record.attempt or 0) >= attempt then return nil end
  if type(record.expires_at) ~= 'number' or record.expires_at <= at then return nil end
  if status == 'in_queue' and record.started_at == nil then
    local deadline = record.queue_deadline
    if deadline == nil and limit ~= nil then deadline = record.created_at + limit end
    if deadline ~= nil and at >= deadline then return nil end
  end
  local s = field_at(raw, 'status')
  local was = ',"status":"' .. status .. '"'
  if s == nil or sub(raw, s, s + #was - 1) ~= was then return nil end
  local tail = first_of(raw, record, AFTER)
  local head_end = tail  -- where BETWEEN's first present field starts, else the tail
  if record[BETWEEN[1]] ~= nil then
    head_end = field_at(raw, BETWEEN[1])
  elseif record[BETWEEN[2]] ~= nil then
    head_end = field_at(raw, BETWEEN[2])
  end
  return sub(raw, 1, s - 1) .. ',"status":"in_progress"'
    .. sub(raw, s + #was, head_end - 1)
    .. ',"attempt":' .. text(attempt) .. ',"started_at":' .. at_text
    .. sub(raw, tail)
end

-- The started record from the create's hint (see the header): a string; nil when the
-- record must not start here; false when the hint does not fit (then it is decoded).
local QUEUED, PROGRESS = ',"status":"in_queue"', ',"status":"in_progress"'
local function started_fresh(raw, hint, attempt)
  local s, t, expires, created, deadline = string.match(hint, '^(%d+):(%d+):([^:]+):([^:]+):(.*)$')
  if s == nil then return false end
  s, t = tonumber(s), tonumber(t)
  if sub(raw, s, s + #QUEUED - 1) ~= QUEUED then return false end
  if tonumber(expires) <= at then return nil end
  deadline = tonumber(deadline)  -- nil when it has none
  if deadline == nil and limit ~= nil then deadline = tonumber(created) + limit end
  if deadline ~= nil and at >= deadline then return nil end
  return sub(raw, 1, s - 1) .. PROGRESS .. sub(raw, s + #QUEUED, t - 1)
    .. ',"attempt":' .. text(attempt) .. ',"started_at":' .. at_text .. sub(raw, t)
end

local joined = {out[1]}
for i = 2, #out, 3 do
  local key = ARGV[5] .. '{' .. out[i] .. '}'
  local found = call('HMGET', key, 'record', 'version', 'payload', 'start')
  local moved = 0
  if start and found[1] and found[2] then
    local record = false
    if found[2] == '1' and found[4] then record = started_fresh(found[1], found[4], out[i + 1]) end
    if record == false then record = started(found[1], out[i + 1]) end
    if record then
      local version = tonumber(found[2]) + 1
      call('HSET', key, 'record', record, 'version', text(version))
      found[1], found[2], moved = record, version, 1
    end
  end
  joined[#joined + 1] = out[i]
  joined[#joined + 1] = out[i + 1]
  joined[#joined + 1] = out[i + 2]
  joined[#joined + 1] = found[1]
  joined[#joined + 1] = found[2]
  joined[#joined + 1] = found[3]
  joined[#joined + 1] = moved
end
return joined
