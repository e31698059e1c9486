#!/usr/bin/env bash
# Search at scale: `runs/search` over N runs (default 100,000) in one experiment, on SQLite and
# on PostgreSQL, against the release binary.
#
#   bench/registry-search.sh            # both backends
#   N=10000 BACKENDS=sqlite bench/registry-search.sh
#
# Each run has 4 params, 3 metrics and 4 tags (a hyperparameter sweep as the client logs it),
# bulk-loaded with SQL after the server has created its schema (then ANALYZE, and on PostgreSQL
# VACUUM, as autovacuum would do after such a load); values are derived from the run
# number, so both backends hold the same data. The search is the issue's:
# `metrics.auc > 0.75 and params.depth = '3'` ordered by `metrics.auc DESC`, `max_results=100`.
# Prints the median and p95 of 50 searches (after 5 warm-ups) over one keep-alive connection,
# and the server's resident memory idle (after the load, before any search) and after.
# On SQLite it also times the in-memory path, which a filter SQL cannot say exactly still takes
# (an ILIKE pattern with non-ASCII letters), to show what every search cost before.
# Needs: PostgreSQL on 127.0.0.1:5432 (trust auth), sqlite3, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
BIN=${BIN:-target/release/model-registry}
[ -x "$BIN" ] || cargo build --release -p model-registry
TMP=$(mktemp -d)
PID=""
PGDB=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  [ -n "$PGDB" ] && psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $PGDB" >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

start() { # URL
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" --host 127.0.0.1 --port "$port" --backend-store-uri "$1" \
    --artifacts-destination "$TMP/artifacts" >"$TMP/server.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl -sf "$URL/health" >/dev/null && return 0; sleep 0.1; done
  cat "$TMP/server.log" >&2
  echo "registry-search: the server did not start" >&2
  exit 1
}

# The load, in SQL both backends read alike; :i is the run number. $1: the row source.
load_sql() { # SERIES EXP HEX
  local series=$1 exp=$2 hex=$3
  cat <<SQL
INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri, lifecycle_stage)
  SELECT $hex, $exp, 'run-' || i, 'bench', 'FINISHED', 1700000000000 + i, 1700000000500 + i,
         'mlflow-artifacts:/$exp/' || $hex || '/artifacts', 'active' FROM $series;
INSERT INTO params (run_id, key, value) SELECT $hex, 'depth', CAST(CAST(i AS BIGINT) * 7919 % 10 AS TEXT) FROM $series;
INSERT INTO params (run_id, key, value) SELECT $hex, 'learning_rate', CAST(i % 7 AS TEXT) FROM $series;
INSERT INTO params (run_id, key, value) SELECT $hex, 'n_estimators', CAST(100 + i % 5 * 100 AS TEXT) FROM $series;
INSERT INTO params (run_id, key, value) SELECT $hex, 'subsample', '0.8' FROM $series;
INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step)
  SELECT $hex, 'auc', (CAST(i AS BIGINT) * 2654435761 % 1000003) / 1000003.0, 0, 1700000000400 + i, 0 FROM $series;
INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step)
  SELECT $hex, 'ks', (CAST(i AS BIGINT) * 40503 % 1000) / 1000.0, 0, 1700000000400 + i, 0 FROM $series;
INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step)
  SELECT $hex, 'brier', (i * 7 % 300) / 1000.0, 0, 1700000000400 + i, 0 FROM $series;
INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step)
  SELECT run_id, key, value, is_nan, timestamp, step FROM latest_metrics;
INSERT INTO tags (run_id, key, value) SELECT $hex, 'mlflow.user', 'bench' FROM $series;
INSERT INTO tags (run_id, key, value) SELECT $hex, 'mlflow.runName', 'run-' || i FROM $series;
INSERT INTO tags (run_id, key, value) SELECT $hex, 'mlflow.source.type', 'LOCAL' FROM $series;
INSERT INTO tags (run_id, key, value) SELECT $hex, 'sweep', 'grid-' || (i % 20) FROM $series;
SQL
}

measure() { # LABEL FILTER COUNT
  python3 - "$URL" "$EXP" "$2" "$3" "$1" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
url, exp, flt, count, label = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
body = json.dumps({"experiment_ids": [exp], "filter": flt, "order_by": ["metrics.auc DESC"], "max_results": 100})
times = []
for i in range(5 + count):
    t = time.perf_counter()
    c.request("POST", "/api/2.0/mlflow/runs/search", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1000
    assert r.status == 200, data[:300]
    if i >= 5:
        times.append(dt)
runs = json.loads(data).get("runs", [])
aucs = [next(m["value"] for m in x["data"]["metrics"] if m["key"] == "auc") for x in runs]
assert aucs == sorted(aucs, reverse=True)
times.sort()
print(f"{label}: {len(runs)} runs returned; median {statistics.median(times):.1f} ms, p95 {times[int(len(times) * 0.95) - 1]:.1f} ms over {count} searches")
PY
}

FILTER="metrics.auc > 0.75 and params.depth = '3'"
for backend in $BACKENDS; do
  case $backend in
    sqlite)
      start "sqlite:///$TMP/bench.db"
      EXP=$(curl -sf -H 'Content-Type: application/json' -d '{"name":"sweep"}' "$URL/api/2.0/mlflow/experiments/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')
      t0=$(date +%s.%N)
      { echo "BEGIN;"; load_sql "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N) SELECT i FROM n) s" "$EXP" "printf('%032x', i)"; echo "COMMIT; ANALYZE;"; } | sqlite3 "$TMP/bench.db"
      ;;
    postgres)
      PGDB="registry_search_bench_$$"
      psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $PGDB" >/dev/null
      start "postgresql://postgres@127.0.0.1:5432/$PGDB"
      EXP=$(curl -sf -H 'Content-Type: application/json' -d '{"name":"sweep"}' "$URL/api/2.0/mlflow/experiments/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')
      t0=$(date +%s.%N)
      { echo "BEGIN;"; load_sql "generate_series(1, $N) AS s(i)" "$EXP" "lpad(to_hex(i), 32, '0')"; echo "COMMIT; VACUUM ANALYZE;"; } \
        | psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$PGDB" >/dev/null
      ;;
    *) echo "registry-search: unknown backend $backend" >&2; exit 2 ;;
  esac
  printf '%s: %d runs loaded in %.1f s\n' "$backend" "$N" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')"
  idle=$(rss "$PID")
  measure "$backend, in SQL" "$FILTER" 50
  after=$(rss "$PID")
  echo "$backend: resident memory idle $idle MiB, after the searches $after MiB"
  if [ "$backend" = sqlite ]; then
    measure "$backend, in memory (the path every search took before)" "$FILTER and tags.sweep ILIKE '%é%'" 5
    echo "$backend: resident memory after the in-memory searches $(rss "$PID") MiB"
  fi
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  if [ -n "$PGDB" ]; then
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE $PGDB" >/dev/null; PGDB=""
  fi
done
