#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration and CLI tests against the local
# PostgreSQL), then the official MLflow Python client against the registry binary, the
# registry's web UI in headless Chromium, the whole system end to end from release binaries,
# and schemathesis against the API's and the registry's OpenAPI documents.
# Release mode: training-heavy tests take seconds optimised and minutes without.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
scripts/mlflow-compat.sh
scripts/mlflow-peer.sh
scripts/ui-e2e.sh
scripts/e2e.sh
# Contract fuzzing: the API and the registry on SQLite, then the registry on PostgreSQL.
scripts/schemathesis.sh
db="registry_schemathesis_$$"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db" >/dev/null
trap 'psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true' EXIT
SCHEMATHESIS_ONLY=registry SCHEMATHESIS_REGISTRY_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
  scripts/schemathesis.sh
