-- now-ms: the Redis server's clock in milliseconds. Every instance reads the same clock, so a
-- delay scored with it falls due at the same moment for all of them, whatever their own clocks say.
local function nowMs ()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
