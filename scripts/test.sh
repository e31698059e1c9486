#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration and CLI tests against the local
# PostgreSQL), then the official MLflow Python client against the registry binary, the
# registry's web UI in headless Chromium, and the whole system end to end from release binaries.
# Release mode: training-heavy tests take seconds optimised and minutes without.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
scripts/mlflow-compat.sh
scripts/ui-e2e.sh
scripts/e2e.sh
