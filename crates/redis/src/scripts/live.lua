-- The live requests of the name, in queue order: {id, token, ask, holds (1/0), ...}.
local rows, before = {}, 0
for _, request in ipairs(live_requests()) do
  local id = request[1]
  before = before + request[2]
  rows[#rows + 1] = id
  rows[#rows + 1] = redis.call('ZSCORE', queue, id)
  rows[#rows + 1] = redis.call('HGET', asks, id)
  rows[#rows + 1] = before <= request[3] and 1 or 0
end
return rows
