-- rate-limit: a queue's rate limit as a sliding log. `log` is a list of the Redis times (ms) at
-- which the latest tries started, newest first, at most `max` of them: another try may start
-- while fewer than `max` of them are less than `windowMs` old. `now` is the server's clock.

-- How many tries may start now; when none may, also in how many ms one may.
local function rateRoom (log, max, windowMs, now)
  -- A start after `now` means the clock went back (a failover onto a server of another time):
  -- the log is forgotten rather than let it hold the queue up until the clock catches up.
  local newest = redis.call('LINDEX', log, 0)
  if newest and tonumber(newest) > now then redis.call('DEL', log) end
  while true do
    local oldest = redis.call('LINDEX', log, -1)
    if not oldest or tonumber(oldest) > now - windowMs then break end
    redis.call('RPOP', log)
  end
  local room = max - redis.call('LLEN', log)
  if room > 0 then return room, 0 end
  -- The max-th newest start has to leave the window before one more fits.
  return 0, tonumber(redis.call('LINDEX', log, max - 1)) + windowMs - now
end

-- Logs `count` starts at `now`; the log outlives the window by nothing.
local function rateRecord (log, count, max, windowMs, now)
  for _ = 1, count do redis.call('LPUSH', log, now) end
  redis.call('LTRIM', log, 0, max - 1)
  redis.call('PEXPIRE', log, windowMs)
end
