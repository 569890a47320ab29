-- wrk script for the site benchmark (benchmarks/fig5_site.py).
--
-- Usage: wrk -s paths.lua URL -- PATHS_FILE [HEADER]
-- Cycles through the request paths listed in PATHS_FILE (one a line), adds the
-- optional HEADER ("Name: value") to every request, counts responses by status
-- and prints one line "BENCH-JSON {...}" with the counts and latency percentiles
-- (microseconds) when done.

local paths = {}
local counter = 0
local header_name, header_value
statuses = {}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  if args[2] and #args[2] > 0 then
    header_name, header_value = args[2]:match("^([^:]+):%s*(.*)$")
  end
end

function request()
  counter = counter + 1
  local path = paths[(counter - 1) % #paths + 1]
  local headers = {}
  if header_name then
    headers[header_name] = header_value
  end
  return wrk.format("GET", path, headers)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do
      codes[tostring(code)] = (codes[tostring(code)] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(codes) do
    parts[#parts + 1] = string.format('"%s": %d', code, n)
  end
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p95": %d, "p99": %d}, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), table.concat(parts, ", ")))
end
