-- What every script of the Redis scope starts with. KEYS are one name's keys, all of one
-- hash tag (see keys.rs): the queue (a sorted set of request ids by token), what each
-- request asks (a hash: id -> "permits capacity pid since_ms host"), the token counter,
-- and until when each session lives for this name (a hash: session -> server ms).
-- Time is the server's (TIME), never a client's.
local queue, asks, counter, sessions = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- A request id is "session:n".
local function session_of(id)
  return string.match(id, '^([^:]+):')
end

local function alive(session)
  local until_ms = redis.call('HGET', sessions, session)
  return until_ms ~= false and tonumber(until_ms) > now
end

-- Deletes the requests of sessions that lapsed, and the lapsed sessions; true if a request went.
local function sweep()
  local gone = false
  for _, id in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    if not alive(session_of(id)) then
      redis.call('ZREM', queue, id)
      redis.call('HDEL', asks, id)
      gone = true
    end
  end
  local marks = redis.call('HGETALL', sessions)
  for i = 1, #marks, 2 do
    if tonumber(marks[i + 1]) <= now then
      redis.call('HDEL', sessions, marks[i])
    end
  end
  return gone
end

-- The permits and capacity request `id` asks for.
local function ask_of(id)
  local permits, capacity = string.match(redis.call('HGET', asks, id), '^(%d+) (%d+)')
  return tonumber(permits), tonumber(capacity)
end

-- Where request `id` stands, by the one rule of every scope: it holds when the permits of
-- the requests before it plus its own fit the capacity (FIFO, no barging). Answers
-- 'holds', 'waits' (and in how many ms the first session ahead of it lapses unless it
-- renews: when to look again for a holder that died) or 'gone'.
local function standing(id)
  local before, wake = 0, nil
  for _, other in ipairs(redis.call('ZRANGE', queue, 0, -1)) do
    local permits, capacity = ask_of(other)
    if other == id then
      if before + permits <= capacity then
        return 'holds', nil
      end
      return 'waits', wake
    end
    before = before + permits
    local left = tonumber(redis.call('HGET', sessions, session_of(other)) or 0) - now
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
  if redis.call('PTTL', sessions) < 2 * tonumber(ttl) then
    redis.call('PEXPIRE', sessions, 2 * tonumber(ttl))
  end
end
