-- The live requests of the name, in queue order: {id, token, ask, holds (1/0), ...}.
local out, before = {}, 0
for _, id in ipairs(redis.call('ZRANGE', queue, 0, -1, 'WITHSCORES')) do
  table.insert(out, id)
end
local rows = {}
for i = 1, #out, 2 do
  local id, token = out[i], out[i + 1]
  if alive(session_of(id)) then
    local permits, capacity = ask_of(id)
    before = before + permits
    table.insert(rows, id)
    table.insert(rows, token)
    table.insert(rows, redis.call('HGET', asks, id))
    table.insert(rows, before <= capacity and 1 or 0)
  end
end
return rows
