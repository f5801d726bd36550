-- bury: moves a reserved (or unreadable) task from a processing list to the dead letters, which
-- keep their newest entries, unless it is no longer in the processing list (released meanwhile,
-- or this very call run a second time by a client after a reconnection): a task is never both
-- dead and alive, nor dead twice. Its message, recovery count and place in flight are forgotten.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] dead list
-- KEYS[3] tasks (hash)
-- KEYS[4] tasks in flight (hash)
-- KEYS[5] recovery counts (hash)
-- KEYS[6] dead letters by task id (hash)
-- ARGV[1] the task id
-- ARGV[2] the dead letter
-- ARGV[3] the id to index the dead letter by, or '' for an unreadable message
-- ARGV[4] most dead letters kept
-- ARGV[5] key base (`prefix:{queue}:v2:`), for the keys of the groups
-- Returns 1, or 0 when the task was not in the processing list. A grouped task gives its group's
-- slot back (the dead letter keeps the group in its message).
-- @include push-dead-letter
-- @include tombstones
-- @include wake
-- @include groups
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
leaveGroup(groupKeysOf(ARGV[5]), ARGV[1], true)
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
pushDeadLetter(KEYS[2], KEYS[6], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
