-- wake: an idle consumer blocks on `wake` (BLPOP), not on a list of tasks. Redis hands one pushed
-- entry to one blocked client, so one token wakes one consumer, where a push onto `waiting` woke
-- every consumer blocked on it. A token is no task: a reply lost on its way loses a wake-up only,
-- which the consumers' once-a-second promote makes good (see promote). At most one token waits, so
-- the list never grows while every consumer is busy.
-- `wake`: the key, `<base>wake`.
local function wakeOne (wake)
  if redis.call('LLEN', wake) == 0 then redis.call('LPUSH', wake, '1') end
end

-- True when a reservation could take something now: tasks without a group, recovered tasks, or a
-- group taking turns (tombstones included, which the woken consumer then drops).
local function workMayWait (base)
  return redis.call('LLEN', base .. 'waiting') > 0 or redis.call('LLEN', base .. 'recovered') > 0
    or redis.call('LLEN', base .. 'group-turns') > 0
end
