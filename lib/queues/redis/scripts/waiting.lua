-- waiting: a page of the tasks due now, next to run first: the recovered ones, then the waiting
-- ones, each list from its consuming end, tombstones skipped. It reads no more entries than the
-- page's end plus the tombstones there are.
--
-- KEYS[1] recovered list
-- KEYS[2] waiting list
-- KEYS[3] tasks (hash)
-- KEYS[4] cancelled entries (hash)
-- ARGV[1] how many tasks to skip
-- ARGV[2] most tasks given
-- Returns for each task its id and its message.
-- @include tombstones
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local reply = {}
local tombstones = tombstoneCount(KEYS[4])
local wanted = offset + limit + tombstones
-- Per id, the tombstones still to meet: the first entries of an id met are its tombstones.
local left = {}
local skipped = 0
for _, list in ipairs({ KEYS[1], KEYS[2] }) do
  local count = math.min(wanted, redis.call('LLEN', list))
  -- LRANGE from -0 would read the whole list.
  local entries = count > 0 and redis.call('LRANGE', list, -count, -1) or {}
  wanted = wanted - count
  for i = #entries, 1, -1 do
    if #reply >= 2 * limit then return reply end
    local id = entries[i]
    local tombstone = false
    if tombstones > 0 then
      left[id] = left[id] or tonumber(redis.call('HGET', KEYS[4], id) or '0')
      tombstone = left[id] > 0
      if tombstone then left[id] = left[id] - 1 end
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
end
return reply
