-- Gives back (or withdraws) request ARGV[1]; if anyone is left, publishes on channel
-- ARGV[2] who holds now ('h id id…', at most the first 64; '' when more may hold, and every
-- waiter looks for itself). Answers 1, or 0 if the request was not there. (Without the
-- prelude: it needs neither the clock nor the sessions' marks; a holder whose session
-- lapsed but was not yet swept still holds here, as it does in every script.)
local queue, asks = KEYS[1], KEYS[2]
if redis.call('ZREM', queue, ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', asks, ARGV[1])
local ids = redis.call('ZRANGE', queue, 0, 64)
if #ids == 0 then
  return 1
end
local message, used = {'h'}, 0
for i, id in ipairs(ids) do
  local permits, capacity = string.match(redis.call('HGET', asks, id) or '', '^(%d+) (%d+)')
  if not permits or i == 65 then
    -- A malformed request (the next script drops it), or more holders than listed.
    message = {''}
    break
  end
  used = used + tonumber(permits)
  if used > tonumber(capacity) then
    break
  end
  message[#message + 1] = id
end
redis.call('PUBLISH', ARGV[2], table.concat(message, ' '))
return 1
