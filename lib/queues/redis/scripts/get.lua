-- get: a task by id, live or dead, in a few lookups: its message in `tasks` (then its state: in the
-- delayed set, in flight, or else waiting), or its newest dead letter.
--
-- KEYS[1] tasks (hash)
-- KEYS[2] delayed set
-- KEYS[3] tasks in flight (hash)
-- KEYS[4] dead letters by task id (hash)
-- ARGV[1] the task id
-- Returns { state, message } for a live task, { 'dead', dead letter } for a dead one, or {}.
local message = redis.call('HGET', KEYS[1], ARGV[1])
if message then
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return { 'delayed', message } end
  if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return { 'in-flight', message } end
  return { 'waiting', message }
end
local letter = redis.call('HGET', KEYS[4], ARGV[1])
if letter then return { 'dead', letter } end
return {}
