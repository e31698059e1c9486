#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, integration and CLI tests against the local
# PostgreSQL), then the official MLflow Python client against the registry binary, then the
# registry's web UI in headless Chromium.
# Release mode: training-heavy tests take seconds optimised and minutes without.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --release "$@"
scripts/mlflow-compat.sh
scripts/ui-e2e.sh
