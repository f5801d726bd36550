-- ack-and-reserve: acknowledges a batch of reserved tasks and reserves up to a count of new ones,
-- in one round trip: what a busy consumer does between two batches of tasks.
--
-- Recovered tasks (the `recovered` list) go first, and one at a time: each may be what killed its
-- expired consumer, so it runs alone, in a consumer that holds nothing else once the
-- acknowledgements of this call are done, and a crash then counts against it alone. A consumer
-- that still holds tasks gets none while recovered tasks wait: it finishes them first, then takes one.
-- While the queue is paused, nothing is reserved (the acknowledgements still are).
--
-- Tasks of a group wait in their group's list, and the groups take turns (see scripts/lib/groups):
-- each reservation takes the next task of the next group with room, the tasks without a group taking
-- their turn as one group; a group at its limit is set aside until one of its tasks leaves flight.
-- While no grouped task lives and no group takes turns (the one check), the reservation is as it was.
--
-- With a rate limit (ARGV[4] > 0), no more tasks are reserved than its window has room for, a
-- recovered one included, and each is logged as a start in the rate log (see rate-limit.lua):
-- at most ARGV[4] starts within any ARGV[5] ms of the server's clock, across every consumer.
--
-- A reservation that leaves tasks reservable behind it wakes one idle consumer (see
-- scripts/lib/wake), which does the same in turn: a backlog spreads over the idle consumers one
-- wake-up at a time, instead of waking them all at once. Not when the rate limit's window is full.
--
-- A consumer that reserves registers itself, as its heartbeat does: recovery looks only at
-- registered consumers, and a consumer may reserve while missing from the set (Redis restarted
-- empty, a failover that lost the registration) and expire before its next beat.
--
-- KEYS[1] processing list of the consumer
-- KEYS[2] waiting list
-- KEYS[3] tasks (hash)
-- KEYS[4] tasks in flight (hash)
-- KEYS[5] cancelled entries (hash)
-- KEYS[6] recovery counts (hash)
-- KEYS[7] consumer set
-- KEYS[8] heartbeat key of the consumer
-- KEYS[9] recovered list
-- KEYS[10] paused flag
-- KEYS[11] rate log: start times (ms) of the latest tries, newest first (rate limit only)
-- ARGV[1] how many tasks to reserve
-- ARGV[2] consumer id
-- ARGV[3] heartbeat lifetime in ms
-- ARGV[4] the rate limit's max starts per window, or 0 for no limit
-- KEYS[12] group of each live grouped task (hash)
-- ARGV[5] the rate limit's window in ms
-- ARGV[6] key base (`prefix:{queue}:v2:`), for the keys of the groups and of the wake-up tokens
-- ARGV[7] most tasks of one group in flight (0: no limit)
-- ARGV[8...] ids of the tasks to acknowledge
-- Returns the kind of reservation, then for each reserved task its id and its message, oldest
-- first: 'batch' and up to the count asked (fewer when the queue ran out), 'recovered' and one
-- recovered task, 'finishing' and none, or 'paused' and none; or 'limited', the ms until the
-- window has room again (as a string), then the tasks reserved before it filled (maybe none).
-- @include tombstones
-- @include now-ms
-- @include rate-limit
-- @include wake
-- @include groups
-- Grouped tasks live, or groups take turns (with tombstones left to drop): one check of both.
local G = redis.call('EXISTS', KEYS[12], ARGV[6] .. 'group-turns') > 0 and groupKeysOf(ARGV[6]) or nil
for i = 8, #ARGV do
  -- A task no longer in the list went back to the queue (or this is a second run of the call):
  -- its message and recovery count still belong to it.
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    if G then leaveGroup(G, ARGV[i], true) end
    redis.call('HDEL', KEYS[3], ARGV[i])
    redis.call('HDEL', KEYS[4], ARGV[i])
    redis.call('HDEL', KEYS[6], ARGV[i])
  end
end
local count = tonumber(ARGV[1])
if count == 0 then return { 'batch' } end
if redis.call('EXISTS', KEYS[10]) == 1 then return { 'paused' } end
local rateMax, rateWindow, now, rateLeft = tonumber(ARGV[4]), tonumber(ARGV[5]), nil, nil
if rateMax > 0 then
  now = nowMs()
  local waitMs
  rateLeft, waitMs = rateRoom(KEYS[11], rateMax, rateWindow, now)
  if rateLeft == 0 then return { 'limited', tostring(waitMs) } end
  count = math.min(count, rateLeft)
end
local reply = { 'batch' }
-- Read once: with no tombstone at all (the common case), no entry needs looking up.
local tombstones = tombstoneCount(KEYS[5]) > 0
-- Moves one task of `list` into the processing list, skipping tombstones; false when none is left.
-- `group`: the group whose list it is.
local function reserveFrom (list, group)
  while true do
    local id = redis.call('RPOP', list)
    if not id then return false end
    if group then redis.call('DECR', G.count) end
    local message = redis.call('HGET', KEYS[3], id)
    -- Checked first: the id may be live again, added after its cancel, behind its tombstone.
    if not (tombstones and takeTombstone(KEYS[5], group and groupTombstone(id, group) or id)) and message then
      redis.call('LPUSH', KEYS[1], id)
      redis.call('HSET', KEYS[4], id, ARGV[2])
      reply[#reply + 1] = id
      reply[#reply + 1] = message
      return true
    end
  end
end
local limit = tonumber(ARGV[7])
-- Up to `count` tasks, a group at a time in turn. Each step serves a task, or takes a group out of
-- the turns (drained, or set aside at its limit), or passes the turn of the tasks without a group,
-- which leaves the turns once it is alone there: the loop ends.
local function reserveInTurn ()
  local got = 0
  while got < count do
    local turn = redis.call('RPOP', G.turns)
    if not turn then break end
    if turn == groupTurnOfUngrouped then
      if redis.call('LLEN', G.turns) > 0 then redis.call('LPUSH', G.turns, turn) end
      if reserveFrom(KEYS[2]) then got = got + 1 end
    else
      local inFlight = tonumber(redis.call('HGET', G.inflight, turn) or '0')
      if limit > 0 and inFlight >= limit then
        redis.call('SADD', G.full, turn)
      else
        local list = groupList(G, turn)
        if reserveFrom(list, turn) then
          got = got + 1
          redis.call('HINCRBY', G.inflight, turn, 1)
          if redis.call('LLEN', list) > 0 then
            if limit > 0 and inFlight + 1 >= limit then redis.call('SADD', G.full, turn) else redis.call('LPUSH', G.turns, turn) end
          end
        end
      end
    end
  end
  -- No group can be served now: the tasks without a group fill the rest.
  while got < count and reserveFrom(KEYS[2]) do got = got + 1 end
  -- The turn of the tasks without a group, alone in the turns, stands for no group: taken out now
  -- rather than by the next reservation, so that it wakes no consumer for nothing meanwhile.
  if redis.call('LLEN', G.turns) == 1 and redis.call('LINDEX', G.turns, 0) == groupTurnOfUngrouped then redis.call('DEL', G.turns) end
end
dropLeadingTombstones(KEYS[9], KEYS[5])
if redis.call('LLEN', KEYS[9]) > 0 then
  if redis.call('LLEN', KEYS[1]) > 0 then
    -- This consumer may have been woken for the recovered task it cannot take yet: the token goes
    -- on to a consumer that holds nothing (this one stops blocking until its tasks are done).
    wakeOne(ARGV[6] .. 'wake')
    return { 'finishing' }
  end
  -- Only a stray id (a task of no message) would leave none: then nothing is held up.
  reply[1] = reserveFrom(KEYS[9]) and 'recovered' or 'batch'
  -- Its group's slot, given back when it was recovered, is taken again (see recover).
  local group = G and #reply > 1 and redis.call('HGET', G.of, reply[2])
  if group then redis.call('HINCRBY', G.inflight, group, 1) end
elseif G then
  reserveInTurn()
else
  for _ = 1, count do
    if not reserveFrom(KEYS[2]) then break end
  end
end
-- Registered by its heartbeat as a rule: the set and the key are written here only when missing.
if #reply > 1 and (redis.call('SADD', KEYS[7], ARGV[2]) == 1 or redis.call('EXISTS', KEYS[8]) == 0) then
  redis.call('SET', KEYS[8], '1', 'PX', tonumber(ARGV[3]))
end
-- A batch that came back short drained what could be reserved, and `recovered` was empty before a
-- batch: only a full batch looks at what it left, a recovered task at every list.
local got = (#reply - 1) / 2
if got > 0 and not (rateMax > 0 and got == rateLeft) then
  local left
  if reply[1] == 'recovered' then
    left = workMayWait(ARGV[6])
  else
    left = got == count and (redis.call('LLEN', KEYS[2]) > 0 or (G ~= nil and redis.call('LLEN', G.turns) > 0))
  end
  if left then wakeOne(ARGV[6] .. 'wake') end
end
-- An acknowledgement that frees a group's slot wakes a consumer for the group's next task (see
-- leaveGroup), which this call may have reserved itself: with nothing left, no token stays.
if G and #ARGV >= 8 and not workMayWait(ARGV[6]) then redis.call('DEL', G.wake) end
if rateMax > 0 and #reply > 1 then
  rateRecord(KEYS[11], got, rateMax, rateWindow, now)
  -- A batch that filled the window says when it has room, so the consumer waits without asking.
  if got == rateLeft and reply[1] == 'batch' then
    local _, waitMs = rateRoom(KEYS[11], rateMax, rateWindow, now)
    table.insert(reply, 2, tostring(waitMs))
    reply[1] = 'limited'
  end
end
return reply
