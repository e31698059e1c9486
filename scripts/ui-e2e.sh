#!/usr/bin/env bash
# The registry web UI in real headless Chromium: starts the registry binary with authentication
# on, logs two training runs with `loanctl train`, then runs the Playwright (Python) tests in
# services/model-registry/tests/ui against Debian's Chromium. Screenshots of the main pages go to
# target/ui-screenshots/. Installs Chromium (apt) when missing, and Playwright with the shared
# Python environment (scripts/compat-venv.sh); never downloads a browser of Playwright's own.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ ! -x "$CHROMIUM" ]; then
  echo "ui-e2e: installing Debian's chromium" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
[ -x "$CHROMIUM" ] || { echo "ui-e2e: $CHROMIUM is missing and could not be installed" >&2; exit 1; }
source scripts/compat-venv.sh

cargo build --release -p model-registry -p loanctl
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'ui-e2e-secret\n' | target/release/loanctl registry hash-password --user reviewer >"$dir/users"
printf 'reviewer:MANAGE\n' >"$dir/permissions"
target/release/model-registry --host 127.0.0.1 --port "$port" --data-dir "$dir/registry" \
  --auth-users-file "$dir/users" --auth-permissions-file "$dir/permissions" >"$dir/registry.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.5
done
export MLFLOW_TRACKING_URI="http://127.0.0.1:$port" MLFLOW_TRACKING_USERNAME=reviewer MLFLOW_TRACKING_PASSWORD=ui-e2e-secret
for v in v1 v2; do
  alias=(); [ "$v" = v1 ] && alias=(--alias champion)
  target/release/loanctl train --data data/german_credit.csv --spec data/german_credit.spec.json \
    --out "$dir/$v" --trees 60 --registry "$MLFLOW_TRACKING_URI" --register-as loan-default "${alias[@]}" 2>>"$dir/train.log" >/dev/null
done
rm -rf target/ui-screenshots
if ! UI_SCREENSHOTS=target/ui-screenshots CHROMIUM="$CHROMIUM" "$PY" -m pytest -q -p no:cacheprovider services/model-registry/tests/ui; then
  echo "ui-e2e: FAILED; registry log:" >&2
  tail -50 "$dir/registry.log" >&2
  exit 1
fi
echo "ui-e2e: screenshots in target/ui-screenshots/" >&2
