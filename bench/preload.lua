-- bench/wrk.lua's replay, once through, as fast as the server answers: after as many answers
-- as there are records (plus a connection's worth, so the last records are answered too; the
-- extra requests replay the first records, which the bridge acknowledges as repeats with no
-- effect) it prints "PRELOAD answered=<n> non2xx=<n>" and exits: wrk.thread:stop() would only
-- stop sending, and wrk itself waits out its -d duration.
-- Arguments: the records file, the request path, the index to start at, the record count.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk.lua")

local replay_init = init
local limit = 0
local answered = 0
local non2xx = 0

function init(args)
  replay_init(args)
  limit = tonumber(args[4]) + 100
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if answered >= limit then
    io.write(string.format("PRELOAD answered=%d non2xx=%d\n", answered, non2xx))
    os.exit(0)
  end
end
