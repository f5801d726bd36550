-- release: puts a reserved task back, unchanged, at the consuming end of a list: `waiting`, or
-- `recovered` for a recovered task, which must still run alone; a grouped task goes back to the
-- consuming end of its group's list instead of `waiting`. Not a try: nothing is counted.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] the list it goes back to (waiting or recovered)
-- KEYS[3] tasks in flight (hash)
-- ARGV[1] the task id
-- ARGV[2] key base (`prefix:{queue}:v2:`), for the keys of the groups and of the wake-up tokens
-- Returns 1, or 0 when the task was no longer in the processing list. An idle consumer is woken.
-- @include tombstones
-- @include wake
-- @include groups
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  local G = groupKeysOf(ARGV[2])
  local group = leaveGroup(G, ARGV[1], false)
  if group and KEYS[2] == G.waiting then pushToGroup(G, group, ARGV[1], 'RPUSH') else redis.call('RPUSH', KEYS[2], ARGV[1]) end
  wakeOne(G.wake)
  return 1
end
return 0
