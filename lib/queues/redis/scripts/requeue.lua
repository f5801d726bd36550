-- requeue: puts one dead letter's task back into the waiting list, unless another client took it
-- first or it is a named task whose name is live (then it stays dead: two live tasks never share
-- a name).
--
-- KEYS[1] dead list
-- KEYS[2] waiting list
-- KEYS[3] live task names (set)
-- ARGV[1] the dead letter, exactly as stored
-- ARGV[2] the message to run
-- ARGV[3] its name, or ''
-- Returns 1, or 0 when it stayed where it was.
if ARGV[3] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 then return 0 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('SADD', KEYS[3], ARGV[3]) end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
