-- reset: drops up to a count of waiting tasks (recovered, due, then delayed) with their messages
-- and recovery counts; the tasks in flight keep theirs. A tombstone taken off a list is forgotten,
-- and counts as dropped. Called until it drops fewer than asked, so that a long queue never holds
-- Redis up in one script.
--
-- KEYS[1] waiting list
-- KEYS[2] recovered list
-- KEYS[3] delayed set
-- KEYS[4] tasks (hash)
-- KEYS[5] recovery counts (hash)
-- KEYS[6] cancelled entries (hash)
-- ARGV[1] most tasks to drop
-- Returns how many were dropped.
-- @include tombstones
local limit = tonumber(ARGV[1])
local dropped = 0
local function forget (id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  dropped = dropped + 1
end
for _, list in ipairs({ KEYS[2], KEYS[1] }) do
  while dropped < limit do
    local id = redis.call('RPOP', list)
    if not id then break end
    if takeTombstone(KEYS[6], id) then dropped = dropped + 1 else forget(id) end
  end
end
if dropped < limit then
  local popped = redis.call('ZPOPMIN', KEYS[3], limit - dropped)
  for i = 1, #popped, 2 do forget(popped[i]) end
end
return dropped
