-- tombstones: a cancelled task that was waiting leaves its id in `waiting` or `recovered`, since
-- taking it out would scan the list. The `cancelled` hash counts these entries per id, and all of
-- them under `#` (never a task id), so that stats stay exact and a reservation skips them. Of the
-- entries of one id, the cancelled ones are those nearest the consuming end: a task added again
-- after a cancel is pushed behind them, and `waiting` is reserved from only once `recovered` is
-- empty, so the first `n` entries of an id taken off a list are its `n` tombstones.
local function addTombstone (cancelled, id)
  redis.call('HINCRBY', cancelled, id, 1)
  redis.call('HINCRBY', cancelled, '#', 1)
end

-- True when the entry of `id` just taken off a list was a tombstone, which is then forgotten.
local function takeTombstone (cancelled, id)
  local count = tonumber(redis.call('HGET', cancelled, id) or '0')
  if count == 0 then return false end
  if count == 1 then redis.call('HDEL', cancelled, id) else redis.call('HSET', cancelled, id, count - 1) end
  if redis.call('HINCRBY', cancelled, '#', -1) <= 0 then redis.call('HDEL', cancelled, '#') end
  return true
end

-- How many tombstones the lists hold in all.
local function tombstoneCount (cancelled)
  return tonumber(redis.call('HGET', cancelled, '#') or '0')
end

-- Takes the tombstones off the consuming end of `list`, so that what is left there is a task.
local function dropLeadingTombstones (list, cancelled)
  if tombstoneCount(cancelled) == 0 then return end
  while true do
    local id = redis.call('LINDEX', list, -1)
    if not id or not takeTombstone(cancelled, id) then return end
    redis.call('RPOP', list)
  end
end
