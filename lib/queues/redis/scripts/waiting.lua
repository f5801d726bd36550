-- waiting: a page of the tasks due now: the recovered ones, then those without a group, then each
-- group's in the order of their turns, then the groups set aside at their limit; each list from its
-- consuming end, tombstones skipped. It reads no more entries than the page's end plus the
-- tombstones there are, and no more groups than that.
--
-- KEYS[1] recovered list
-- KEYS[2] waiting list
-- KEYS[3] tasks (hash)
-- KEYS[4] cancelled entries (hash)
-- ARGV[1] how many tasks to skip
-- ARGV[2] most tasks given
-- ARGV[3] key base (`prefix:{queue}:v2:`), for the keys of the groups
-- Returns for each task its id and its message.
-- @include tombstones
-- @include wake
-- @include groups
local G = groupKeysOf(ARGV[3])
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local reply = {}
local tombstones = tombstoneCount(KEYS[4])
local wanted = offset + limit + tombstones
-- Per tombstone field, the tombstones still to meet: the first entries of an id met in a list are its tombstones.
local left = {}
local skipped = 0
-- Reads one list; true once the page is full.
local function read (list, group)
  local count = math.min(wanted, redis.call('LLEN', list))
  -- LRANGE from -0 would read the whole list.
  local entries = count > 0 and redis.call('LRANGE', list, -count, -1) or {}
  wanted = wanted - count
  for i = #entries, 1, -1 do
    if #reply >= 2 * limit then return true end
    local id = entries[i]
    local tombstone = false
    if tombstones > 0 then
      local field = group and groupTombstone(id, group) or id
      left[field] = left[field] or tonumber(redis.call('HGET', KEYS[4], field) or '0')
      tombstone = left[field] > 0
      if tombstone then left[field] = left[field] - 1 end
    end
    if not tombstone then
      if skipped < offset then
        skipped = skipped + 1
      else
        local message = redis.call('HGET', KEYS[3], id)
        if message then
          reply[#reply + 1] = id
          reply[#reply + 1] = message
        end
      end
    end
  end
  return #reply >= 2 * limit
end
if read(KEYS[1]) or read(KEYS[2]) then return reply end
if tonumber(redis.call('GET', G.count) or '0') == 0 then return reply end
-- Every group listed holds at least one entry: no more groups than entries wanted are read.
local turns = redis.call('LRANGE', G.turns, -(wanted + 1), -1)
for i = #turns, 1, -1 do
  if wanted <= 0 then return reply end
  if turns[i] ~= groupTurnOfUngrouped and read(groupList(G, turns[i]), turns[i]) then return reply end
end
local full = redis.call('SMEMBERS', G.full)
table.sort(full)
for _, name in ipairs(full) do
  if wanted <= 0 then return reply end
  if read(groupList(G, name), name) then return reply end
end
return reply
