-- push-dead-letter: pushes a dead letter onto the head of the dead list (newest first), indexes it
-- by task id (not an unreadable message's: id ''), so that get() finds a dead task at once, and
-- keeps only the newest `max` entries, taking the index of those it drops with them.
local function pushDeadLetter (dead, index, entry, id, max)
  if max <= 0 then
    -- A max of 0 keeps none, as on a local queue (nor what an earlier, larger max kept).
    redis.call('DEL', dead, index)
    return
  end
  redis.call('LPUSH', dead, entry)
  if id ~= '' then redis.call('HSET', index, id, entry) end
  while redis.call('LLEN', dead) > max do
    local dropped = redis.call('RPOP', dead)
    -- The id of the task as this package writes it: `"task":"{\"v\":1,\"id\":\"<id>\"`.
    local droppedId = string.match(dropped, '"task":"{\\"v\\":1,\\"id\\":\\"([%w_%.:%-]+)\\"')
    if droppedId and redis.call('HGET', index, droppedId) == dropped then redis.call('HDEL', index, droppedId) end
  end
end
