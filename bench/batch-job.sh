#!/usr/bin/env bash
# A batch job through the API and one worker (Redis mode), or the API alone (embedded mode), timed
# from submission to results available. Loopback only; stops what it started.
#
#   bench/batch-job.sh [redis|embedded] [all|adverse|none] [file]
#
# Needs release binaries (cargo build --release -p api -p worker; BIN=target/dist runs the dist
# build instead), models/gc (just train) and the file (loanctl generate --like
# data/german_credit.csv --rows 1000000 --out data/generated/apps_1m.csv).
set -euo pipefail
mode=${1:-redis}; reasons=${2:-all}; file=${3:-data/generated/apps_1m.csv}
BIN=${BIN:-target/release}
store=$(mktemp -d); port=8095; wport=9095
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$store"; }
trap cleanup EXIT
prefix="bench:$$:"
common=(env MODEL_URI="$PWD/models/gc/model" JOBS_ROOT="$store" JOB_KEY_PREFIX="$prefix"
  JOB_QUEUE="${prefix}score" TRAIN_QUEUE="${prefix}train" RUST_LOG=${RUST_LOG:-warn})
if [ "$mode" = redis ]; then
  "${common[@]}" REDIS_URL=redis://127.0.0.1:6379 API_PORT=$port "$BIN"/api & pids+=($!)
  "${common[@]}" REDIS_URL=redis://127.0.0.1:6379 WORKER_PORT=$wport "$BIN"/worker & pids+=($!)
else
  "${common[@]}" API_PORT=$port "$BIN"/api & pids+=($!)
fi
for _ in $(seq 1 100); do curl -sf localhost:$port/readyz >/dev/null && break; sleep 0.1; done
if [ "$mode" = redis ]; then
  for _ in $(seq 1 100); do curl -sf localhost:$wport/readyz >/dev/null && break; sleep 0.1; done
fi
start=$(date +%s.%N)
loc=$(curl -sf -D - -o /dev/null -XPOST "localhost:$port/v1/batch-jobs?reasons=$reasons" \
  -H 'content-type: text/csv' --data-binary @"$file" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
accepted=$(date +%s.%N)
while :; do
  s=$(curl -sf "localhost:$port$loc")
  case "$s" in *'"state":"succeeded"'*|*'"state":"failed"'*) break;; esac
  sleep 0.05
done
done_t=$(date +%s.%N)
rows=$(echo "$s" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows_scored"])')
rss() { awk '/VmHWM/{print $2/1024 " MiB"}' "/proc/$1/status"; }
python3 - "$start" "$accepted" "$done_t" "$rows" <<'PY'
import sys
s, a, d, rows = map(float, sys.argv[1:])
print(f"accepted after {a-s:.2f} s; results after {d-s:.2f} s; {rows:.0f} rows; {rows/(d-s):,.0f} rows/s")
PY
echo "peak RSS api $(rss "${pids[0]}")${pids[1]:+, worker $(rss "${pids[1]}")}; mode $mode, reasons $reasons"
