-- Gives back (or withdraws) request ARGV[1]; publishes on channel ARGV[2] if anyone is
-- left. Answers 1, or 0 if the request was not there. (Without the prelude: it needs
-- neither the clock nor the queue's order.)
local queue, asks = KEYS[1], KEYS[2]
if redis.call('ZREM', queue, ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', asks, ARGV[1])
if redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', ARGV[2], '')
end
return 1
