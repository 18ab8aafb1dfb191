-- bench/wrk.lua's replay, once through: stops after as many answers as there are records
-- (plus the connections' worth, so the last records are answered too; the extra requests
-- replay the first records, which the bridge acknowledges as repeats with no effect).
-- Arguments: the records file, the request path, the index to start at, the record count.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk.lua")

local replay_init = init
local limit = 0
local answered = 0

function init(args)
  replay_init(args)
  limit = tonumber(args[4]) + 100
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= limit then
    wrk.thread:stop()
  end
end
