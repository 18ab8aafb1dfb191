-- Replays pre-signed Sentry webhooks written by bench/payloads.py, one after another.
-- Record format: "<resource> <hex signature> <body length>\n<body>".
-- Arguments: the records file, the request path, and the index to start at (default 0).
local records = {}
local next_index = 0

function init(args)
  local f = assert(io.open(args[1], "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local eol = data:find("\n", pos, true)
    local resource, signature, length = data:sub(pos, eol - 1):match("^(%S+) (%x+) (%d+)$")
    length = tonumber(length)
    local body = data:sub(eol + 1, eol + length)
    records[#records + 1] = wrk.format("POST", args[2], {
      ["Content-Type"] = "application/json",
      ["Sentry-Hook-Resource"] = resource,
      ["Sentry-Hook-Signature"] = signature,
    }, body)
    pos = eol + length + 1
  end
  next_index = tonumber(args[3] or "0") % #records
end

function request()
  next_index = next_index % #records + 1
  return records[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d socket_errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99)))
end
