-- recover: moves the tasks of expired consumers (registered, but their heartbeat key is gone) to
-- the recovered list, oldest first, under a lease so that one instance at a time does it. Each
-- recovered task is then reserved alone (see ack-and-reserve). A task recovered more than
-- ARGV[4] times is a poison pill: it is buried with reason 'recovered too often' instead.
--
-- KEYS[1] consumer set
-- KEYS[2] recovered list
-- KEYS[3] dead list
-- KEYS[4] recovery counts (hash)
-- KEYS[5] lease key
-- KEYS[6] live task names (set)
-- ARGV[1] key base (`prefix:{queue}:`), for the processing list and heartbeat of each consumer
-- ARGV[2] lease holder
-- ARGV[3] lease ms
-- ARGV[4] most recoveries of a task
-- ARGV[5] the calling consumer's id, skipped
-- ARGV[6] most dead letters kept
-- Returns { recovered, buried }, or { -1, 0 } when another instance holds the lease.
-- @include now-ms
-- @include task-id
-- @include push-dead-letter
if not redis.call('SET', KEYS[5], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then return { -1, 0 } end
local recovered, buried = 0, 0
local now = nowMs()
for _, consumer in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if consumer ~= ARGV[5] and redis.call('EXISTS', ARGV[1] .. 'heartbeat:' .. consumer) == 0 then
    local processing = ARGV[1] .. 'processing:' .. consumer
    while true do
      -- Oldest first: reservations enter at the head.
      local task = redis.call('RPOP', processing)
      if not task then break end
      local id = taskIdOf(task) or task
      local count = redis.call('HINCRBY', KEYS[4], id, 1)
      if count > tonumber(ARGV[4]) then
        redis.call('HDEL', KEYS[4], id)
        redis.call('SREM', KEYS[6], id)
        pushDeadLetter(KEYS[3], cjson.encode({ reason = 'recovered too often', detail = 'its consumer expired ' .. count .. ' times while running it', at = now, task = task }), tonumber(ARGV[6]))
        buried = buried + 1
      else
        redis.call('LPUSH', KEYS[2], task)
        recovered = recovered + 1
      end
    end
    redis.call('SREM', KEYS[1], consumer)
  end
end
return { recovered, buried }
