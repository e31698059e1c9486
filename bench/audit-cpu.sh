#!/usr/bin/env bash
# CPU time per request of the API and of PostgreSQL, with the decision audit log off and on,
# for comparing two builds of the API: each round runs every build once per mode, interleaved.
# The API serves models/gc with reasons under `wrk -t1 -c64 -d10s` (bench/predict.lua); CPU is
# utime + stime from /proc of the API's process and of every `postgres` process, over the load,
# divided by the requests answered.
#
#   bench/audit-cpu.sh [--rounds N] [BINARY ...]    (default: target/release/api)
#
# Needs wrk, the local PostgreSQL and models/gc (bench/audit.sh trains it). Binds 127.0.0.1 only;
# stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3
if [[ ${1:-} == --rounds ]]; then ROUNDS=$2; shift 2; fi
BINS=("$@")
[[ ${#BINS[@]} -gt 0 ]] || BINS=(target/release/api)
PORT=8096
DB="audit_cpu_$$"
API_PID=""
cleanup() {
  [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
ticks() { awk '{s += $14 + $15} END {print s + 0}' "$@" 2>/dev/null || echo 0; }
pg_stats() { for p in $(pgrep -x postgres); do echo "/proc/$p/stat"; done; }
echo "| round | build | audit | requests/s | p99 | API µs/request | PostgreSQL µs/request |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for round in $(seq "$ROUNDS"); do
  for mode in off postgres; do
    for bin in "${BINS[@]}"; do
      url=""
      if [[ $mode == postgres ]]; then
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
        psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
        url="postgres://postgres@127.0.0.1:5432/$DB"
      fi
      AUDIT_URL="$url" MODEL_URI=models/gc RUST_LOG=error "$bin" --port $PORT 2>/dev/null &
      API_PID=$!
      for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
      wrk -t1 -c64 -d2s -s bench/predict.lua "http://127.0.0.1:$PORT/v1/predict" >/dev/null
      a0=$(ticks "/proc/$API_PID/stat"); g0=$(ticks $(pg_stats))
      out=$(wrk -t1 -c64 -d10s --latency -s bench/predict.lua "http://127.0.0.1:$PORT/v1/predict")
      a1=$(ticks "/proc/$API_PID/stat"); g1=$(ticks $(pg_stats))
      n=$(awk '/requests in/ {print $1}' <<<"$out")
      rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
      hz=$(getconf CLK_TCK)
      echo "| $round | $bin | $mode | $rps | $p99 | $(awk -v d=$((a1 - a0)) -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}') | $(awk -v d=$((g1 - g0)) -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}') |"
      kill "$API_PID"; wait "$API_PID" 2>/dev/null || true
      API_PID=""
    done
  done
done
