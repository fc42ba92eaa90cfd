-- wrk script for the storeops ingest benchmark (bench/sections/ingest.py).
-- args: <path> <event id prefix> <bodies file>. The bodies file has one "signature<TAB>body" per
-- line, each body signed in advance (the signature covers only the body), so every request can
-- carry a new, unique x-razorpay-event-id: <prefix>_<thread>_<n>.
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  path = args[1]
  local prefix = args[2]
  local f = assert(io.open(args[3], "r"))
  sigs, bodies = {}, {}
  for line in f:lines() do
    local tab = line:find("\t", 1, true)
    sigs[#sigs + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
  f:close()
  n = #bodies
  i = 0
  headers = {["Content-Type"] = "application/json"}
  id_prefix = prefix .. "_" .. tostring(tid) .. "_"
end

function request()
  i = i + 1
  local k = (i % n) + 1
  headers["X-Razorpay-Signature"] = sigs[k]
  headers["X-Razorpay-Event-Id"] = id_prefix .. i
  return wrk.format("POST", path, headers, bodies[k])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max))
end
