-- Sends the prepared requests of BENCH_REQUESTS (one per line: METHOD, PATH, BODY, then
-- "Name: value" headers, tab-separated), each line at most once per run: wrk's threads
-- take every BENCH_THREADS-th line. A thread that runs out starts over and counts the
-- repeats as `wrapped`, so the bench can tell that it needs more prepared data.
-- done() prints one line "BENCH_JSON {...}" with the counts and latency percentiles.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function split(line)
  local fields = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    table.insert(fields, field)
  end
  return fields
end

function init(args)
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
  reqs = {}
  local n = 0
  for line in io.lines(os.getenv("BENCH_REQUESTS")) do
    if n % nthreads == tid then
      local f = split(line)
      local headers = {}
      for i = 4, #f do
        local name, value = f[i]:match("^([^:]+): (.*)$")
        if name then headers[name] = value end
      end
      local body = f[3]
      if body == "" then body = nil end
      table.insert(reqs, wrk.format(f[1], f[2], headers, body))
    end
    n = n + 1
  end
  idx = 0
  sent = 0
  wrapped = 0
  codes = {}
end

function request()
  idx = idx + 1
  if idx > #reqs then
    idx = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return reqs[idx]
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

function done(summary, latency, requests)
  local sent_total, wrapped_total, used = 0, 0, 0
  local code_totals = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("sent") or 0
    sent_total = sent_total + s
    wrapped_total = wrapped_total + (thread:get("wrapped") or 0)
    local c = thread:get("codes") or {}
    for code, k in pairs(c) do
      code_totals[tostring(code)] = (code_totals[tostring(code)] or 0) + k
    end
  end
  local parts = {}
  for code, k in pairs(code_totals) do
    table.insert(parts, string.format('"%s":%d', code, k))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"sent":%d,"wrapped":%d,"codes":{%s},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    sent_total, wrapped_total, table.concat(parts, ","),
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max))
end
