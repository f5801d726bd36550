-- promote: moves the ids of the due tasks of the delayed set to the back of the waiting list, oldest due
-- first; a grouped task to the back of its group's list.
--
-- KEYS[1] delayed set
-- KEYS[2] waiting list
-- ARGV[1] most tasks to move at once
-- ARGV[2] key base (`prefix:{queue}:v2:`), for the keys of the groups and of the wake-up tokens
-- Returns the ms until the next delayed task is due, or -1 when none waits.
-- Whenever a reservation could take something (promoted or not), an idle consumer is woken, unless
-- a token waits already: every consumer promotes at least once a second, so a wake-up lost (a token
-- whose reply never reached its consumer) leaves a task waiting a second at most.
-- @include now-ms
-- @include tombstones
-- @include wake
-- @include groups
local now = nowMs()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
-- Looked up only while a grouped task lives.
local G = #due > 0 and redis.call('EXISTS', ARGV[2] .. 'group-of') == 1 and groupKeysOf(ARGV[2]) or nil
for _, task in ipairs(due) do
  redis.call('ZREM', KEYS[1], task)
  local group = G and redis.call('HGET', G.of, task)
  if group then pushToGroup(G, group, task, 'LPUSH') else redis.call('LPUSH', KEYS[2], task) end
end
if workMayWait(ARGV[2]) then wakeOne(ARGV[2] .. 'wake') end
local nextDue = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nextDue[2] == nil then return -1 end
return math.max(0, tonumber(nextDue[2]) - now)
