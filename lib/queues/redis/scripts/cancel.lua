-- cancel: forgets a task that is waiting or delayed, for good, and frees its id. A delayed one
-- leaves the delayed set; a waiting one leaves a tombstone in its list (taking it out would scan
-- the list), which the reservations skip. A task in flight is not touched: it is either cancelled
-- here or reserved, never both, as both steps are scripts.
--
-- KEYS[1] tasks (hash)
-- KEYS[2] delayed set
-- KEYS[3] tasks in flight (hash)
-- KEYS[4] cancelled entries (hash)
-- KEYS[5] recovery counts (hash)
-- ARGV[1] the task id
-- Returns 1 when the task was cancelled, 0 when it is in flight or unknown.
-- @include tombstones
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 0 or redis.call('HEXISTS', KEYS[3], id) == 1 then return 0 end
if redis.call('ZREM', KEYS[2], id) == 0 then addTombstone(KEYS[4], id) end
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[5], id)
return 1
