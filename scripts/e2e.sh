#!/usr/bin/env bash
# The whole system end to end from release binaries (tests/e2e/test_system.py): model-registry on
# a fresh PostgreSQL database, a private redis-server, the API and two workers, an OTLP receiver;
# training, scoring parity with `loanctl score`, a 200,000-row job, promotion and rollback under
# load, traces, a worker killed mid-batch, a Redis restart and a registry outage.
# Needs the local PostgreSQL (scripts/services.sh) and redis-server on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compat-venv.sh
cargo build --release -p model-registry -p api -p worker -p loanctl
command -v redis-server >/dev/null || { echo "e2e: redis-server is not installed" >&2; exit 1; }
"$PY" -m pytest -q -s -p no:cacheprovider tests/e2e "$@"
