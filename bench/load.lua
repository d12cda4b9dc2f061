-- wrk script for bench/load.py: random real tokens, a fixed method, path and body, and a
-- JSON summary line at the end. Arguments after "--":
--   tokens_file path_format method body_format header...    (tokens_file "-" for none)
-- path_format and body_format take the token where "%s" is; headers are "Name: value".

local tokens, path_format, method, body_format, headers = {}, "/", "GET", "", {}
local seeds = 0

function setup(thread)
  seeds = seeds + 1
  thread:set("seed", seeds)
end

function init(args)
  local file
  file, path_format, method, body_format = args[1], args[2], args[3], args[4]
  if file ~= "-" then
    for line in io.lines(file) do
      if line ~= "" then tokens[#tokens + 1] = line end
    end
  end
  for i = 5, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
  math.randomseed(os.time() * 1000 + (seed or 0) * 7919)
end

function request()
  local token = #tokens > 0 and tokens[math.random(#tokens)] or ""
  local body = nil
  if body_format ~= "" then body = body_format:gsub("%%s", token) end
  return wrk.format(method, path_format:gsub("%%s", token), headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
