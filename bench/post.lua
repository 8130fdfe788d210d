-- wrk script: POSTs the benchmark's chat request; done() prints one machine-readable line
-- (latencies in microseconds) that bench/measure.py parses.
-- Environment: BENCH_KEY (another key: the governed arms' issued-key sample), BENCH_DELAY_MS
-- (each connection waits this long after each answer: the soak's paced load).
wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
-- The gateway's bench key (a static key of the generated config; loopback only). Every arm gets
-- the same request bytes; the others ignore it.
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "sk-bench-loopback-only")

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d status=%d connect=%d read=%d write=%d timeout=%d"
      .. " p50=%d p90=%d p99=%d p999=%d mean=%.1f max=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
