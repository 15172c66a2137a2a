-- If anyone is queued behind held request ARGV[1], moves it to the back as request
-- ARGV[3] of session ARGV[2] under a new token and publishes on the name's channel.
-- Answers {'kept'}, {'holds', token}, {'waits', token, wake_ms} or {'gone'}.
local live, at = live_requests(), nil
for i, request in ipairs(live) do
  if request[1] == ARGV[1] then
    at = i
  end
end
if at == nil then
  return {'gone'}
end
if at == #live then
  return {'kept'}
end
local moved = table.remove(live, at)
local ask = redis.call('HGET', asks, ARGV[1])
redis.call('ZREM', queue, ARGV[1])
redis.call('HDEL', asks, ARGV[1])
local token = next_token()
local id = ARGV[2] .. ':' .. ARGV[3]
redis.call('ZADD', queue, token, id)
redis.call('HSET', asks, id, ask)
live[#live + 1] = {id, moved[2], moved[3], moved[4]}
publish_holders(live)
local where, wake = standing(live, id)
return {where, token, wake or -1}
