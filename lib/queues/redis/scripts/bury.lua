-- bury: moves a reserved (or unreadable) message from a processing list to the dead letters,
-- which keep their newest entries, unless it is no longer in the processing list (released
-- meanwhile, or this very call run a second time by a client after a reconnection): a task is
-- never both dead and alive, nor dead twice. Its name and recovery count are forgotten.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] dead list
-- KEYS[3] live task names (set)
-- KEYS[4] recovery counts (hash)
-- ARGV[1] the reserved string
-- ARGV[2] the dead letter
-- ARGV[3] task id, or '' when none could be read
-- ARGV[4] most dead letters kept
-- Returns 1, or 0 when the message was not in the processing list.
-- @include push-dead-letter
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
pushDeadLetter(KEYS[2], ARGV[2], tonumber(ARGV[4]))
if ARGV[3] ~= '' then
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
end
return 1
