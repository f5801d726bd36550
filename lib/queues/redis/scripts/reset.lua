-- reset: drops up to a count of waiting tasks (recovered, due, then delayed) with their names and
-- recovery counts; the tasks in flight keep theirs. Called until it drops fewer than asked, so
-- that a long queue never holds Redis up in one script.
--
-- KEYS[1] waiting list
-- KEYS[2] recovered list
-- KEYS[3] delayed set
-- KEYS[4] live task names (set)
-- KEYS[5] recovery counts (hash)
-- ARGV[1] most tasks to drop
-- Returns how many were dropped.
-- @include task-id
local limit = tonumber(ARGV[1])
local dropped = {}
for _, list in ipairs({ KEYS[2], KEYS[1] }) do
  while #dropped < limit do
    local message = redis.call('RPOP', list)
    if not message then break end
    dropped[#dropped + 1] = message
  end
end
if #dropped < limit then
  local popped = redis.call('ZPOPMIN', KEYS[3], limit - #dropped)
  for i = 1, #popped, 2 do dropped[#dropped + 1] = popped[i] end
end
for _, message in ipairs(dropped) do
  local id = taskIdOf(message)
  if id ~= nil then
    redis.call('SREM', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
  end
end
return #dropped
