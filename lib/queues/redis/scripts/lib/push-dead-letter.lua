-- push-dead-letter: pushes a dead letter onto the head of the dead list (newest first) and keeps
-- only the newest `max` entries.
local function pushDeadLetter (dead, entry, max)
  redis.call('LPUSH', dead, entry)
  -- LTRIM 0 -1 would keep everything: a max of 0 keeps nothing, as on a local queue.
  if max > 0 then redis.call('LTRIM', dead, 0, max - 1) else redis.call('DEL', dead) end
end
