-- As bench/predict.lua, but each connection waits PACE_MS milliseconds (default 2) after each
-- answer before it sends the next request: a steady load below saturation (with 64 connections
-- at most 64 / (PACE_MS + latency) requests a second), at which latency is the server's and not
-- the queue of a saturated one.
--   PACE_MS=2 wrk -t1 -c64 -d10s --latency -s bench/predict-paced.lua http://127.0.0.1:8000/v1/predict
dofile("bench/predict.lua")
local pace = tonumber(os.getenv("PACE_MS") or "2")
function delay()
  return pace
end
