#!/usr/bin/env bash
# Search at scale for the registry's other entities, on SQLite and on PostgreSQL, against the
# release binary: 10,000 experiments, 10,000 registered models with 10 versions each (100,000
# versions) and 100,000 logged models in one experiment, bulk-loaded with SQL after the server
# has created its schema (then ANALYZE, and on PostgreSQL VACUUM).
#
#   bench/registry-entities.sh                 # both backends
#   BACKENDS=sqlite bench/registry-entities.sh
#
# Prints, per search, the median and p95 of 30 requests (after 3 warm-ups) over one keep-alive
# connection, and the server's resident memory idle (after the load) and after all searches.
# On SQLite each search is also timed with one more clause that SQL cannot say exactly there (an
# ILIKE pattern with a non-ASCII letter, on a tag no entity has), so it takes the in-memory path
# every search took before these searches were pushed into SQL.
# Needs: PostgreSQL on 127.0.0.1:5432 (trust auth), sqlite3, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
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
  echo "registry-entities: the server did not start" >&2
  exit 1
}

# The load, in SQL both backends read alike. $1: a row source of i = 1..100000; $2: the
# experiment of the logged models; $3: i as 32 hex digits.
load_sql() {
  local series=$1 exp=$2 hex=$3
  cat <<SQL
INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time)
  SELECT 'team-' || (i % 50) || '/exp-' || i, 'mlflow-artifacts:/x', 'active', 1700000000000 + i, 1700000000000 + i
  FROM $series WHERE i <= 10000;
INSERT INTO experiment_tags (experiment_id, key, value)
  SELECT experiment_id, 'owner', 'user-' || (experiment_id % 100) FROM experiments WHERE name LIKE 'team-%';
INSERT INTO registered_models (name, creation_time, last_updated_time, description, last_version)
  SELECT 'credit-' || i, 1700000000000 + i, 1700000000000 + i * 7 % 10007, '', 10 FROM $series WHERE i <= 10000;
INSERT INTO registered_model_tags (name, key, value)
  SELECT 'credit-' || i, 'team', 'team-' || (i % 20) FROM $series WHERE i <= 10000;
INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, user_id, current_stage, source, run_id, run_link, status)
  SELECT 'credit-' || ((i - 1) / 10 + 1), (i - 1) % 10 + 1, 1700000000000 + i, 1700000000000 + i * 7919 % 100003,
         '', 'bench', 'None', 'models:/m-' || $hex, $hex, '', 'READY' FROM $series;
INSERT INTO model_version_tags (name, version, key, value)
  SELECT 'credit-' || ((i - 1) / 10 + 1), (i - 1) % 10 + 1, 'validation', CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'passed' END FROM $series;
INSERT INTO logged_models (model_id, experiment_id, name, artifact_uri, creation_timestamp_ms, last_updated_timestamp_ms, status, model_type, source_run_id, lifecycle_stage)
  SELECT 'm-' || $hex, $exp, 'model-' || i, 'mlflow-artifacts:/$exp/models/m-' || $hex || '/artifacts',
         1700000000000 + i, 1700000000000 + i, 'READY', 'xgboost', $hex, 'active' FROM $series;
INSERT INTO logged_model_params (model_id, key, value) SELECT 'm-' || $hex, 'depth', CAST(CAST(i AS BIGINT) * 7919 % 10 AS TEXT) FROM $series;
INSERT INTO logged_model_params (model_id, key, value) SELECT 'm-' || $hex, 'eta', CAST(i % 7 AS TEXT) FROM $series;
INSERT INTO logged_model_tags (model_id, key, value) SELECT 'm-' || $hex, 'sweep', 'grid-' || (i % 20) FROM $series;
SQL
}

measure() { # LABEL METHOD PATH BODY-OR-QUERY KEY
  python3 - "$URL" "$@" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
url, label, method, path, arg, key = sys.argv[1:7]
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
times = []
for i in range(3 + 30):
    t = time.perf_counter()
    if method == "GET":
        c.request("GET", f"/api/2.0/mlflow/{path}?{arg}")
    else:
        c.request("POST", f"/api/2.0/mlflow/{path}", arg.encode(), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    dt = (time.perf_counter() - t) * 1000
    assert r.status == 200, data[:300]
    if i >= 3:
        times.append(dt)
n = len(json.loads(data).get(key, []))
times.sort()
print(f"  {label}: {n} returned; median {statistics.median(times):.1f} ms, p95 {times[int(len(times) * 0.95) - 1]:.1f} ms")
PY
}

q() { python3 -c 'import sys, urllib.parse; print(urllib.parse.urlencode([(a, b) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]))' "$@"; }

searches() { # EXTRA: a clause appended to every filter ("" for none)
  local x=$1
  measure "experiments: tags.owner = 'user-7', last_update_time DESC" POST experiments/search \
    "{\"filter\": \"tags.owner = 'user-7'$x\", \"order_by\": [\"last_update_time DESC\"], \"max_results\": 100}" experiments
  measure "registered models: name LIKE 'credit-1%', last_updated_timestamp DESC" GET registered-models/search \
    "$(q filter "name LIKE 'credit-1%'$x" order_by 'last_updated_timestamp DESC' max_results 100)" registered_models
  measure "model versions: name = 'credit-4242' (a model's versions)" GET model-versions/search \
    "$(q filter "name = 'credit-4242'$x")" model_versions
  measure "model versions: tags.validation = 'failed', max_results 100" GET model-versions/search \
    "$(q filter "tags.validation = 'failed'$x" max_results 100)" model_versions
  measure "logged models: params.depth = '3', creation_timestamp DESC" POST logged-models/search \
    "{\"experiment_ids\": [\"$EXP\"], \"filter\": \"params.depth = '3'$x\", \"order_by\": [{\"field_name\": \"creation_timestamp\", \"ascending\": false}], \"max_results\": 100}" models
}

for backend in $BACKENDS; do
  case $backend in
    sqlite)
      start "sqlite:///$TMP/bench.db"
      EXP=$(curl -sf -H 'Content-Type: application/json' -d '{"name":"sweep"}' "$URL/api/2.0/mlflow/experiments/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')
      t0=$(date +%s.%N)
      { echo "BEGIN;"; load_sql "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) SELECT i FROM n) s" "$EXP" "printf('%032x', i)"; echo "COMMIT; ANALYZE;"; } | sqlite3 "$TMP/bench.db"
      ;;
    postgres)
      PGDB="registry_entities_bench_$$"
      psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $PGDB" >/dev/null
      start "postgresql://postgres@127.0.0.1:5432/$PGDB"
      EXP=$(curl -sf -H 'Content-Type: application/json' -d '{"name":"sweep"}' "$URL/api/2.0/mlflow/experiments/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')
      t0=$(date +%s.%N)
      { echo "BEGIN;"; load_sql "generate_series(1, 100000) AS s(i)" "$EXP" "lpad(to_hex(i), 32, '0')"; echo "COMMIT; VACUUM ANALYZE;"; } \
        | psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$PGDB" >/dev/null
      ;;
    *) echo "registry-entities: unknown backend $backend" >&2; exit 2 ;;
  esac
  printf '%s: loaded in %.1f s; idle RSS %s MiB\n' "$backend" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" "$(rss "$PID")"
  searches ""
  echo "  RSS after: $(rss "$PID") MiB"
  if [ "$backend" = sqlite ]; then
    echo "  the in-memory path: the same searches with a clause SQLite cannot say (tags.none ILIKE '%é%'; it matches nothing, but every entity is loaded to find that out):"
    searches " and tags.none ILIKE '%é%'"
  fi
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
done
