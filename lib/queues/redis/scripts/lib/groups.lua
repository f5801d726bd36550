-- groups: the tasks of a group wait in `group:<name>` (pushed on the left, reserved from the right);
-- the groups that have waiting tasks and room take turns in `group-turns` (the next on the right),
-- where `*` stands for the turn of the tasks without a group (in `waiting`) while any group takes
-- turns. A group at its limit waits in the set `group-full` until one of its tasks leaves flight.
-- `group-inflight` counts each group's tasks in flight, `group-of` holds the group of every live
-- grouped task, and `group-waiting` counts the entries of all group lists (tombstones included).
-- Needs the tombstones and wake snippets.
local groupTurnOfUngrouped = '*'

local function groupKeysOf (base)
  return {
    base = base, waiting = base .. 'waiting', cancelled = base .. 'cancelled', recovered = base .. 'recovered',
    turns = base .. 'group-turns', full = base .. 'group-full', inflight = base .. 'group-inflight',
    of = base .. 'group-of', count = base .. 'group-waiting', wake = base .. 'wake'
  }
end

local function groupList (G, name)
  return G.base .. 'group:' .. name
end

-- The entry of a cancelled task in a group list is counted under `<id>@<group>` in `cancelled`:
-- the same id may wait in another list, which is reserved from in another order.
local function groupTombstone (id, name)
  return id .. '@' .. name
end

-- The group takes turns again (or for the first time), after every line that has one now: its
-- next task can be reserved, so an idle consumer is woken.
local function enterTurns (G, name)
  if redis.call('LLEN', G.turns) == 0 then redis.call('LPUSH', G.turns, groupTurnOfUngrouped) end
  redis.call('LPUSH', G.turns, name)
  wakeOne(G.wake)
end

-- Puts a task of group `name` into its list: at the back (`push` LPUSH) or, released, at the
-- consuming end (RPUSH). A group whose list was empty takes turns, unless it waits at its limit.
local function pushToGroup (G, name, id, push)
  local length = redis.call(push, groupList(G, name), id)
  redis.call('INCR', G.count)
  if length == 1 and redis.call('SISMEMBER', G.full, name) == 0 then enterTurns(G, name) end
end

-- A task leaves flight (settled, recovered or released): its group has room again, and takes turns
-- again if it waited at its limit. `forget`: the task is gone for good. Returns its group, if any.
local function leaveGroup (G, id, forget)
  local name = redis.call('HGET', G.of, id)
  if not name then return nil end
  if forget then redis.call('HDEL', G.of, id) end
  if redis.call('HINCRBY', G.inflight, name, -1) <= 0 then redis.call('HDEL', G.inflight, name) end
  if redis.call('SREM', G.full, name) == 1 then enterTurns(G, name) end
  return name
end
