-- retry: schedules a reserved task to be tried again. It leaves the processing list, its message
-- becomes that of the next try, and its id waits in the delayed set, scored by the Redis time (ms)
-- at which it is due, so that every instance agrees on when that is.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] delayed set
-- KEYS[3] tasks (hash)
-- KEYS[4] tasks in flight (hash)
-- ARGV[1] the task id
-- ARGV[2] the message of the next try
-- ARGV[3] delay in ms
-- ARGV[4] key base (`prefix:{queue}:v2:`), for the keys of the groups
-- Returns 1, or 0 when the task was no longer in the processing list. A grouped task gives its
-- group's slot back, and keeps its group.
-- @include now-ms
-- @include tombstones
-- @include wake
-- @include groups
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
leaveGroup(groupKeysOf(ARGV[4]), ARGV[1], false)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], nowMs() + tonumber(ARGV[3]), ARGV[1])
return 1
