-- ack-and-reserve: acknowledges a batch of reserved tasks and reserves up to a count of new ones,
-- in one round trip: what a busy consumer does between two batches of tasks.
--
-- Recovered tasks (the `recovered` list) go first, and one at a time: each may be what killed its
-- expired consumer, so it runs alone, in a consumer that holds nothing else once the
-- acknowledgements of this call are done, and a crash then counts against it alone. A consumer
-- that still holds tasks gets none while recovered tasks wait: it finishes them first, then takes one.
--
-- A consumer that reserves registers itself, as its heartbeat does: recovery looks only at
-- registered consumers, and a consumer may reserve while missing from the set (Redis restarted
-- empty, a failover that lost the registration) and expire before its next beat.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] waiting list
-- KEYS[3] recovery counts (hash)
-- KEYS[4] live task names (set)
-- KEYS[5] consumer set
-- KEYS[6] heartbeat key of the consumer
-- KEYS[7] recovered list
-- ARGV[1] how many tasks to reserve
-- ARGV[2] consumer id
-- ARGV[3] heartbeat lifetime in ms
-- ARGV[4...] pairs of (reserved string, task id) to acknowledge
-- Returns the kind of reservation, then the reserved messages, oldest first: 'batch' and up to the
-- count asked (fewer when the queue ran out), 'recovered' and one recovered task, or 'finishing' and
-- none.
for i = 4, #ARGV, 2 do
  -- A task no longer in the list went back to the queue (or this is a second run of the call):
  -- its recovery count and its name still belong to it.
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[3], ARGV[i + 1])
    redis.call('SREM', KEYS[4], ARGV[i + 1])
  end
end
local count = tonumber(ARGV[1])
if count == 0 then return { 'batch' } end
local reply = { 'batch' }
if redis.call('LLEN', KEYS[7]) > 0 then
  if redis.call('LLEN', KEYS[1]) > 0 then return { 'finishing' } end
  reply = { 'recovered', redis.call('LMOVE', KEYS[7], KEYS[1], 'RIGHT', 'LEFT') }
else
  for i = 1, count do
    local message = redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT')
    if not message then break end
    reply[i + 1] = message
  end
end
-- Registered by its heartbeat as a rule: the set and the key are written here only when missing.
if #reply > 1 and (redis.call('SADD', KEYS[5], ARGV[2]) == 1 or redis.call('EXISTS', KEYS[6]) == 0) then
  redis.call('SET', KEYS[6], '1', 'PX', tonumber(ARGV[3]))
end
return reply
