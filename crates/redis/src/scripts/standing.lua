-- Where request ARGV[1] stands (after the requests of lapsed sessions are gone): {'holds'},
-- {'waits', wake_ms} or {'gone'}.
local where, wake = standing(live_requests(), ARGV[1])
return {where, wake or -1}
