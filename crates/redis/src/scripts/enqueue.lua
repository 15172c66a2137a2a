-- Queues request ARGV[2] of session ARGV[1] for ARGV[3] permits of ARGV[4], asked as
-- ARGV[5] ("pid since_ms host"); with ARGV[6] = '1', only if it holds at once. ARGV[7] is
-- the session's TTL in ms. Answers {'holds', token}, {'waits', token, wake_ms},
-- {'busy'} (a try that would wait) or {'mismatch', capacity in use}.
local session, permits, capacity = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local live = live_requests()
local total = 0
for _, request in ipairs(live) do
  if request[3] ~= capacity then
    return {'mismatch', request[3]}
  end
  total = total + request[2]
end
if ARGV[6] == '1' and total + permits > capacity then
  return {'busy'}
end
local token = next_token()
local id = session .. ':' .. ARGV[2]
redis.call('ZADD', queue, token, id)
redis.call('HSET', asks, id, ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[5])
renew(session, ARGV[7])
if total + permits <= capacity then
  return {'holds', token}
end
live[#live + 1] = {id, permits, capacity, session}
local _, wake = standing(live, id)
return {'waits', token, wake or -1}
