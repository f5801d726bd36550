-- heartbeat: announces a live consumer: registers it in the consumer set and renews its
-- heartbeat key, which expires unless renewed.
--
-- KEYS[1] consumer set
-- KEYS[2] heartbeat key of the consumer
-- KEYS[3] recovered list
-- ARGV[1] consumer id
-- ARGV[2] heartbeat lifetime in ms
-- Returns how many recovered tasks wait: an idle consumer blocked on its wake-up tokens may have
-- missed the one of a recovery (a lost token), and learns of them here.
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[2]))
return redis.call('LLEN', KEYS[3])
