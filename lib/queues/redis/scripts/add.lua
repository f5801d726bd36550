-- add: puts tasks into the queue, in order: each message is stored once in `tasks`, by id, and its
-- id is pushed onto `waiting` when it is due (a grouped task onto its group's list, see
-- scripts/lib/groups), or into `delayed`, scored by the Redis time it is due.
-- A task whose id is live (waiting, delayed or in flight) is skipped: a task of the caller's chosen
-- id is added once, and so is a push that a client sends again after a reconnection.
--
-- KEYS[1] tasks (hash)
-- KEYS[2] waiting list
-- KEYS[3] delayed set
-- ARGV[1] key base (`prefix:{queue}:v2:`), for the keys of the groups and of the wake-up tokens
-- ARGV[2...] for each task four values: its id, its message, its delay in ms, its group ('' for none)
-- Returns how many tasks were added. A task due now wakes an idle consumer (see scripts/lib/wake).
-- @include now-ms
-- @include tombstones
-- @include wake
-- @include groups
local now, G = nil, nil
local added = 0
-- A task without a group went onto `waiting` (a grouped one wakes as its group enters the turns).
local due = false
for i = 2, #ARGV, 4 do
  local id, group = ARGV[i], ARGV[i + 3]
  if redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
    local delay = tonumber(ARGV[i + 2])
    if group ~= '' then
      G = G or groupKeysOf(ARGV[1])
      redis.call('HSET', G.of, id, group)
    end
    if delay > 0 then
      now = now or nowMs()
      redis.call('ZADD', KEYS[3], now + delay, id)
    elseif group ~= '' then
      pushToGroup(G, group, id, 'LPUSH')
    else
      redis.call('LPUSH', KEYS[2], id)
      due = true
    end
    added = added + 1
  end
end
if due then wakeOne(ARGV[1] .. 'wake') end
return added
