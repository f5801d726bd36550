-- add: puts the tasks of one response into the queue, in order. Each is either due (pushed onto
-- `waiting`) or delayed (into `delayed`, scored by the Redis time it is due). A named task whose
-- id is live is skipped. Used when some task is delayed or named; otherwise a plain LPUSH does.
--
-- KEYS[1] waiting list
-- KEYS[2] delayed set
-- KEYS[3] live task names (set)
-- ARGV    for each task three values: the message, its delay in ms, its name or ''
-- Returns how many tasks were added.
-- @include now-ms
local now = nowMs()
local added = 0
for i = 1, #ARGV, 3 do
  local name = ARGV[i + 2]
  if name == '' or redis.call('SADD', KEYS[3], name) == 1 then
    local delay = tonumber(ARGV[i + 1])
    if delay > 0 then
      redis.call('ZADD', KEYS[2], now + delay, ARGV[i])
    else
      redis.call('LPUSH', KEYS[1], ARGV[i])
    end
    added = added + 1
  end
end
return added
