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
-- ARGV[2] key base (`prefix:{queue}:v2:`), for the keys of the groups
-- Returns 1 when the task was cancelled, 0 when it is in flight or unknown.
-- @include tombstones
-- @include wake
-- @include groups
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[1], id) == 0 or redis.call('HEXISTS', KEYS[3], id) == 1 then return 0 end
local G = groupKeysOf(ARGV[2])
local group = redis.call('HGET', G.of, id)
if redis.call('ZREM', KEYS[2], id) == 0 then
  -- A waiting grouped task is in its group's list, unless it was recovered (then in `recovered`,
  -- which is short: the tasks of expired consumers).
  if group and not redis.call('LPOS', G.recovered, id) then addTombstone(KEYS[4], groupTombstone(id, group)) else addTombstone(KEYS[4], id) end
end
if group then redis.call('HDEL', G.of, id) end
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[5], id)
return 1
