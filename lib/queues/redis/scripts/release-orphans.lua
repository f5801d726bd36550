-- release-orphans: releases the orphans of a processing list, the tasks its consumer does not
-- know it holds, to the consuming end of the waiting list, in the order they were reserved; the
-- known ones stay. With none known (a consumer that stops), every task is released. A recovered
-- task (one with a recovery count) goes back to the recovered list instead, so that it still runs
-- alone, and a grouped task to the consuming end of its group's list, its group's slot given back.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] waiting list
-- KEYS[3] recovery counts (hash)
-- KEYS[4] recovered list
-- KEYS[5] tasks in flight (hash)
-- ARGV[1] key base (`prefix:{queue}:v2:`), for the keys of the groups and of the wake-up tokens
-- ARGV[2...] the ids of the tasks the consumer knows it holds
-- Returns how many tasks were released. Any released wakes an idle consumer.
-- @include tombstones
-- @include wake
-- @include groups
local G = groupKeysOf(ARGV[1])
local known = {}
for i = 2, #ARGV do known[ARGV[i]] = (known[ARGV[i]] or 0) + 1 end
local held = redis.call('LRANGE', KEYS[1], 0, -1)
local released = 0
-- Newest first (reservations enter at the head), each pushed onto the consuming end: the oldest
-- ends up first in line.
for i = 1, #held do
  local id = held[i]
  local count = known[id]
  if count ~= nil and count > 0 then
    known[id] = count - 1
  else
    redis.call('LREM', KEYS[1], 1, id)
    redis.call('HDEL', KEYS[5], id)
    local group = leaveGroup(G, id, false)
    if redis.call('HEXISTS', KEYS[3], id) == 1 then
      redis.call('RPUSH', KEYS[4], id)
    elseif group then
      pushToGroup(G, group, id, 'RPUSH')
    else
      redis.call('RPUSH', KEYS[2], id)
    end
    released = released + 1
  end
end
if released > 0 then wakeOne(G.wake) end
return released
