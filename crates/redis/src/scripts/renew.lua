-- Keeps session ARGV[1] alive for this name for ARGV[2] ms more. Answers 1, or 0 if it
-- had lapsed here already (its requests here are gone: its holds were lost).
local until_ms = redis.call('HGET', sessions, ARGV[1])
if until_ms == false or tonumber(until_ms) <= now then
  sweep()
  return 0
end
renew(ARGV[1], ARGV[2])
return 1
