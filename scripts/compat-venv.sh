#!/usr/bin/env bash
# Creates (once) the Python environment the client-side suites share: the official MLflow client
# (pinned), XGBoost for the import fixture, pytest (with the timeout and asyncio plugins MLflow's
# own suites need), and Playwright's Python driver (it drives Debian's Chromium; it never
# downloads a browser). Sourced by mlflow-compat.sh, mlflow-peer.sh and ui-e2e.sh; sets VENV and
# PY.
MLFLOW_VERSION=3.17.2
PLAYWRIGHT_VERSION=1.64.1
VENV=.venv-compat
PY="$VENV/bin/python"
if ! "$PY" -c "import mlflow, xgboost, pytest, pytest_timeout, pytest_asyncio, playwright, importlib.metadata as m, sys; sys.exit(mlflow.__version__ != '$MLFLOW_VERSION' or m.version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
  echo "creating $VENV (mlflow $MLFLOW_VERSION, playwright $PLAYWRIGHT_VERSION)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "mlflow==$MLFLOW_VERSION" "xgboost-cpu==3.2.0" "pytest==8.*" "pytest-timeout==2.*" "pytest-asyncio==1.*" "playwright==$PLAYWRIGHT_VERSION"
fi
