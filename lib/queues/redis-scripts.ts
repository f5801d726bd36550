// The Lua scripts of the Redis queue: every state change that touches more than one key runs in
// one of them, so no other client ever sees a task in two places or in none.
//
// Keys of a queue share the hash tag `{queue}` (see keysOf in redis.ts), so a Redis Cluster keeps
// them in one slot. Keys derived inside a script (`base .. 'processing:' .. id`) carry the same tag.

/**
 * Acknowledges a batch of reserved tasks and reserves up to a count of new ones, in one round trip:
 * what a busy consumer does between two batches of tasks.
 *
 * Tasks recovered from dead consumers (the `recovered` list) go first, and one at a time: each may
 * be what killed its consumer, so it runs alone in a consumer that holds nothing else (after the
 * acknowledgements of this call), and a crash then counts against it alone. A consumer that still
 * holds tasks gets nothing while recovered tasks wait: it drains, then takes one.
 *
 * A consumer that takes tasks registers itself, as its heartbeat does: recovery looks only at
 * registered consumers, and a consumer may reserve while missing from the set (Redis restarted
 * empty, a failover that lost the registration) and die before its next beat.
 * KEYS[1] processing list of the consumer, KEYS[2] waiting list, KEYS[3] recovery counts (hash),
 * KEYS[4] live task names, KEYS[5] consumer set, KEYS[6] heartbeat key of the consumer,
 * KEYS[7] recovered list
 * ARGV[1] how many tasks to reserve, ARGV[2] consumer id, ARGV[3] heartbeat lifetime in ms, then
 * pairs of (reserved string, task id) to acknowledge
 * Returns the mode, then the reserved messages, oldest first: 'take' and up to the count asked
 * (fewer when the queue ran out), 'recovered' and one recovered task, or 'drain' and none.
 */
export const ackAndTakeScript = `
for i = 4, #ARGV, 2 do
  -- A task no longer in the list went back to the queue (or this is a second run of the call):
  -- its recovery count and its name still belong to it.
  if redis.call('LREM', KEYS[1], -1, ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[3], ARGV[i + 1])
    redis.call('SREM', KEYS[4], ARGV[i + 1])
  end
end
local take = tonumber(ARGV[1])
if take == 0 then return { 'take' } end
local reply = { 'take' }
if redis.call('LLEN', KEYS[7]) > 0 then
  if redis.call('LLEN', KEYS[1]) > 0 then return { 'drain' } end
  reply = { 'recovered', redis.call('LMOVE', KEYS[7], KEYS[1], 'RIGHT', 'LEFT') }
else
  for i = 1, take do
    local message = redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT')
    if not message then break end
    reply[i + 1] = message
  end
end
-- Registered by its heartbeat as a rule: the set and the key are written here only when missing.
if #reply > 1 and (redis.call('SADD', KEYS[5], ARGV[2]) == 1 or redis.call('EXISTS', KEYS[6]) == 0) then
  redis.call('SET', KEYS[6], '1', 'PX', tonumber(ARGV[3]))
end
return reply
`

/**
 * Gives a reserved task back to the consuming end of the waiting list, unchanged.
 * KEYS[1] processing list, KEYS[2] waiting list
 * ARGV[1] the reserved string
 */
export const releaseScript = `
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
`

/**
 * Schedules a reserved task to run again: it leaves the processing list and waits in the delayed
 * set, scored by the Redis time (ms) at which it is due, so that every instance agrees on it.
 * KEYS[1] processing list, KEYS[2] delayed set
 * ARGV[1] the reserved string, ARGV[2] the message to run again, ARGV[3] delay in ms
 */
export const retryScript = `
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], nowMs + tonumber(ARGV[3]), ARGV[2])
return 1
`

/**
 * Moves due tasks of the delayed set to the back of the waiting list, oldest due first.
 * KEYS[1] delayed set, KEYS[2] waiting list
 * ARGV[1] most tasks to move at once
 * Returns the ms until the next task is due, or -1 when none waits.
 */
export const promoteScript = `
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowMs, 'LIMIT', 0, tonumber(ARGV[1]))
for _, task in ipairs(due) do
  redis.call('ZREM', KEYS[1], task)
  redis.call('LPUSH', KEYS[2], task)
end
local nextDue = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nextDue[2] == nil then return -1 end
return math.max(0, tonumber(nextDue[2]) - nowMs)
`

/**
 * Announces a live consumer: registers it and renews its heartbeat.
 * KEYS[1] consumer set, KEYS[2] heartbeat key of the consumer, KEYS[3] recovered list
 * ARGV[1] consumer id, ARGV[2] heartbeat lifetime in ms
 * Returns how many recovered tasks wait: an idle consumer blocks on the waiting list only, and
 * learns of them here.
 */
export const heartbeatScript = `
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[2]))
return redis.call('LLEN', KEYS[3])
`

/**
 * Returns the tasks of a processing list that its consumer does not know it reserved to the
 * consuming end of the waiting list, in the order they were reserved; the known ones stay. A task
 * known twice (two identical messages) keeps two copies. With none known (a consumer that stops),
 * every task goes back. A task with a recovery count goes back to the recovered list instead, so
 * that it still runs alone (a recovered task whose reservation's reply was lost, say).
 * KEYS[1] processing list, KEYS[2] waiting list, KEYS[3] recovery counts, KEYS[4] recovered list
 * ARGV the reserved strings the consumer holds
 * Returns how many tasks moved.
 */
export const returnUnknownScript = `
local known = {}
for i = 1, #ARGV do known[ARGV[i]] = (known[ARGV[i]] or 0) + 1 end
local held = redis.call('LRANGE', KEYS[1], 0, -1)
local moved = 0
-- Newest first (reservations enter at the head), each pushed onto the consuming end: the oldest
-- ends up first in line.
for i = 1, #held do
  local task = held[i]
  local count = known[task]
  if count ~= nil and count > 0 then
    known[task] = count - 1
  else
    redis.call('LREM', KEYS[1], 1, task)
    local ok, decoded = pcall(cjson.decode, task)
    local recovered = ok and type(decoded) == 'table' and type(decoded.id) == 'string' and redis.call('HEXISTS', KEYS[3], decoded.id) == 1
    redis.call('RPUSH', recovered and KEYS[4] or KEYS[2], task)
    moved = moved + 1
  end
end
return moved
`

/**
 * Recovers the tasks of consumers whose heartbeat expired, under a lease so that one instance at a
 * time does it. They go to the recovered list, oldest first, from which each is reserved alone
 * (see ackAndTakeScript). A task recovered more than ARGV[4] times is a poison pill: it is set
 * aside in the dead list instead of being run again.
 * KEYS[1] consumer set, KEYS[2] recovered list, KEYS[3] dead list, KEYS[4] recovery counts (hash),
 * KEYS[5] lease key, KEYS[6] live task names
 * ARGV[1] key base (`prefix:{queue}:`), ARGV[2] lease holder, ARGV[3] lease ms,
 * ARGV[4] most recoveries of a task, ARGV[5] this consumer's id, skipped, ARGV[6] most dead letters kept
 * Returns { recovered, set aside }, or { -1, 0 } when another instance holds the lease.
 */
export const recoverScript = `
if not redis.call('SET', KEYS[5], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then return { -1, 0 } end
local recovered, setAside = 0, 0
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
for _, consumer in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if consumer ~= ARGV[5] and redis.call('EXISTS', ARGV[1] .. 'heartbeat:' .. consumer) == 0 then
    local processing = ARGV[1] .. 'processing:' .. consumer
    while true do
      -- Oldest first: reservations enter at the head.
      local task = redis.call('RPOP', processing)
      if not task then break end
      local ok, decoded = pcall(cjson.decode, task)
      local id = (ok and type(decoded) == 'table' and type(decoded.id) == 'string') and decoded.id or task
      local count = redis.call('HINCRBY', KEYS[4], id, 1)
      if count > tonumber(ARGV[4]) then
        redis.call('HDEL', KEYS[4], id)
        redis.call('SREM', KEYS[6], id)
        redis.call('LPUSH', KEYS[3], cjson.encode({ reason = 'recovered too often', detail = 'its consumer died ' .. count .. ' times while running it', at = nowMs, task = task }))
        -- LTRIM 0 -1 would keep everything: deadLetterMax 0 keeps nothing.
        if tonumber(ARGV[6]) > 0 then redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1) else redis.call('DEL', KEYS[3]) end
        setAside = setAside + 1
      else
        redis.call('LPUSH', KEYS[2], task)
        recovered = recovered + 1
      end
    end
    redis.call('SREM', KEYS[1], consumer)
  end
end
return { recovered, setAside }
`

/**
 * Pushes the tasks of one response, in order: each is either due (onto `waiting`) or delayed
 * (into `delayed`, at Redis time + its delay). A named task whose id is live is skipped.
 * KEYS[1] waiting list, KEYS[2] delayed set, KEYS[3] live task names (set)
 * ARGV: for each task three values: the message, its delay in ms, its name or ''.
 * Returns how many tasks were pushed.
 */
export const enqueueScript = `
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local pushed = 0
for i = 1, #ARGV, 3 do
  local name = ARGV[i + 2]
  if name == '' or redis.call('SADD', KEYS[3], name) == 1 then
    local delay = tonumber(ARGV[i + 1])
    if delay > 0 then
      redis.call('ZADD', KEYS[2], nowMs + delay, ARGV[i])
    else
      redis.call('LPUSH', KEYS[1], ARGV[i])
    end
    pushed = pushed + 1
  end
end
return pushed
`

/**
 * Sets a reserved (or unreadable) message aside in the dead list, which keeps its newest entries,
 * unless it is no longer in the processing list (given back to the queue meanwhile, or this very
 * call run a second time by a client after a reconnection): a task is never both dead and alive,
 * nor dead twice.
 * KEYS[1] processing list, KEYS[2] dead list, KEYS[3] live task names, KEYS[4] recovery counts
 * ARGV[1] the reserved string, ARGV[2] the dead letter entry, ARGV[3] task id (or ''),
 * ARGV[4] most dead letters kept
 * Returns 1, or 0 when the message was not in the processing list.
 */
export const buryScript = `
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
-- LTRIM 0 -1 would keep everything: deadLetterMax 0 keeps nothing, as on a local queue.
if tonumber(ARGV[4]) > 0 then redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1) else redis.call('DEL', KEYS[2]) end
if ARGV[3] ~= '' then
  redis.call('SREM', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
end
return 1
`

/**
 * Puts one dead letter back into the queue, unless another client took it first or it is a named
 * task whose name is live (then it stays dead: two live tasks never share a name).
 * KEYS[1] dead list, KEYS[2] waiting list, KEYS[3] live task names
 * ARGV[1] the dead letter entry, ARGV[2] the message to run, ARGV[3] its name or ''
 */
export const requeueDeadScript = `
if ARGV[3] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('SADD', KEYS[3], ARGV[3]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
`

/**
 * Drops up to a count of waiting tasks (recovered, due, then delayed) with their names and
 * recovery counts; the tasks in flight keep theirs. Called until it drops fewer than asked, so
 * that a long queue never holds Redis up in one script.
 * KEYS[1] waiting list, KEYS[2] recovered list, KEYS[3] delayed set, KEYS[4] live task names,
 * KEYS[5] recovery counts
 * ARGV[1] most tasks to drop
 * Returns how many were dropped.
 */
export const resetScript = `
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
  local ok, decoded = pcall(cjson.decode, message)
  if ok and type(decoded) == 'table' and type(decoded.id) == 'string' then
    redis.call('SREM', KEYS[4], decoded.id)
    redis.call('HDEL', KEYS[5], decoded.id)
  end
end
return #dropped
`
