-- What every script of the Redis scope but `release.lua` starts with. KEYS are one name's
-- keys, all of one hash tag (see keys.rs): the queue (a sorted set of request ids by
-- token), what each request asks (a hash: id -> "permits capacity pid since_ms host"), the
-- token counter, and until when each session lives for this name (a hash: session ->
-- server ms). Time is the server's (TIME), never a client's.
local queue, asks, counter, sessions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- The name's channel: the queue's key with `c` for `q`.
local channel = string.sub(queue, 1, -2) .. 'c'

-- Until when each session lives here (server ms; 0 if it has no mark), read once a script.
local lives = {}
local function life_of(session)
  local until_ms = lives[session]
  if until_ms == nil then
    until_ms = tonumber(redis.call('HGET', sessions, session) or '0') or 0
    lives[session] = until_ms
  end
  return until_ms
end

-- Publishes on the name's channel who holds among `live` ('h id id…', as release.lua).
local function publish_holders(live)
  local message, used = {'h'}, 0
  for i, request in ipairs(live) do
    if i > 64 then
      message = {''}
      break
    end
    used = used + request[2]
    if used > request[3] then
      break
    end
    message[#message + 1] = request[1]
  end
  redis.call('PUBLISH', channel, table.concat(message, ' '))
end

-- The live requests in queue order, as {id, permits, capacity}. Deletes on the way the
-- requests of sessions that lapsed, and any whose ask is missing or malformed (keys
-- deleted by hand or evicted); publishes who holds if some went and some are left.
local function live_requests()
  local live, gone = {}, false
  for _, id in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    local session, permits, capacity = string.match(id, '^([^:]+):'), nil, nil
    if session and life_of(session) > now then
      permits, capacity = string.match(redis.call('HGET', asks, id) or '', '^(%d+) (%d+)')
    end
    if permits then
      live[#live + 1] = {id, tonumber(permits), tonumber(capacity), session}
    else
      redis.call('ZREM', queue, id)
      redis.call('HDEL', asks, id)
      gone = true
    end
  end
  if gone and #live > 0 then
    publish_holders(live)
  end
  return live
end

-- Where request `id` stands among `live`, by the one rule of every scope: it holds when
-- the permits of the requests before it plus its own fit the capacity (FIFO, no
-- barging). Answers 'holds', 'waits' (and in how many ms the first session ahead of it
-- lapses unless it renews: when to look again for a holder that died) or 'gone'.
local function standing(live, id)
  local before, wake = 0, nil
  for _, request in ipairs(live) do
    if request[1] == id then
      if before + request[2] <= request[3] then
        return 'holds', nil
      end
      return 'waits', wake
    end
    before = before + request[2]
    local left = lives[request[4]] - now
    if wake == nil or left < wake then
      wake = left
    end
  end
  return 'gone', nil
end

-- The name's next fencing token: the counter plus one, but never below the server's time
-- in ms times 1000, so that tokens keep increasing after a restart that lost the counter
-- (while the server's clock does not go back, and under 1000 grants a ms on average).
-- The counter expires a day after its last use: a counter made again starts at the floor,
-- above every token of before, so that names used once leave no key for good.
local function next_token()
  local token = redis.call('INCR', counter)
  local floor = now * 1000
  if token < floor then
    redis.call('SET', counter, string.format('%.0f', floor))
    token = floor
  end
  redis.call('PEXPIRE', counter, 86400000)
  return token
end

-- Marks `session` alive for this name until `ttl` ms from now. The marks of a name go
-- with its last live session (twice its TTL later at the latest).
local function renew(session, ttl)
  redis.call('HSET', sessions, session, string.format('%.0f', now + tonumber(ttl)))
  lives[session] = now + tonumber(ttl)
  if redis.call('PTTL', sessions) < 2 * tonumber(ttl) then
    redis.call('PEXPIRE', sessions, 2 * tonumber(ttl))
  end
end
