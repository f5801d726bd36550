-- add-tick: adds the task of one tick of a schedule, once across every instance that runs the
-- schedule. The queue records, per schedule, the last tick whose task was added; a tick that is
-- not later than the record is refused, so an instance that ticks late (blocked, or its clock
-- behind) adds nothing, even after the tick's task ran and its id is free again. The record moves
-- and the task is added in this one step: no tick is recorded without its task, nor added twice.
-- The task is added as add.lua adds one: skipped when its id is live.
--
-- KEYS[1] schedules (hash: schedule name -> last tick added, ms since the epoch)
-- KEYS[2] tasks (hash)
-- KEYS[3] waiting list
-- KEYS[4] delayed set
-- ARGV[1] schedule name
-- ARGV[2] tick (ms since the epoch)
-- ARGV[3] task id
-- ARGV[4] message
-- ARGV[5] delay in ms (0 when due)
-- ARGV[6] key base (`prefix:{queue}:v2:`), for the wake-up tokens
-- Returns 1 when the tick was recorded (its task added, or live already under its id), 0 when
-- this tick or a later one was recorded before. A task due now wakes an idle consumer.
-- @include now-ms
-- @include wake
local tick = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
if last ~= nil and last >= tick then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 1 then
  local delay = tonumber(ARGV[5])
  if delay > 0 then
    redis.call('ZADD', KEYS[4], nowMs() + delay, ARGV[3])
  else
    redis.call('LPUSH', KEYS[3], ARGV[3])
    wakeOne(ARGV[6] .. 'wake')
  end
end
return 1
