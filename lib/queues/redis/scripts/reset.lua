-- reset: drops up to a count of waiting tasks (recovered, due, then each group's, then delayed) with
-- their messages, recovery counts and groups; the tasks in flight keep theirs. A tombstone taken
-- off a list is forgotten, and counts as dropped. Called until it drops fewer than asked, so that a
-- long queue never holds Redis up in one script.
--
-- KEYS[1] waiting list
-- KEYS[2] recovered list
-- KEYS[3] delayed set
-- KEYS[4] tasks (hash)
-- KEYS[5] recovery counts (hash)
-- KEYS[6] cancelled entries (hash)
-- ARGV[1] most tasks to drop
-- ARGV[2] key base (`prefix:{queue}:v2:`), for the keys of the groups
-- Returns how many were dropped. The wake-up token goes too once nothing reservable is left: it
-- would wake a consumer for tasks gone.
-- @include tombstones
-- @include wake
-- @include groups
local limit = tonumber(ARGV[1])
local G = groupKeysOf(ARGV[2])
local dropped = 0
local function forget (id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  redis.call('HDEL', G.of, id)
  dropped = dropped + 1
end
for _, list in ipairs({ KEYS[2], KEYS[1] }) do
  while dropped < limit do
    local id = redis.call('RPOP', list)
    if not id then break end
    if takeTombstone(KEYS[6], id) then dropped = dropped + 1 else forget(id) end
  end
end
-- The groups, one at a time out of the turns (or the full set); one not drained by the end of this
-- call is put back at the consuming end of the turns, to be drained first by the next call.
local turnOfUngroupedTaken = false
while dropped < limit do
  local name = redis.call('RPOP', G.turns) or redis.call('SPOP', G.full)
  if not name then break end
  if name == groupTurnOfUngrouped then
    turnOfUngroupedTaken = true
  else
    local list = groupList(G, name)
    while dropped < limit do
      local id = redis.call('RPOP', list)
      if not id then break end
      redis.call('DECR', G.count)
      if takeTombstone(KEYS[6], groupTombstone(id, name)) then dropped = dropped + 1 else forget(id) end
    end
    if redis.call('LLEN', list) > 0 then redis.call('RPUSH', G.turns, name) end
  end
end
-- While a group takes turns, so do the tasks without a group.
if turnOfUngroupedTaken and redis.call('LLEN', G.turns) > 0 then redis.call('LPUSH', G.turns, groupTurnOfUngrouped) end
if dropped < limit then
  local popped = redis.call('ZPOPMIN', KEYS[3], limit - dropped)
  for i = 1, #popped, 2 do forget(popped[i]) end
end
if not workMayWait(ARGV[2]) then redis.call('DEL', G.wake) end
return dropped
