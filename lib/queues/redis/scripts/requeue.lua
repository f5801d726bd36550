-- requeue: puts one dead letter's task back into the waiting list, unless another client took it
-- first or its id is live (then it stays dead: two live tasks never share an id).
--
-- KEYS[1] dead list
-- KEYS[2] waiting list
-- KEYS[3] tasks (hash)
-- KEYS[4] dead letters by task id (hash)
-- ARGV[1] the dead letter, exactly as stored
-- ARGV[2] the task id
-- ARGV[3] the message to run
-- ARGV[4] key base (`prefix:{queue}:v2:`), for the keys of the groups and of the wake-up tokens
-- ARGV[5] the task's group, or '' for none: then it goes to the back of its group's list
-- Returns 1, or 0 when it stayed where it was. A task put back wakes an idle consumer.
-- @include tombstones
-- @include wake
-- @include groups
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[4], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[4], ARGV[2]) end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
if ARGV[5] ~= '' then
  local G = groupKeysOf(ARGV[4])
  redis.call('HSET', G.of, ARGV[2], ARGV[5])
  pushToGroup(G, ARGV[5], ARGV[2], 'LPUSH')
else
  redis.call('LPUSH', KEYS[2], ARGV[2])
  wakeOne(ARGV[4] .. 'wake')
end
return 1
