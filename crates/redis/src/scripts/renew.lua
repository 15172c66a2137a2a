-- Keeps session ARGV[1] alive for this name for ARGV[2] ms more, drops its ghost requests
-- ARGV[4] (numbers, space-separated: withdrawn while a script that may queue them was
-- under way) and checks that its requests ARGV[3] are there. Answers {'renewed', numbers
-- of ARGV[3] missing...}, or {'lapsed'} if it had lapsed here already (its requests here
-- are gone: its holds were lost). Also forgets the marks of sessions that lapsed.
local session = ARGV[1]
if life_of(session) <= now then
  live_requests()
  return {'lapsed'}
end
renew(session, ARGV[2])
local dropped = false
for n in string.gmatch(ARGV[4], '%d+') do
  local id = session .. ':' .. n
  if redis.call('ZREM', queue, id) == 1 then
    redis.call('HDEL', asks, id)
    dropped = true
  end
end
if dropped and redis.call('ZCARD', queue) > 0 then
  redis.call('PUBLISH', channel, '')
end
local marks = redis.call('HGETALL', sessions)
for i = 1, #marks, 2 do
  if tonumber(marks[i + 1]) <= now then
    redis.call('HDEL', sessions, marks[i])
  end
end
local answer = {'renewed'}
for n in string.gmatch(ARGV[3], '%d+') do
  local id = session .. ':' .. n
  if not redis.call('ZSCORE', queue, id) or redis.call('HEXISTS', asks, id) == 0 then
    answer[#answer + 1] = n
  end
end
return answer
