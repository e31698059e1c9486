#!/usr/bin/env bash
# Side by side on this machine, in one go: the Rust platform against a Python reference of the
# stack it replaces (FastAPI + Uvicorn + scikit-learn StandardScaler + XGBoost, bench/reference/)
# and against `mlflow server`. Prints a Markdown table with machine details and ratios, and
# writes it to OUT (default bench/results.md, relative to the repository root). With OUT
# BENCHMARKS.md it replaces its own section there (between its markers) or appends it.
#
#   bench/compare.sh [--quick] [--duration S] [--connections "16 64"] [--threads N] [--tuned-python]
#                    [--profile P] [--skip-single] [--skip-batch] [--skip-registry] [OUT]
#
#   --quick          3 s per load run (default 15 s) and 1 s warm-ups: a smoke run, noisy figures
#   --duration S     seconds per load run
#   --threads N      wrk load threads for single scoring (default 1; 2 puts the load generator on
#                    both cores, competing with the server under test)
#   --tuned-python   also load the Python service with REF_ENCODER=numpy (hand-written encoder
#                    instead of a one-row DataFrame through the ColumnTransformer)
#   --profile P      the cargo profile whose binaries run (default dist: what the Dockerfiles ship,
#                    whole-program optimised; release links faster and runs a few per cent slower)
#   --retrain        retrain both models even if models/gc and models/reference exist
#   --batch-rows N   rows of the generated batch file (default 1000000)
#
# Measures: single-score throughput and latency p50/p99 at 16 and 64 connections (wrk, one load
# thread, the body of bench/predict.lua), server memory (RSS at ready, peak VmHWM after the load;
# for Python the sum over uvicorn's processes), time from process start to /readyz 200, batch
# throughput on the 1M-row file (Rust: the API in embedded mode via bench/batch-job.sh and
# `loanctl score`; Python: bench/reference/batch.py), registry log_metric and search_runs rates
# (model-registry vs `mlflow server`, both on SQLite).
#
# Needs: target/dist/{api,model-registry,loanctl} (cargo build --profile dist -p api -p model-registry
# -p loanctl), wrk (apt-get install -y wrk), python3. Creates bench/reference/.venv (pinned
# requirements) and, unless .venv-compat has mlflow 3.17.2, bench/reference/.venv-compat.
# Everything binds 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=15
WARMUP=2
CONNECTIONS="16 64"
TUNED=0
THREADS=1
SKIP_SINGLE=0
SKIP_BATCH=0
SKIP_REGISTRY=0
RETRAIN=0
BATCH_ROWS=1000000
QUICK=0
OUT=bench/results.md
PROFILE=dist
ARGS=$*
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; DURATION=3; WARMUP=1 ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --tuned-python) TUNED=1 ;;
    --threads) THREADS=$2; shift ;;
    --skip-single) SKIP_SINGLE=1 ;;
    --skip-batch) SKIP_BATCH=1 ;;
    --skip-registry) SKIP_REGISTRY=1 ;;
    --retrain) RETRAIN=1 ;;
    --profile) PROFILE=$2; shift ;;
    --batch-rows) BATCH_ROWS=$2; shift ;;
    -h|--help) sed -n "2,30p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "compare: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT=$1 ;;
  esac
  shift
done

say() { echo "compare: $*" >&2; }
die() { echo "compare: error: $*" >&2; exit 1; }

REF=bench/reference
VENV=$REF/.venv
PY=$VENV/bin/python
CORES=$(nproc)
BATCH_FILE=data/generated/apps_1m.csv
[ "$BATCH_ROWS" = 1000000 ] || BATCH_FILE=data/generated/apps_${BATCH_ROWS}.csv
export no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
# Some machines set these for old OpenBLAS builds; they slow the current numpy bundled in the
# venv, so the Python side runs without them here (its BLAS kernel is shown in the table).
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

# ---------------------------------------------------------------------------------------------
# Preflight: binaries and tools, before anything is started.
BIN=target/$PROFILE
for b in api model-registry loanctl; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it first with
  cargo build --profile $PROFILE -p api -p model-registry -p loanctl"
done
command -v wrk >/dev/null || die "wrk is not installed (apt-get install -y wrk)"
command -v curl >/dev/null || die "curl is not installed"
[ -x /usr/bin/time ] || die "/usr/bin/time is not installed (apt-get install -y time)"

TMP=$(mktemp -d /tmp/compare.XXXXXX)
PGIDS=()
cleanup() {
  local g
  for g in "${PGIDS[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for g in "${PGIDS[@]}"; do kill -0 -- "-$g" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for g in "${PGIDS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then say "raw logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD...: runs CMD in its own process group (its id is the process's id, so the whole
# tree -- uvicorn's or mlflow's workers -- is stopped by that id); sets STARTED_PID and T_START.
start() {
  local name=$1; shift
  T_START=$(date +%s%N)
  setsid "$@" >"$TMP/$name.log" 2>&1 &
  STARTED_PID=$!
  PGIDS+=("$STARTED_PID")
}
# stop PGID: stops one started tree and forgets it.
stop() {
  local g=$1 keep=() x
  kill -TERM -- "-$g" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$g" 2>/dev/null || true
  for x in "${PGIDS[@]}"; do [ "$x" = "$g" ] || keep+=("$x"); done
  PGIDS=("${keep[@]+"${keep[@]}"}")
}
# run NAME CMD...: runs CMD to the end in its own process group (so an interrupted run stops it
# too), output in $TMP/NAME.log; returns its status.
run() {
  local name=$1 pid rc=0
  start "$@"
  pid=$STARTED_PID
  wait "$pid" || rc=$?
  stop "$pid"
  return $rc
}
# wait_ready NAME URL PID TIMEOUT_S: polls URL until 200; prints seconds since T_START.
wait_ready() {
  local name=$1 url=$2 pid=$3 limit=$4 end code
  end=$(( $(date +%s) + limit ))
  while :; do
    code=$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    if [ "$code" = 200 ]; then
      python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / 1e9:.3f}')" "$T_START" "$(date +%s%N)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then tail -30 "$TMP/$name.log" >&2; die "$name exited before it was ready"; fi
    if [ "$(date +%s)" -gt "$end" ]; then tail -30 "$TMP/$name.log" >&2; die "$name not ready after ${limit} s"; fi
    sleep 0.01
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# tree_kib PGID FIELD: sum of FIELD (VmRSS, VmHWM) in KiB over the processes of a group.
tree_kib() {
  local g=$1 f=$2 sum=0 p v
  for p in $(ps -e -o pid=,pgid= | awk -v g="$g" '$2==g{print $1}'); do
    v=$(awk -v f="$f:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null || true)
    sum=$(( sum + ${v:-0} ))
  done
  echo "$sum"
}
tree_count() { ps -e -o pgid= | awk -v g="$1" '$1==g' | wc -l; }

# Results: one line per row, tab-separated: section, measure, rust value, python value, unit,
# which is better (high|low), note. Rendered at the end.
RES=$TMP/results.tsv
: >"$RES"
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }

# ---------------------------------------------------------------------------------------------
# Python environments.
if ! "$PY" -c "import fastapi, uvicorn, sklearn, xgboost, pandas, imblearn" 2>/dev/null; then
  say "creating $VENV from $REF/requirements.txt"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REF/requirements.txt"
fi
MLFLOW_VERSION=3.17.2
MLPY=""
if [ "$SKIP_REGISTRY" = 0 ]; then
  for v in .venv-compat "$REF/.venv-compat"; do
    if "$v/bin/python" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$MLFLOW_VERSION')" 2>/dev/null; then
      MLPY=$v/bin/python; break
    fi
  done
  if [ -z "$MLPY" ]; then
    say "creating $REF/.venv-compat with mlflow $MLFLOW_VERSION"
    python3 -m venv "$REF/.venv-compat"
    "$REF/.venv-compat/bin/pip" install -q "mlflow==$MLFLOW_VERSION"
    MLPY=$REF/.venv-compat/bin/python
  fi
fi

# ---------------------------------------------------------------------------------------------
# Machine details.
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD0" -v c="$CORES" 'BEGIN{exit !(l > c / 2)}'; then
  say "warning: load average $LOAD0 on $CORES cores: something else is running, absolute figures will be low"
fi
pyver() { "$PY" -c "import importlib.metadata as m, sys; print(' '.join(f'{p} {m.version(p)}' for p in sys.argv[1:]))" "$@"; }
{
  echo "## Rust vs the Python stack, side by side ($(date -u +%Y-%m-%d))"
  echo
  echo "Produced by \`bench/compare.sh${ARGS:+ $ARGS}\` ($DURATION s per load run$( [ $QUICK = 1 ] && echo ': a smoke run, figures noisier than usual')). Machine and software:"
  echo
  echo "| | |"
  echo "| --- | --- |"
  echo "| cores (nproc) | $CORES |"
  echo "| CPU | $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)$(awk -F': ' '/^cpu MHz/{printf ", %.0f MHz", $2; exit}' /proc/cpuinfo) |"
  echo "| memory | $(awk '/^MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
  echo "| kernel | $(uname -sr) |"
  echo "| load average at start | $(cut -d' ' -f1-3 /proc/loadavg) |"
  echo "| Rust | $(rustc --version 2>/dev/null || echo 'rustc not on PATH'), \`$PROFILE\` profile; git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)') |"
  echo "| Python | $("$PY" -c 'import platform; print(platform.python_version())'); $(pyver fastapi uvicorn pydantic scikit-learn xgboost-cpu pandas numpy imbalanced-learn); OpenBLAS kernel $("$PY" -c 'import numpy, threadpoolctl; print(",".join(sorted({i.get("architecture") or "?" for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})) or "?")' 2>/dev/null || echo '?') |"
  [ -n "$MLPY" ] && echo "| MLflow | $("$MLPY" -c 'import mlflow; print(mlflow.__version__)') (\`mlflow server\`, its defaults: uvicorn workers, SQLite backend) |"
  echo "| load generator | $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), \`wrk -t$THREADS\` for single scoring (\`-t1\` for the registry), on the same cores as the servers |"
} >"$TMP/head.md"

# ---------------------------------------------------------------------------------------------
# Models.
if [ "$RETRAIN" = 1 ] || [ ! -f models/gc/model/MLmodel ]; then
  say "training the Rust model into models/gc"
  "$BIN"/loanctl train --data data/german_credit.csv --spec data/german_credit.spec.json --out models/gc >"$TMP/train-rust.log" 2>&1 \
    || { tail -20 "$TMP/train-rust.log" >&2; die "loanctl train failed"; }
fi
if [ "$RETRAIN" = 1 ] || [ ! -f models/reference/meta.json ]; then
  say "training the Python reference model into models/reference"
  "$PY" "$REF/train.py" --data data/german_credit.csv --spec data/german_credit.spec.json --out models/reference >"$TMP/train-py.log" 2>&1 \
    || { tail -20 "$TMP/train-py.log" >&2; die "train.py failed"; }
fi
read -r RUST_AUC PY_AUC < <(python3 - <<'PY'
import json
def get(path, *keys):
    try:
        v = json.load(open(path))
        for k in keys:
            v = v[k]
        return f"{float(v):.4f}"
    except Exception:
        return "?"
print(get("models/gc/report.json", "evaluation", "metrics", "roc_auc"),
      get("models/reference/meta.json", "metrics", "test_roc_auc"))
PY
)

# ---------------------------------------------------------------------------------------------
# Single-application scoring.
BODY_LUA=$TMP/predict.lua
cp bench/predict.lua "$BODY_LUA"
BODY=$(sed -n 's/^wrk.body = \[\[\(.*\)\]\]$/\1/p' bench/predict.lua)
[ -n "$BODY" ] || die "could not read the request body from bench/predict.lua"

# load NAME URL CONNECTIONS SECONDS: runs wrk, saves its output as $TMP/wrk-NAME.txt.
load() {
  wrk -t"$THREADS" -c"$3" -d"$4"s --timeout 10s --latency -s "$BODY_LUA" "$2" >"$TMP/wrk-$1.txt" 2>&1 || {
    cat "$TMP/wrk-$1.txt" >&2; die "wrk failed on $2"; }
}
# wrk_stats FILE: "rps p50_ms p99_ms errors mean_ms"
wrk_stats() {
  python3 - "$1" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s|m)", s).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
mean = ms(re.search(r"^\s+Latency\s+(\S+)", t, re.M).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
err = 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
if m:
    err += sum(map(int, m.groups()))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
if m:
    err += int(m.group(1))
print(rps, p50, p99, err, mean)
PY
}
check_score() {  # URL: one request must answer 200 with a probability and a decision
  local out
  out=$(curl --noproxy '*' -sf "$1" -H 'content-type: application/json' -d "$BODY") || die "POST $1 failed"
  case "$out" in *'"default_probability"'*) ;; *) die "POST $1 answered $out";; esac
  case "$out" in *'"decision"'*) ;; *) die "POST $1 answered $out";; esac
  echo "$out"
}
# serve_load KEY URL: warm-up, then one wrk run per connection count; stats in S[KEY-CONNECTIONS].
declare -A S
serve_load() {
  local key=$1 url=$2 c
  load "$key-warmup" "$url" 16 "$WARMUP"
  for c in $CONNECTIONS; do
    say "  $key: wrk -t$THREADS -c$c -d${DURATION}s"
    load "$key-$c" "$url" "$c" "$DURATION"
    S["$key-$c"]=$(wrk_stats "$TMP/wrk-$key-$c.txt")
  done
}

if [ "$SKIP_SINGLE" = 0 ]; then
  # Rust API, local bundle, embedded mode (no Redis), actix with one worker per core (default).
  port=$(free_port)
  say "single score: Rust api on 127.0.0.1:$port"
  start rust-api env MODEL_URI="$ROOT/models/gc/model" API_HOST=127.0.0.1 API_PORT="$port" RUST_LOG=warn \
    JOBS_ROOT="$TMP/api-artifacts" MODEL_CACHE_DIR="$TMP/api-models" MLFLOW_TRACKING_URI=http://127.0.0.1:9 \
    "$BIN"/api
  rpid=$STARTED_PID
  R_READY=$(wait_ready rust-api "http://127.0.0.1:$port/readyz" "$rpid" 30)
  sleep 0.5
  R_RSS0=$(tree_kib "$rpid" VmRSS)
  check_score "http://127.0.0.1:$port/v1/predict?explain=false" >"$TMP/rust-answer.json"
  serve_load rust-noexplain "http://127.0.0.1:$port/v1/predict?explain=false"
  serve_load rust-explain "http://127.0.0.1:$port/v1/predict"
  R_HWM=$(tree_kib "$rpid" VmHWM)
  stop "$rpid"

  # Python reference: uvicorn with one worker process per core, as deployed.
  port=$(free_port)
  UVICORN=("$VENV/bin/uvicorn" app:app --app-dir "$REF" --host 127.0.0.1 --port "$port" --workers "$CORES" --no-access-log --log-level info)
  say "single score: Python reference on 127.0.0.1:$port (uvicorn --workers $CORES)"
  start py-api env REF_MODEL_DIR="$ROOT/models/reference" "${UVICORN[@]}"
  ppid_=$STARTED_PID
  P_READY=$(wait_ready py-api "http://127.0.0.1:$port/readyz" "$ppid_" 120)
  # Every worker must be up before memory is read (readyz answers once the first one is).
  for _ in $(seq 1 200); do [ "$(grep -c 'Application startup complete' "$TMP/py-api.log" || true)" -ge "$CORES" ] && break; sleep 0.1; done
  sleep 0.5
  P_RSS0=$(tree_kib "$ppid_" VmRSS)
  P_NPROC=$(tree_count "$ppid_")
  check_score "http://127.0.0.1:$port/v1/predict" >"$TMP/py-answer.json"
  serve_load py "http://127.0.0.1:$port/v1/predict"
  P_HWM=$(tree_kib "$ppid_" VmHWM)
  stop "$ppid_"

  if [ "$TUNED" = 1 ]; then
    port=$(free_port)
    say "single score: Python reference, REF_ENCODER=numpy, on 127.0.0.1:$port"
    start py-api-tuned env REF_MODEL_DIR="$ROOT/models/reference" REF_ENCODER=numpy \
      "$VENV/bin/uvicorn" app:app --app-dir "$REF" --host 127.0.0.1 --port "$port" --workers "$CORES" --no-access-log --log-level info
    tpid=$STARTED_PID
    wait_ready py-api-tuned "http://127.0.0.1:$port/readyz" "$tpid" 120 >/dev/null
    check_score "http://127.0.0.1:$port/v1/predict" >/dev/null
    serve_load pytuned "http://127.0.0.1:$port/v1/predict"
    stop "$tpid"
  fi

  for c in $CONNECTIONS; do
    read -r rr r50 r99 rerr rmean <<<"${S[rust-noexplain-$c]}"
    read -r er e50 e99 eerr emean <<<"${S[rust-explain-$c]}"
    read -r pr p50 p99 perr pmean <<<"${S[py-$c]}"
    sec="Single application, $c connections"
    row "$sec" "requests/s (Rust without reasons)" "$rr" "$pr" "req/s" high "errors: Rust $rerr, Python $perr"
    row "$sec" "p50 latency (Rust without reasons)" "$r50" "$p50" "ms" low "mean: Rust $(printf %.3g "$rmean") ms, Python $(printf %.3g "$pmean") ms"
    row "$sec" "p99 latency (Rust without reasons)" "$r99" "$p99" "ms" low ""
    row "$sec" "requests/s (Rust **with** reason codes)" "$er" "$pr" "req/s" high "errors: Rust $eerr"
    row "$sec" "p99 latency (Rust **with** reason codes)" "$e99" "$p99" "ms" low ""
    if [ "$TUNED" = 1 ]; then
      read -r tr t50 t99 terr tmean <<<"${S[pytuned-$c]}"
      row "$sec" "requests/s vs tuned Python (REF_ENCODER=numpy)" "$rr" "$tr" "req/s" high "errors: tuned Python $terr"
      row "$sec" "p99 latency vs tuned Python" "$r99" "$t99" "ms" low ""
      row "$sec" "requests/s (Rust **with** reason codes) vs tuned Python" "$er" "$tr" "req/s" high "tuned Python computes no reasons"
      row "$sec" "p99 latency (Rust **with** reason codes) vs tuned Python" "$e99" "$t99" "ms" low ""
    fi
  done
  sec="Scoring service"
  row "$sec" "time from process start to /readyz 200" "$R_READY" "$P_READY" "s" low "Python: interpreter, imports, model load"
  row "$sec" "resident memory at ready" "$(awk -v k="$R_RSS0" 'BEGIN{print k/1024}')" "$(awk -v k="$P_RSS0" 'BEGIN{print k/1024}')" "MiB" low "Python: sum over $P_NPROC processes (uvicorn master, $CORES workers, helpers)"
  row "$sec" "peak resident memory after the load (VmHWM)" "$(awk -v k="$R_HWM" 'BEGIN{print k/1024}')" "$(awk -v k="$P_HWM" 'BEGIN{print k/1024}')" "MiB" low "Python: sum of each process's peak"
fi

# ---------------------------------------------------------------------------------------------
# Batch: the 1M-row file.
if [ "$SKIP_BATCH" = 0 ]; then
  if [ ! -s "$BATCH_FILE" ]; then
    say "generating $BATCH_FILE"
    "$BIN"/loanctl generate --like data/german_credit.csv --rows "$BATCH_ROWS" --out "$BATCH_FILE" --seed 7 >"$TMP/generate.log" 2>&1 \
      || { tail "$TMP/generate.log" >&2; die "loanctl generate failed"; }
  fi
  ROWS=$(( $(wc -l <"$BATCH_FILE") - 1 ))
  MB=$(du -m "$BATCH_FILE" | cut -f1)
  cat "$BATCH_FILE" >/dev/null  # page cache warm for every contender

  say "batch: Rust API, embedded mode (bench/batch-job.sh embedded none)"
  if curl --noproxy '*' -s -o /dev/null --max-time 1 http://127.0.0.1:8095/ ; then
    die "port 8095 (used by bench/batch-job.sh) is taken"
  fi
  run batch-rust env BIN="$BIN" bash bench/batch-job.sh embedded none "$BATCH_FILE" || { cat "$TMP/batch-rust.log" >&2; die "bench/batch-job.sh failed"; }
  read -r RB_S RB_RPS RB_RSS RB_ACC < <(python3 - "$TMP/batch-rust.log" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
acc = float(re.search(r"accepted after ([\d.]+) s", t).group(1))
s = float(re.search(r"results after ([\d.]+) s", t).group(1))
rps = float(re.search(r"([\d,]+) rows/s", t).group(1).replace(",", ""))
rss = float(re.search(r"peak RSS api ([\d.]+) MiB", t).group(1))
print(s, rps, f"{rss:.1f}", acc)
PY
)

  say "batch: loanctl score --reasons none"
  run score /usr/bin/time -f "%e %M" -o "$TMP/score.time" "$BIN"/loanctl score --model models/gc --data "$BATCH_FILE" \
    --out "$TMP/scored.csv" --reasons none || { tail "$TMP/score.log" >&2; die "loanctl score failed"; }
  read -r LS_S LS_KB <"$TMP/score.time"
  rm -f "$TMP/scored.csv"

  say "batch: Python reference batch.py ($CORES processes)"
  run batch-py "$PY" "$REF/batch.py" --model models/reference --data "$BATCH_FILE" --processes "$CORES" --json \
    || { tail "$TMP/batch-py.log" >&2; die "batch.py failed"; }
  grep '^{' "$TMP/batch-py.log" | tail -1 >"$TMP/batch-py.json"
  read -r PB_S PB_RPS PB_RSS_MAIN PB_RSS_W PB_ROWS < <(python3 -c '
import json, sys; r = json.load(open(sys.argv[1]))
print(r["seconds"], r["rows_per_s"], r["peak_rss_mib_main"], r["peak_rss_mib_worker"], r["rows"])' "$TMP/batch-py.json")
  [ "$PB_ROWS" = "$ROWS" ] || die "batch.py scored $PB_ROWS rows of $ROWS"

  sec="Batch: $(python3 -c "print(f'{int(\"$ROWS\"):,}')") rows ($MB MiB CSV), probability and decision (no reasons)"
  row "$sec" "API job, embedded mode, submission to results (Rust) vs batch.py, $CORES processes" "$RB_RPS" "$PB_RPS" "rows/s" high "Rust $RB_S s, of which $RB_ACC s upload + check + split over HTTP; Python $(printf %.2f "$PB_S") s from a local file (split + score + write parts)"
  row "$sec" "\`loanctl score --reasons none\` (Rust) vs batch.py" "$(awk -v r="$ROWS" -v s="$LS_S" 'BEGIN{print r/s}')" "$PB_RPS" "rows/s" high "Rust $LS_S s, one process"
  PB_RSS=$(awk -v a="$PB_RSS_MAIN" -v b="$PB_RSS_W" -v n="$CORES" 'BEGIN{print a+b*n}')
  row "$sec" "peak resident memory: the API during its job vs batch.py" "$RB_RSS" "$PB_RSS" "MiB" low "Python: main + $CORES × largest worker"
  row "$sec" "peak resident memory: \`loanctl score\` vs batch.py" "$(awk -v k="$LS_KB" 'BEGIN{print k/1024}')" "$PB_RSS" "MiB" low ""
fi

# ---------------------------------------------------------------------------------------------
# Registry: model-registry vs mlflow server, both on SQLite.
if [ "$SKIP_REGISTRY" = 0 ]; then
  setup_registry() {  # URL -> writes $TMP/setup-NAME.json
    python3 - "$1" <<'PY'
import json, os, sys, urllib.request
url = sys.argv[1].rstrip("/") + "/api/2.0/mlflow"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with opener.open(req, timeout=60) as r:
        return json.load(r)
tag = os.getpid()
exp = post("/experiments/create", {"name": f"bench-log-{tag}"})["experiment_id"]
runs = [post("/runs/create", {"experiment_id": exp, "start_time": i})["run"]["info"]["run_id"] for i in range(8)]
sexp = post("/experiments/create", {"name": f"bench-search-{tag}"})["experiment_id"]
for i in range(100):
    rid = post("/runs/create", {"experiment_id": sexp, "start_time": i})["run"]["info"]["run_id"]
    post("/runs/log-batch", {"run_id": rid, "params": [{"key": "depth", "value": str(i % 5)}],
                             "metrics": [{"key": "auc", "value": 0.7 + i / 1000, "timestamp": 1, "step": 0}]})
print(json.dumps({"runs": runs, "search_experiment": sexp}))
PY
  }
  write_lua() {  # SETUP_JSON DIR: log-metric-1.lua, log-metric-8.lua, search.lua
    python3 - "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); d = sys.argv[2]
head = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
for n in (1, 8):
    runs = ", ".join(f'"{r}"' for r in s["runs"][:n])
    open(f"{d}/log-metric-{n}.lua", "w").write(head + f"""local runs = {{{runs}}}
local i = 0
request = function()
  i = i + 1
  local body = string.format('{{"run_id": "%s", "key": "loss", "value": %.9f, "timestamp": %d, "step": %d}}', runs[(i % #runs) + 1], 1.0 / i, i, i)
  return wrk.format(nil, nil, nil, body)
end
""")
flt = "metrics.auc > 0.75 and params.depth = '3'"
body = json.dumps({"experiment_ids": [s["search_experiment"]], "filter": flt, "max_results": 100})
open(f"{d}/search.lua", "w").write(head + f"wrk.body = [[{body}]]\n")
PY
  }
  reg_load() {  # NAME URL: four scenarios
    local name=$1 url=$2 c
    mkdir -p "$TMP/lua-$name"
    setup_registry "$url" >"$TMP/setup-$name.json" || die "setting up runs on $name failed"
    write_lua "$TMP/setup-$name.json" "$TMP/lua-$name"
    for c in 1 8; do
      say "  $name: log_metric, $c client(s), ${DURATION}s"
      wrk -t1 -c$c -d"$DURATION"s --timeout 10s --latency -s "$TMP/lua-$name/log-metric-$c.lua" "$url/api/2.0/mlflow/runs/log-metric" >"$TMP/wrk-$name-log-$c.txt" 2>&1 \
        || { cat "$TMP/wrk-$name-log-$c.txt" >&2; die "wrk failed on $name"; }
      S["$name-log-$c"]=$(wrk_stats "$TMP/wrk-$name-log-$c.txt")
      say "  $name: search_runs, $c client(s), ${DURATION}s"
      wrk -t1 -c$c -d"$DURATION"s --timeout 10s --latency -s "$TMP/lua-$name/search.lua" "$url/api/2.0/mlflow/runs/search" >"$TMP/wrk-$name-search-$c.txt" 2>&1 \
        || { cat "$TMP/wrk-$name-search-$c.txt" >&2; die "wrk failed on $name"; }
      S["$name-search-$c"]=$(wrk_stats "$TMP/wrk-$name-search-$c.txt")
    done
  }

  port=$(free_port)
  say "registry: model-registry on 127.0.0.1:$port (SQLite)"
  start registry "$BIN"/model-registry --host 127.0.0.1 --port "$port" --data-dir "$TMP/registry"
  gpid=$STARTED_PID
  G_READY=$(wait_ready registry "http://127.0.0.1:$port/health" "$gpid" 30)
  sleep 1
  G_RSS0=$(tree_kib "$gpid" VmRSS)
  reg_load rust "http://127.0.0.1:$port"
  G_HWM=$(tree_kib "$gpid" VmHWM)
  stop "$gpid"

  port=$(free_port)
  say "registry: mlflow server $MLFLOW_VERSION on 127.0.0.1:$port (SQLite, its default workers)"
  mkdir -p "$TMP/mlflow"
  start mlflow "$(dirname "$MLPY")/mlflow" server --backend-store-uri "sqlite:///$TMP/mlflow/mlflow.db" \
    --artifacts-destination "$TMP/mlflow/artifacts" --host 127.0.0.1 --port "$port"
  mpid=$STARTED_PID
  M_READY=$(wait_ready mlflow "http://127.0.0.1:$port/health" "$mpid" 180)
  sleep 3
  M_RSS0=$(tree_kib "$mpid" VmRSS)
  M_NPROC=$(tree_count "$mpid")
  reg_load mlflow "http://127.0.0.1:$port"
  M_HWM=$(tree_kib "$mpid" VmHWM)
  stop "$mpid"

  sec="Model registry (SQLite) vs \`mlflow server\` $MLFLOW_VERSION (SQLite)"
  for c in 1 8; do
    read -r gl gl50 gl99 glerr _ <<<"${S[rust-log-$c]}"
    read -r ml ml50 ml99 mlerr _ <<<"${S[mlflow-log-$c]}"
    read -r gs gs50 gs99 gserr _ <<<"${S[rust-search-$c]}"
    read -r ms ms50 ms99 mserr _ <<<"${S[mlflow-search-$c]}"
    who=$([ $c = 1 ] && echo "one client" || echo "$c clients")
    row "$sec" "\`log_metric\`, $who" "$gl" "$ml" "req/s" high "p50 $(printf %.2f "$gl50") vs $(printf %.2f "$ml50") ms; errors $glerr / $mlerr"
    row "$sec" "\`search_runs\` over 100 runs, $who" "$gs" "$ms" "req/s" high "p50 $(printf %.2f "$gs50") vs $(printf %.2f "$ms50") ms; errors $gserr / $mserr"
  done
  row "$sec" "time from process start to /health 200" "$G_READY" "$M_READY" "s" low ""
  row "$sec" "resident memory at ready" "$(awk -v k="$G_RSS0" 'BEGIN{print k/1024}')" "$(awk -v k="$M_RSS0" 'BEGIN{print k/1024}')" "MiB" low "mlflow: sum over its $M_NPROC processes"
  row "$sec" "peak resident memory after the load (VmHWM)" "$(awk -v k="$G_HWM" 'BEGIN{print k/1024}')" "$(awk -v k="$M_HWM" 'BEGIN{print k/1024}')" "MiB" low "mlflow: sum of each process's peak"
fi

# ---------------------------------------------------------------------------------------------
# Render.
BIN="$BIN" python3 - "$RES" "$TMP/head.md" "$OUT" "$CORES" "$RUST_AUC" "$PY_AUC" "$(cut -d' ' -f1-3 /proc/loadavg)" "$THREADS" <<'PY'
import os, sys
res, head, out, cores, rust_auc, py_auc, load_end, threads = sys.argv[1:9]

def fmt(v, unit):
    v = float(v)
    if unit in ("req/s", "rows/s"):
        return f"{v:,.0f} {unit}"
    if unit == "ms":
        return f"{v:.3g} ms" if v < 100 else f"{v:,.0f} ms"
    if unit == "s":
        return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"
    if unit == "MiB":
        return f"{v:,.1f} MiB" if v < 100 else f"{v:,.0f} MiB"
    return f"{v:g} {unit}"

def ratio(r, p, better):
    r, p = float(r), float(p)
    if r <= 0 or p <= 0:
        return "n/a"
    x = r / p if better == "high" else p / r
    s = f"{x:.0f}" if x >= 10 else f"{x:.2g}" if x >= 1 else f"{x:.2f}"
    return f"**{s}×**"

lines = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
md = [open(head).read().rstrip("\n"), ""]
md.append(f"Load average at the end: {load_end}. Ratio: how many times better the Rust figure is "
          "(throughput: Rust / Python; latency, memory, time: Python / Rust). "
          "Absolute figures on a shared 2-core machine move by ±15 % or more from run to run; the ratios are what to read.")
md.append("")
md.append(f"Models: Rust `loanctl train` defaults (test ROC AUC {rust_auc}); Python `bench/reference/train.py` "
          f"(same settings: 200 trees, depth 4, learning rate 0.05, SMOTE-NC, Platt; test ROC AUC {py_auc}; "
          "its own seeded split, so not the same 200 held-out rows).")
md.append("")
md.append("| section | measure | Rust | Python | ratio | note |")
md.append("| --- | --- | --- | --- | --- | --- |")
last = None
for sec, measure, r, p, unit, better, note in lines:
    md.append(f"| {sec if sec != last else ''} | {measure} | {fmt(r, unit)} | {fmt(p, unit)} | {ratio(r, p, better)} | {note} |")
    last = sec
md.append("")
secs = {l[0] for l in lines}
has = lambda prefix: any(x.startswith(prefix) for x in secs)
md.append("How each side ran:")
if has("Single") or has("Scoring"):
    md.append(f"- Rust: `{os.environ['BIN']}/api` with `MODEL_URI=models/gc/model` (embedded mode, actix with one worker per core), "
              "`POST /v1/predict?explain=false` (probability and decision, what the Python service answers) and `POST /v1/predict` "
              "(with exact TreeSHAP reason codes, which the Python service does not compute).")
    md.append(f"- Python: `uvicorn app:app --workers {cores}` (one worker process per core, uvloop + httptools, access log off), "
              "FastAPI with a pydantic model generated from the feature spec, a one-row pandas DataFrame through the fitted "
              "scikit-learn ColumnTransformer (StandardScaler + one-hot), XGBoost `inplace_predict` with one thread per worker, "
              "Platt calibration and the same thresholds rule.")
    if any("tuned" in l[1] for l in lines):
        md.append("- Tuned Python (`REF_ENCODER=numpy`): the same service with the DataFrame + ColumnTransformer step replaced by a "
                  "hand-written encoder using the same fitted parameters; shows how much of the gap is per-row pandas/scikit-learn overhead.")
    md.append(f"- Load: `wrk -t{threads} -cN --latency` with the body of `bench/predict.lua`, after a warm-up; errors are socket "
              "errors plus non-2xx answers. wrk shares the two cores with the server under test.")
if has("Batch"):
    md.append(f"- Batch: Rust through `bench/batch-job.sh embedded none` (upload over HTTP, split into 50,000-row chunks, {cores} chunks "
              f"at once, results written) and `loanctl score --reasons none`; Python `bench/reference/batch.py` ({cores} prefork "
              "processes, as a Celery worker with one process per core; 50,000-row chunks read from the local file: pandas.read_csv, "
              "ColumnTransformer, XGBoost, result parts written; the clock starts after the processes have loaded the model).")
if has("Model registry"):
    md.append("- Registry: both servers on SQLite in a fresh folder; 8 runs for `log_metric`, 100 runs with a param and a metric for "
              "`search_runs` (`metrics.auc > 0.75 and params.depth = '3'`, max 100); `wrk -t1 -c1` and `-c8`; `mlflow server` with "
              "its default workers.")
text = "\n".join(md) + "\n"
import os
if os.path.basename(out) == "BENCHMARKS.md":
    # Replace this script's section (between its markers), or append it the first time.
    begin, end = "<!-- bench/compare.sh: begin -->", "<!-- bench/compare.sh: end -->"
    doc = open(out).read() if os.path.exists(out) else ""
    block = f"{begin}\n{text}{end}\n"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end) + 1 :]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block
    open(out, "w").write(doc)
else:
    open(out, "w").write(text)
print(text)
PY
say "table written to $OUT"
