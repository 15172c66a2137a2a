-- If anyone is queued behind held request ARGV[1], moves it to the back as request
-- ARGV[3] of session ARGV[2] under a new token and publishes on channel ARGV[4].
-- Answers {'kept'}, {'holds', token}, {'waits', token, wake_ms} or {'gone'}.
sweep()
local rank = redis.call('ZRANK', queue, ARGV[1])
if rank == false then
  return {'gone'}
end
if redis.call('ZCARD', queue) == rank + 1 then
  return {'kept'}
end
local ask = redis.call('HGET', asks, ARGV[1])
redis.call('ZREM', queue, ARGV[1])
redis.call('HDEL', asks, ARGV[1])
local token = next_token()
local id = ARGV[2] .. ':' .. ARGV[3]
redis.call('ZADD', queue, token, id)
redis.call('HSET', asks, id, ask)
redis.call('PUBLISH', ARGV[4], '')
local where, wake = standing(id)
return {where, token, wake or -1}
