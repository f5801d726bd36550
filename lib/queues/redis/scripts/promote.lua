-- promote: moves the ids of the due tasks of the delayed set to the back of the waiting list, oldest due
-- first.
--
-- KEYS[1] delayed set
-- KEYS[2] waiting list
-- ARGV[1] most tasks to move at once
-- Returns the ms until the next delayed task is due, or -1 when none waits.
-- @include now-ms
local now = nowMs()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, task in ipairs(due) do
  redis.call('ZREM', KEYS[1], task)
  redis.call('LPUSH', KEYS[2], task)
end
local nextDue = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nextDue[2] == nil then return -1 end
return math.max(0, tonumber(nextDue[2]) - now)
