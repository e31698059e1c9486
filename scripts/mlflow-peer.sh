#!/usr/bin/env bash
# MLflow's own REST test suites (tracking, model registry, artifact proxy: 129 items) against the
# release binary, started by their runner with its exact command line: a fresh server per test,
# `--backend-store-uri sqlite:////…/peer-mlflow.db --default-artifact-root file:///…
# --artifacts-destination …`. The suites and their runner live in ../shared/mlflow/peer-tests
# (MLflow's code, not copied here); only CI and developers' machines have that folder, so a
# fresh clone elsewhere skips this step and says so.
#
# Prints the pass count per tier and fails when fewer than PEER_MIN items pass: 118, as many as
# the real `mlflow server` 3.17.2 passes. Of the 11 others, 10 fail on mlflow server 3.17.2 too
# (version skew, listed beside the runner) and one is skipped there as here (xfail upstream).
set -euo pipefail
cd "$(dirname "$0")/.."
PEER_DIR=${PEER_DIR:-../shared/mlflow/peer-tests}
PEER_MIN=${PEER_MIN:-118}
if [ ! -x "$PEER_DIR/run_peer_tests.sh" ]; then
  echo "mlflow-peer: SKIPPED: $PEER_DIR not found (MLflow's suites are in the team's shared folder, not in this repository)" >&2
  exit 0
fi
source scripts/compat-venv.sh
cargo build --release -p model-registry
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
set +e
PY="$PWD/$PY" PEER_WORK="$work/run" \
PEER_SERVER_CMD="$PWD/target/release/model-registry --host 127.0.0.1 --port {port} --backend-store-uri {backend_uri} --default-artifact-root {artifact_root} --artifacts-destination {artifacts_destination}" \
  "$PEER_DIR/run_peer_tests.sh" cmd | tee "$work/summary.txt"
set -e
passed=$(awk '$1 == "TOTAL" {print $2}' "$work/summary.txt")
if [ -z "$passed" ]; then
  echo "mlflow-peer: FAILED: the runner printed no TOTAL line" >&2
  exit 1
fi
echo "mlflow-peer: $passed of 129 MLflow REST suite items pass (mlflow server 3.17.2: 118; floor $PEER_MIN)"
if [ "$passed" -lt "$PEER_MIN" ]; then
  echo "mlflow-peer: FAILED: $passed is below the floor of $PEER_MIN" >&2
  exit 1
fi
