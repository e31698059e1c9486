#!/usr/bin/env bash
# Contract fuzzing with schemathesis (pinned): the scoring API against the /openapi.json it serves,
# and the model registry's MLflow REST endpoints against services/model-registry/openapi.json.
# Checks: no 5xx (not_a_server_error) and every documented response matching its schema
# (response_schema_conformance). A bounded number of examples per operation and a fixed seed keep
# it to about a minute on two cores. Exits non-zero on any failure of either run, or if a server
# logged an internal error or a panic.
#
# Builds target/release/{api,model-registry,loanctl} and runs copies of them (in a temporary
# folder, so a rebuild during the run cannot swap them). Both servers are started here,
# bound to 127.0.0.1 on free ports, and stopped on exit:
#   - the registry on a fresh SQLite folder, seeded by `loanctl train --registry` (a run with
#     params, metrics and artifacts; loan-default version 1 with alias champion);
#   - the API in embedded mode (no Redis) serving the bundle that training wrote (MODEL_URI).
# Then a few records are made over the APIs (a batch job, a 10-tree training job, registry
# records for the destructive operations) and half of the generated ids, names and versions are
# drawn from the real ones (schemathesis dictionaries), so most requests reach real data.
#
# Settings (environment, defaults in brackets):
#   SCHEMATHESIS_MAX_EXAMPLES (100)   test cases per operation and phase
#   SCHEMATHESIS_SEED (20261129)      fixed, so a run is repeatable
#   SCHEMATHESIS_PHASES (examples,coverage,fuzzing,stateful)
#   SCHEMATHESIS_CHECKS (not_a_server_error,response_schema_conformance)
#   SCHEMATHESIS_ONLY (both)          api or registry, to run one side
#   SCHEMATHESIS_VENV (/tmp/venv-schemathesis)
#   SCHEMATHESIS_REPORT_DIR (target/schemathesis)  the servers' logs, api/ and registry/ reports
#   SCHEMATHESIS_REPORTS (junit)      e.g. junit,har to keep every request and response
#   SCHEMATHESIS_REGISTRY_DATABASE_URL (unset: embedded SQLite)  postgres://… of an empty
#                                     database, to fuzz the registry on PostgreSQL
#   SCHEMATHESIS_EXTRA_ARGS           more `schemathesis run` options (split on spaces)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20261129}
PHASES=${SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}
CHECKS=${SCHEMATHESIS_CHECKS:-not_a_server_error,response_schema_conformance}
ONLY=${SCHEMATHESIS_ONLY:-}
# Outside the repository: .gitignore does not cover a .venv-schemathesis/ folder.
VENV=${SCHEMATHESIS_VENV:-/tmp/venv-schemathesis}
REPORT_DIR=${SCHEMATHESIS_REPORT_DIR:-target/schemathesis}
REPORTS=${SCHEMATHESIS_REPORTS:-junit}
REGISTRY_DOC=services/model-registry/openapi.json

# --- the binaries
cargo build --release -p api -p model-registry -p loanctl
missing=()
for b in api model-registry loanctl; do
  [ -x "target/release/$b" ] || missing+=("target/release/$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "schemathesis: missing ${missing[*]}; build them first:" >&2
  echo "  cargo build --release -p api -p model-registry -p loanctl" >&2
  exit 2
fi

# --- the Python environment
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
  echo "schemathesis: creating $VENV (schemathesis $SCHEMATHESIS_VERSION)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$VENV/bin/schemathesis"

# --- a private folder, the servers, and the cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/schemathesis.XXXXXX")
rm -rf "$REPORT_DIR/api" "$REPORT_DIR/registry"
mkdir -p "$WORK/bin" "$REPORT_DIR"
REPORT_DIR=$(cd "$REPORT_DIR" && pwd)
# Hypothesis keeps a cache (.hypothesis/) in the current folder unless told otherwise.
export HYPOTHESIS_STORAGE_DIRECTORY="$WORK/hypothesis"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp target/release/api target/release/model-registry target/release/loanctl "$WORK/bin/"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for URL PID NAME LOG: until URL answers 200, the process dies, or 60 s pass.
wait_for() {
  local url=$1 pid=$2 name=$3 log=$4
  for _ in $(seq 1 120); do
    curl -fs "$url" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "schemathesis: $name exited before answering $url; its log:" >&2
      tail -30 "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "schemathesis: $name did not answer $url within 60 s; its log:" >&2
  tail -30 "$log" >&2
  exit 1
}

# Servers take nothing from the caller's environment that could point them elsewhere.
clean_env=(env -u REDIS_URL -u DATABASE_URL -u ARTIFACT_ROOT -u JOBS_ROOT -u API_KEYS -u API_KEYS_FILE
  -u REGISTRY_AUTH_USERS_FILE -u REGISTRY_AUTH_TOKENS_FILE -u MLFLOW_TRACKING_TOKEN
  -u MLFLOW_TRACKING_USERNAME -u MLFLOW_TRACKING_PASSWORD -u OTEL_EXPORTER_OTLP_ENDPOINT
  -u MODEL_NAME RUST_LOG=warn)

REG_PORT=$(free_port)
REG_URL="http://127.0.0.1:$REG_PORT"
reg_args=(--host 127.0.0.1 --port "$REG_PORT" --data-dir "$WORK/registry")
if [ -n "${SCHEMATHESIS_REGISTRY_DATABASE_URL:-}" ]; then
  reg_args+=(--backend-store-uri "$SCHEMATHESIS_REGISTRY_DATABASE_URL" --artifacts-destination "$WORK/registry/artifacts")
fi
"${clean_env[@]}" "$WORK/bin/model-registry" "${reg_args[@]}" >"$REPORT_DIR/registry.log" 2>&1 &
pids+=($!)
wait_for "$REG_URL/health" "${pids[-1]}" model-registry "$REPORT_DIR/registry.log"

# A model for the API, and realistic data in the registry (run, params, metrics, artifacts,
# version, alias): the registry's examples name loan-default, version 1 and alias champion.
"${clean_env[@]}" "$WORK/bin/loanctl" train --data data/german_credit.csv --spec data/german_credit.spec.json \
  --out "$WORK/gc" --trees 40 --registry "$REG_URL" --register-as loan-default --alias champion \
  >"$WORK/train.log" 2>&1 || { echo "schemathesis: loanctl train failed:" >&2; tail -30 "$WORK/train.log" >&2; exit 1; }

API_PORT=$(free_port)
API_URL="http://127.0.0.1:$API_PORT"
"${clean_env[@]}" MODEL_URI="$WORK/gc/model" API_HOST=127.0.0.1 API_PORT="$API_PORT" \
  JOBS_ROOT="$WORK/store" MODEL_CACHE_DIR="$WORK/api-models" MLFLOW_TRACKING_URI="$REG_URL" \
  "$WORK/bin/api" >"$REPORT_DIR/api.log" 2>&1 &
pids+=($!)
wait_for "$API_URL/readyz" "${pids[-1]}" api "$REPORT_DIR/api.log"

# Real records for the fuzzers to reach: half of the generated ids, names and versions are drawn
# from these (schemathesis dictionaries), the rest are generated. Destructive operations (delete,
# rename) draw from records made for them, so the seeded ones stay for the other operations.
# On the API, a finished batch job and a finished training job (10 trees) for the {id} paths.
if ! "$VENV/bin/python" - "$REG_URL" "$API_URL" "$WORK" >"$WORK/seed.log" 2>&1 <<'PY'; then
import json, sys, time, urllib.request

reg, api, work = sys.argv[1], sys.argv[2], sys.argv[3]
mlflow = reg + "/api/2.0/mlflow"


def call(url, body=None, method=None, ctype="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("GET" if body is None else "POST"))
    if data is not None:
        req.add_header("content-type", ctype)
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


# The run, experiment and version loanctl train registered.
v1 = call(f"{mlflow}/model-versions/get?name=loan-default&version=1")["model_version"]
run = call(f"{mlflow}/runs/get?run_id={v1['run_id']}")["run"]
metric_keys = sorted({m["key"] for m in run["data"]["metrics"]})[:20]
tag_keys = sorted({t["key"] for t in run["data"]["tags"] if len(t["key"]) <= 32})[:10]
# Records for the destructive operations.
vexp = call(f"{mlflow}/experiments/create", {"name": "fuzz-victim"})["experiment_id"]
vrun = call(f"{mlflow}/runs/create", {"experiment_id": vexp, "run_name": "fuzz-victim"})["run"]["info"]["run_id"]
call(f"{mlflow}/registered-models/create", {"name": "fuzz-victim"})
call(f"{mlflow}/model-versions/create",
     {"name": "fuzz-victim", "source": f"mlflow-artifacts:/{vexp}/{vrun}/artifacts/model", "run_id": vrun})
call(f"{mlflow}/registered-models/alias", {"name": "fuzz-victim", "alias": "victim", "version": "1"})
call(f"{mlflow}/registered-models/create", {"name": "fuzz-victim-versions"})
for _ in range(3):
    call(f"{mlflow}/model-versions/create", {"name": "fuzz-victim-versions",
                                               "source": f"mlflow-artifacts:/{vexp}/{vrun}/artifacts/model"})

# API jobs: 20 applications from the bundled data, and a small retraining.
with open("data/german_credit.csv", "rb") as f:
    data = f.read()
head = b"".join(data.splitlines(keepends=True)[:21])
batch = call(f"{api}/v1/batch-jobs", head, ctype="text/csv")["id"]
train = call(f"{api}/v1/training-jobs?trees=10", data, ctype="text/csv")["id"]
for path in (f"/v1/batch-jobs/{batch}", f"/v1/training-jobs/{train}"):
    for _ in range(240):
        state = call(api + path)["state"]
        if state in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    print(path, state)


def toml(dictionaries, parameters, operations=()):
    q = json.dumps
    out = ["[cache]", "enabled = false  # no .schemathesis/ crash cache in the repository", ""]
    for name, values in dictionaries.items():
        out += [f"[dictionaries.{name}]", f"values = [{', '.join(q(v) for v in values)}]", ""]
    binding = lambda d, p: f'{{ dictionary = {q(d)}, probability = {p} }}'
    out.append("[parameters]")
    out += [f"{q(k)} = {binding(d, p)}" for k, (d, p) in parameters.items()]
    for ids, params in operations:
        out += ["", "[[operations]]", f"include-operation-id = [{', '.join(q(i) for i in ids)}]",
                "parameters = { " + ", ".join(f"{q(k)} = {binding(d, p)}" for k, (d, p) in params.items()) + " }"]
    return "\n".join(out) + "\n"


both = lambda name, d, p=0.5: {f"query.{name}": (d, p), f"body.{name}": (d, p)}
with open(f"{work}/registry.toml", "w") as f:
    f.write(toml(
        {"run_id": [run["info"]["run_id"]], "experiment_id": ["0", run["info"]["experiment_id"]],
         "experiment_name": ["Default", "loan-default"], "model_name": ["loan-default"], "version": ["1"],
         "alias": ["champion"], "metric_key": metric_keys or ["test_roc_auc"], "tag_key": tag_keys or ["team"],
         "victim_experiment_id": [vexp], "victim_run_id": [vrun], "victim_model_name": ["fuzz-victim"],
         "victim_alias": ["victim"], "victim_versions_name": ["fuzz-victim-versions"], "victim_version": ["1", "2", "3"]},
        {**both("run_id", "run_id"), **both("experiment_id", "experiment_id"), "body.experiment_ids[*]": ("experiment_id", 0.5),
         "query.experiment_name": ("experiment_name", 0.5), **both("name", "model_name"), **both("version", "version"),
         **both("alias", "alias"), "query.metric_key": ("metric_key", 0.5), "body.key": ("tag_key", 0.25)},
        [(["createExperiment", "createRegisteredModel"], {"body.name": ("model_name", 0.05)}),
         (["deleteExperiment", "updateExperiment"], {"body.experiment_id": ("victim_experiment_id", 0.5)}),
         (["deleteRun"], {"body.run_id": ("victim_run_id", 0.5)}),
         (["deleteRegisteredModel", "renameRegisteredModel"], {"body.name": ("victim_model_name", 0.5)}),
         (["deleteModelVersion"], {"body.name": ("victim_versions_name", 0.5), "body.version": ("victim_version", 0.5)}),
         (["deleteRegisteredModelAlias"], {"body.name": ("victim_model_name", 0.5), "body.alias": ("victim_alias", 0.5)})]))
with open(f"{work}/api.toml", "w") as f:
    f.write(toml({"job_id": [batch, train]}, {"path.id": ("job_id", 0.5)}))
PY
  echo "schemathesis: seeding test data failed:" >&2
  tail -30 "$WORK/seed.log" >&2
  exit 1
fi

common=(--checks "$CHECKS" --max-examples "$MAX_EXAMPLES" --seed "$SEED" --phases "$PHASES"
  --generation-database none --request-timeout 30 --no-color --workers 1 --output-sanitize false)
read -r -a extra <<<"${SCHEMATHESIS_EXTRA_ARGS:-}"
common+=("${extra[@]}")
echo "schemathesis $SCHEMATHESIS_VERSION: api $API_URL, registry $REG_URL; checks $CHECKS;" \
  "$MAX_EXAMPLES examples per operation; seed $SEED; phases $PHASES" >&2

status=0
if [ -z "$ONLY" ] || [ "$ONLY" = api ]; then
  echo "=== scoring API: $API_URL/openapi.json" >&2
  "$ST" --config-file "$WORK/api.toml" run "$API_URL/openapi.json" "${common[@]}" \
    --report "$REPORTS" --report-dir "$REPORT_DIR/api" || status=1
fi
if [ -z "$ONLY" ] || [ "$ONLY" = registry ]; then
  echo "=== model registry: $REGISTRY_DOC at $REG_URL/api/2.0/mlflow" >&2
  "$ST" --config-file "$WORK/registry.toml" run "$REGISTRY_DOC" --url "$REG_URL/api/2.0/mlflow" "${common[@]}" \
    --report "$REPORTS" --report-dir "$REPORT_DIR/registry" || status=1
fi

# A panic or an error the servers logged without answering 5xx fails the run too.
for log in "$REPORT_DIR/api.log" "$REPORT_DIR/registry.log"; do
  if grep -q '"message":"request failed"\|panicked' "$log"; then
    echo "schemathesis: $(basename "$log" .log) logged failures:" >&2
    # -m, not head: under pipefail, head closing the pipe would end the script with SIGPIPE.
    grep -m 20 '"message":"request failed"\|panicked' "$log" | cut -c1-400 >&2
    status=1
  fi
done

if [ "$status" = 0 ]; then
  echo "schemathesis: passed (reports and server logs in $REPORT_DIR)" >&2
else
  echo "schemathesis: FAILED (reports and server logs in $REPORT_DIR)" >&2
fi
exit $status
