-- add: puts tasks into the queue, in order: each message is stored once in `tasks`, by id, and its
-- id is pushed onto `waiting` when it is due, or into `delayed`, scored by the Redis time it is due.
-- A task whose id is live (waiting, delayed or in flight) is skipped: a task of the caller's chosen
-- id is added once, and so is a push that a client sends again after a reconnection.
--
-- KEYS[1] tasks (hash)
-- KEYS[2] waiting list
-- KEYS[3] delayed set
-- ARGV    for each task three values: its id, its message, its delay in ms
-- Returns how many tasks were added.
-- @include now-ms
local now = nil
local added = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[1], id, ARGV[i + 1]) == 1 then
    local delay = tonumber(ARGV[i + 2])
    if delay > 0 then
      now = now or nowMs()
      redis.call('ZADD', KEYS[3], now + delay, id)
    else
      redis.call('LPUSH', KEYS[2], id)
    end
    added = added + 1
  end
end
return added
