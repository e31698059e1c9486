#!/usr/bin/env bash
# The official MLflow Python client (pinned) against the real model-registry binary, once on the
# embedded SQLite default and once on a fresh PostgreSQL database. Creates its own virtual
# environment (.venv-compat/) the first time. Exits non-zero if any test fails on either backend.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/compat-venv.sh

cargo build --release -p model-registry -p loanctl
BIN=target/release/model-registry
LOANCTL=target/release/loanctl
PGHOST=127.0.0.1
status=0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run_suite LABEL DATABASE_URL [pytest args...]; DATABASE_URL "" means the embedded default.
# With COMPAT_AUTH=1 the server requires HTTP basic auth and the client sends it from the
# environment, as MLflow users configure it.
run_suite() {
  local label=$1 url=$2 dir port pid
  shift 2
  dir=$(mktemp -d)
  port=$(free_port)
  local args=(--host 127.0.0.1 --port "$port" --data-dir "$dir")
  [ -n "$url" ] && args+=(--backend-store-uri "$url" --artifacts-destination "$dir/artifacts")
  if [ "${COMPAT_AUTH:-0}" = 1 ]; then
    printf 'compat-secret\n' | "$LOANCTL" registry hash-password --user ds >"$dir/users"
    printf 'ds:MANAGE\n' >"$dir/permissions"
    args+=(--auth-users-file "$dir/users" --auth-permissions-file "$dir/permissions")
  fi
  "$BIN" "${args[@]}" >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 60); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.5
  done
  echo "compat: $label (registry pid $pid, port $port)" >&2
  local auth_env=()
  [ "${COMPAT_AUTH:-0}" = 1 ] && auth_env=(MLFLOW_TRACKING_USERNAME=ds MLFLOW_TRACKING_PASSWORD=compat-secret)
  # The database as MLflow's own store names it, for the test that opens it beside the server.
  local store_uri=${url:-sqlite:///$dir/registry.db}
  if ! env "${auth_env[@]}" COMPAT_BACKEND_STORE_URI="$store_uri" MLFLOW_TRACKING_URI="http://127.0.0.1:$port" "$PY" -m pytest -q -p no:cacheprovider services/model-registry/tests/compat "$@"; then
    status=1
    echo "compat: $label FAILED; server log:" >&2
    tail -50 "$dir/server.log" >&2
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

run_suite "SQLite (embedded default)" ""
COMPAT_AUTH=1 run_suite "SQLite with authentication" "" -k "tracking_workflow or log_model"

db="registry_compat_$$"
psql -h "$PGHOST" -U postgres -qc "CREATE DATABASE $db" >/dev/null
run_suite "PostgreSQL" "postgres://postgres@$PGHOST:5432/$db"
psql -h "$PGHOST" -U postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null || true

exit $status
