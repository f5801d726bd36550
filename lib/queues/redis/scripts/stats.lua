-- stats: the queue's figures, from the sizes of its keys: no list is walked. The tombstones at the
-- consuming ends are taken off first (a reservation would skip them anyway), so that the entry
-- there is the next task to run of its list. The oldest of those entries, and of the heads of the
-- groups' lists (at most 100 groups taking turns and 100 set aside), tells how long a task has waited.
--
-- KEYS[1] waiting list
-- KEYS[2] recovered list
-- KEYS[3] delayed set
-- KEYS[4] tasks in flight (hash)
-- KEYS[5] dead list
-- KEYS[6] paused flag
-- KEYS[7] cancelled entries (hash)
-- KEYS[8] tasks (hash)
-- ARGV[1] key base (`prefix:{queue}:v2:`), for the keys of the groups
-- Returns { waiting, delayed, in flight, dead, paused (0 or 1), eta of the oldest task waiting or '' }.
-- @include tombstones
-- @include wake
-- @include groups
local G = groupKeysOf(ARGV[1])
dropLeadingTombstones(KEYS[2], KEYS[7])
dropLeadingTombstones(KEYS[1], KEYS[7])
local oldest, eta = nil, ''
local function consider (id)
  if not id then return end
  -- The eta as a string: a Lua number would reach the client cut to an integer. Header values and
  -- the payload are JSON strings, whose quotes are escaped: the first `"eta":<number>` is the field.
  local text = string.match(redis.call('HGET', KEYS[8], id) or '', '"eta":(%-?[%d%.eE+]+)')
  local value = text and tonumber(text)
  if value and (oldest == nil or value < oldest) then oldest, eta = value, text end
end
consider(redis.call('LINDEX', KEYS[2], -1))
consider(redis.call('LINDEX', KEYS[1], -1))
local grouped = tonumber(redis.call('GET', G.count) or '0')
if grouped > 0 then
  local names = redis.call('LRANGE', G.turns, -100, -1)
  for _, name in ipairs(redis.call('SRANDMEMBER', G.full, 100)) do names[#names + 1] = name end
  for _, name in ipairs(names) do
    local head = name ~= groupTurnOfUngrouped and redis.call('LINDEX', groupList(G, name), -1)
    -- A cancelled head is skipped, not dropped: a group list empties only as the turns know.
    if head and not redis.call('HGET', KEYS[7], groupTombstone(head, name)) then consider(head) end
  end
end
return {
  redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + grouped - tombstoneCount(KEYS[7]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('HLEN', KEYS[4]),
  redis.call('LLEN', KEYS[5]),
  redis.call('EXISTS', KEYS[6]),
  eta
}
