-- recover: moves the tasks of expired consumers (registered, but their heartbeat key is gone) to
-- the recovered list, oldest first, under a lease so that one instance at a time does it. Each
-- recovered task is then reserved alone (see ack-and-reserve). A task recovered more than
-- ARGV[4] times is a poison pill: it is buried with reason 'recovered too often' instead. A grouped
-- task gives its group's slot back (the reservation of a recovered task takes it again): nothing
-- else of its group is reserved while recovered tasks wait, so the group stays within its limit.
--
-- KEYS[1] consumer set
-- KEYS[2] recovered list
-- KEYS[3] dead list
-- KEYS[4] recovery counts (hash)
-- KEYS[5] lease key
-- KEYS[6] tasks (hash)
-- KEYS[7] tasks in flight (hash)
-- KEYS[8] dead letters by task id (hash)
-- ARGV[1] key base (`prefix:{queue}:v2:`), for the processing list and heartbeat of each consumer, and the wake-up tokens
-- ARGV[2] lease holder
-- ARGV[3] lease ms
-- ARGV[4] most recoveries of a task
-- ARGV[5] the calling consumer's id, skipped
-- ARGV[6] most dead letters kept
-- Returns { ids recovered, ids buried }, each oldest first, or { -1 } when another instance holds
-- the lease. Recovered tasks wake an idle consumer (one that holds nothing may reserve them).
-- @include now-ms
-- @include push-dead-letter
-- @include tombstones
-- @include wake
-- @include groups
local G = groupKeysOf(ARGV[1])
if not redis.call('SET', KEYS[5], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then return { -1 } end
local recovered, buried = {}, {}
local now = nowMs()
for _, consumer in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if consumer ~= ARGV[5] and redis.call('EXISTS', ARGV[1] .. 'heartbeat:' .. consumer) == 0 then
    local processing = ARGV[1] .. 'processing:' .. consumer
    while true do
      -- Oldest first: reservations enter at the head.
      local id = redis.call('RPOP', processing)
      if not id then break end
      redis.call('HDEL', KEYS[7], id)
      local message = redis.call('HGET', KEYS[6], id)
      -- An id without a message holds no task: there is nothing to run or bury.
      if message then
        local count = redis.call('HINCRBY', KEYS[4], id, 1)
        leaveGroup(G, id, count > tonumber(ARGV[4]))
        if count > tonumber(ARGV[4]) then
          redis.call('HDEL', KEYS[4], id)
          redis.call('HDEL', KEYS[6], id)
          local entry = cjson.encode({ reason = 'recovered too often', detail = 'its consumer expired ' .. count .. ' times while running it', at = now, task = message })
          pushDeadLetter(KEYS[3], KEYS[8], entry, id, tonumber(ARGV[6]))
          buried[#buried + 1] = id
        else
          redis.call('LPUSH', KEYS[2], id)
          recovered[#recovered + 1] = id
        end
      end
    end
    redis.call('SREM', KEYS[1], consumer)
  end
end
if #recovered > 0 then wakeOne(G.wake) end
return { recovered, buried }
