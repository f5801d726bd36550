-- release: puts a reserved task back, unchanged, at the consuming end of a list: `waiting`, or
-- `recovered` for a recovered task, which must still run alone. Not a try: nothing is counted.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] the list it goes back to (waiting or recovered)
-- KEYS[3] tasks in flight (hash)
-- ARGV[1] the task id
-- Returns 1, or 0 when the task was no longer in the processing list.
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
