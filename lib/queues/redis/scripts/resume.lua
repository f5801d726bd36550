-- resume: lifts the pause of the queue, and wakes an idle consumer: one that was blocked before the
-- pause never learnt of it, and tasks may have come meanwhile. The consumers that saw the pause ask
-- again once a second by themselves (or at once, in the instance that resumes).
--
-- KEYS[1] paused flag
-- ARGV[1] key base (`prefix:{queue}:v2:`), for the wake-up tokens
-- Returns 1 when the queue was paused, else 0.
-- @include wake
local was = redis.call('DEL', KEYS[1])
wakeOne(ARGV[1] .. 'wake')
return was
