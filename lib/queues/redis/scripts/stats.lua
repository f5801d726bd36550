-- stats: the queue's figures, from the sizes of its keys: no list is walked. The tombstones at the
-- consuming ends are taken off first (a reservation would skip them anyway), so that the entry
-- there is the next task to run, whose eta tells how long it has been due.
--
-- KEYS[1] waiting list
-- KEYS[2] recovered list
-- KEYS[3] delayed set
-- KEYS[4] tasks in flight (hash)
-- KEYS[5] dead list
-- KEYS[6] paused flag
-- KEYS[7] cancelled entries (hash)
-- KEYS[8] tasks (hash)
-- ARGV    none
-- Returns { waiting, delayed, in flight, dead, paused (0 or 1), eta of the next task to run or '' }.
-- @include tombstones
dropLeadingTombstones(KEYS[2], KEYS[7])
dropLeadingTombstones(KEYS[1], KEYS[7])
local head = redis.call('LINDEX', KEYS[2], -1) or redis.call('LINDEX', KEYS[1], -1)
local eta = ''
if head then
  -- The eta as a string: a Lua number would reach the client cut to an integer. Header values and
  -- the payload are JSON strings, whose quotes are escaped: the first `"eta":<number>` is the field.
  eta = string.match(redis.call('HGET', KEYS[8], head) or '', '"eta":(%-?[%d%.eE+]+)') or ''
end
return {
  redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) - tombstoneCount(KEYS[7]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('HLEN', KEYS[4]),
  redis.call('LLEN', KEYS[5]),
  redis.call('EXISTS', KEYS[6]),
  eta
}
