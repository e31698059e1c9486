#!/usr/bin/env bash
# Single-score throughput with the decision audit log off and on, in one run: the API serving
# models/gc with reasons, loaded by `wrk -t1 -c64` (bench/predict.lua), three ways:
#   no-drift    no AUDIT_URL, DRIFT_WINDOW=0 (no drift watch either)
#   off         no AUDIT_URL (the drift watch on, as in every mode below: DRIFT_WINDOW=10000)
#   postgres    AUDIT_URL=postgres://postgres@127.0.0.1:5432/<fresh database>
#   sqlite      AUDIT_URL=sqlite:<temp>/audit.db
#   shadow      no audit log, a second model (models/gc-challenger) scoring in the shadow
#   postgres+shadow  as postgres, with a second model (models/gc-challenger, 150 trees) scoring
#               every request in the shadow
# After each load it waits for the writer and checks that every answered decision was recorded.
# With --rounds N the modes run N times, interleaved (mode 1..6, then again), so that a slow
# spell of the machine hits every mode alike; each row is then the median round of that mode (by
# requests/s), and its counts are that round's. The shadow column: requests the shadow scored /
# skipped because it was behind (it runs at nice 19, on CPU time the requests leave). Below the
# table, the shadow's cost to p99: each round's p99 with the shadow over the same round's without
# it (shadow / off, postgres+shadow / postgres), and the median of those ratios.
#
# With --paced MS each connection waits MS milliseconds between requests (bench/predict-paced.lua):
# a steady load below saturation, where p99 is the server's latency rather than the queue of a
# saturated one.
#
# The challenger is models/gc-challenger (150 trees, another seed: another split, so another
# fitted preprocessor, and the shadow parses each request again). --challenger alike uses
# models/gc-challenger-alike instead (150 trees, the champion's seed: it encodes applications as
# the champion does, and the shadow scores the row the champion encoded).
#
#   bench/audit.sh [--duration S] [--rounds N] [--modes "off shadow ..."] [--paced MS]
#                  [--challenger alike]
#
# API_BIN=path runs another build of the API (default target/release/api).
#
# Needs target/release/{api,loanctl} (cargo build --release --workspace), wrk (apt-get install -y
# wrk), the local PostgreSQL (scripts/services.sh). Binds 127.0.0.1 only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=15
ROUNDS=1
SCRIPT=bench/predict.lua
CHALLENGER=models/gc-challenger
MODES="no-drift off shadow postgres sqlite postgres+shadow"
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --paced) SCRIPT=bench/predict-paced.lua; export PACE_MS=$2; shift 2 ;;
    --challenger) [[ $2 == alike ]] || { echo "--challenger takes: alike" >&2; exit 2; }
      CHALLENGER=models/gc-challenger-alike; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
PORT=8093
[[ -d models/gc ]] || target/release/loanctl train --data data/german_credit.csv \
  --spec data/german_credit.spec.json --out models/gc >/dev/null
[[ -d models/gc-challenger ]] || target/release/loanctl train --data data/german_credit.csv \
  --spec data/german_credit.spec.json --trees 150 --seed 7 --out models/gc-challenger >/dev/null
[[ -d models/gc-challenger-alike ]] || target/release/loanctl train --data data/german_credit.csv \
  --spec data/german_credit.spec.json --trees 150 --out models/gc-challenger-alike >/dev/null
TMP=$(mktemp -d)
DB="audit_bench_$$"
API_PID=""
cleanup() {
  [[ -n "$API_PID" ]] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null

count() { # recorded decisions in the store $1
  case "$1" in
    postgres*) psql "$1" -tAc "SELECT count(*) FROM decisions" ;;
    sqlite:*) python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM decisions').fetchone()[0])" "${1#sqlite:}" ;;
  esac
}

declare -A ROWS P99
# wrk's latency (e.g. 812.00us, 3.98ms, 1.02s) in milliseconds.
ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /[0-9]s$/ && v !~ /ms$/) n *= 1000; printf "%.3f", n }'; }
for round in $(seq "$ROUNDS"); do
for mode in $MODES; do
  shadow=""
  window=10000
  case $mode in
    no-drift) url=""; window=0 ;;
    off) url="" ;;
    shadow) url=""; shadow=$CHALLENGER ;;
    postgres) url="postgres://postgres@127.0.0.1:5432/$DB" ;;
    sqlite) url="sqlite:$TMP/audit.db" ;;
    postgres+shadow) url="postgres://postgres@127.0.0.1:5432/$DB"; shadow=$CHALLENGER ;;
  esac
  # Every audited run starts from an empty store (the API migrates it at start).
  psql -h 127.0.0.1 -U postgres -d "$DB" -qc "DROP TABLE IF EXISTS decisions, _sqlx_migrations" 2>/dev/null
  rm -f "$TMP"/audit.db*
  AUDIT_URL="$url" SHADOW_MODEL_URI="$shadow" DRIFT_WINDOW=$window MODEL_URI=models/gc RUST_LOG=error "${API_BIN:-target/release/api}" --port $PORT 2>/dev/null &
  API_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
  wrk -t1 -c64 -d2s -s "$SCRIPT" "http://127.0.0.1:$PORT/v1/predict" >/dev/null
  out=$(wrk -t1 -c64 -d"${DURATION}s" --latency -s "$SCRIPT" "http://127.0.0.1:$PORT/v1/predict")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  refused=$(awk '/Non-2xx/ {print $5}' <<<"$out"); refused=${refused:-0}
  metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
  answered=$(awk '/^predictions_total/ {s+=$2} END {print s}' <<<"$metrics")
  shadowed="-"
  if [[ -n "$shadow" ]]; then
    sleep 2 # the shadow's queue drains once the load stops
    metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
    shadowed="$(awk '/^shadow_scored_total/ {s+=$2} END {print s+0}' <<<"$metrics") / $(awk '/^shadow_skipped_total/ {s+=$2} END {print s+0}' <<<"$metrics")"
  fi
  recorded="-"
  if [[ -n "$url" ]]; then
    for _ in $(seq 120); do
      recorded=$(count "$url")
      [[ "$recorded" -ge "$answered" ]] && break
      sleep 0.5
    done
  fi
  ROWS[$mode]+="$rps|$mode|$rps|$p50|$p99|$refused|$answered|$recorded|$shadowed"$'\n'
  P99[$mode,$round]=$(ms "$p99")
  echo "round $round: $mode $rps req/s, p99 $p99" >&2
  kill "$API_PID"; wait "$API_PID" 2>/dev/null || true; API_PID=""
done
done
echo "| audit | requests/s | p50 | p99 | refused (503) | answered 200 | recorded | shadow scored / skipped |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for mode in $MODES; do
  # The median round by requests/s (the upper one of two).
  row=$(printf '%s' "${ROWS[$mode]}" | sort -t'|' -k1,1n | awk -v n="$ROUNDS" 'NR == int(n / 2) + 1')
  echo "| ${row#*|} |" | sed 's/|/ | /g; s/  */ /g; s/^ //; s/ $//'
done
# The shadow's cost to p99, round by round against the same setup without it in the same round
# (so that a slow spell of the machine cancels out), and the median of those ratios.
for pair in "shadow off" "postgres+shadow postgres"; do
  read -r with without <<<"$pair"
  [[ " $MODES " == *" $with "* && " $MODES " == *" $without "* ]] || continue
  ratios=""
  for round in $(seq "$ROUNDS"); do
    ratios+="$(awk -v a="${P99[$with,$round]}" -v b="${P99[$without,$round]}" 'BEGIN { printf "%.3f", a / b }') "
  done
  median=$(tr ' ' '\n' <<<"$ratios" | grep . | sort -n | awk -v n="$ROUNDS" 'NR == int(n / 2) + 1')
  echo
  echo "p99 of $with / p99 of $without, by round: $ratios(median $median, that is $(awk -v m="$median" 'BEGIN { printf "%+.0f %%", (m - 1) * 100 }'))"
done
