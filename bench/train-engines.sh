#!/usr/bin/env bash
# Training side by side with XGBoost, in one run on this machine (issue: the training engine).
#
#   bench/train-engines.sh [--with-gbdt] [--skip-1m]
#
# 1. One fit on the 100,000-row file (`loanctl generate --like data/german_credit.csv --seed 11
#    --id-column ""`), 80/20 stratified split, 200 trees, depth 4, eta 0.05: the hist engine
#    (examples/fit_once.rs) and XGBoost 3.2 `tree_method="hist"` (bench/xgb_fit_once.py) on the
#    very same encoded matrix, with 2 threads and with 1. `--with-gbdt` adds the gbdt crate
#    (about 30 s per fit).
# 2. Quality on German credit: the same single fit on five stratified splits (seed 42 first).
# 3. `loanctl train` with every default (SMOTE or class weights, 3 calibration folds, thresholds,
#    report, plots) on the 100k file and, unless --skip-1m, on 1,000,000 rows: wall time, peak
#    memory (GNU time's maximum resident set), test ROC AUC and Brier.
# Prints a Markdown table. Needs python3 and /usr/bin/time; creates bench/reference/.venv from
# the pinned requirements if it has no xgboost.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_GBDT=0
SKIP_1M=0
for a in "$@"; do
  case $a in
    --with-gbdt) WITH_GBDT=1 ;;
    --skip-1m) SKIP_1M=1 ;;
    *) echo "usage: bench/train-engines.sh [--with-gbdt] [--skip-1m]" >&2; exit 2 ;;
  esac
done
say() { echo "train-engines: $*" >&2; }
[ -x /usr/bin/time ] || { say "needs GNU time (apt-get install -y time)"; exit 1; }
cargo build --release -q -p loanctl -p training --example fit_once
LOANCTL=target/release/loanctl
FIT=target/release/examples/fit_once
VENV=bench/reference/.venv
PY=$VENV/bin/python
if ! "$PY" -c "import xgboost, sklearn" 2>/dev/null; then
  say "creating $VENV (pinned requirements)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r bench/reference/requirements.txt
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
SPEC=data/german_credit.spec.json
say "generating 100,000 rows"
"$LOANCTL" generate --like data/german_credit.csv --seed 11 --id-column "" --rows 100000 --out "$TMP/100k.csv" >/dev/null
field() { python3 -c "import json,sys; print(round(json.loads(sys.stdin.read())['$1'], ${2:-4}))"; }

echo "## One fit: 100,000 rows (80,000 to fit), 55 encoded columns, 200 trees, depth 4"
echo
echo "| learner | threads | wall time (s) | test ROC AUC |"
echo "| --- | --- | --- | --- |"
for t in 2 1; do
  out=$(RAYON_NUM_THREADS=$t "$FIT" "$TMP/100k.csv" $SPEC hist 42 "$TMP/dump100k")
  echo "| hist (this repo) | $t | $(echo "$out" | field seconds 3) | $(echo "$out" | field test_roc_auc) |"
  out=$("$PY" bench/xgb_fit_once.py "$TMP/dump100k" $t)
  echo "| XGBoost $("$PY" -c 'import xgboost; print(xgboost.__version__)') hist | $t | $(echo "$out" | field seconds 3) | $(echo "$out" | field test_roc_auc) |"
done
if [ $WITH_GBDT = 1 ]; then
  out=$("$FIT" "$TMP/100k.csv" $SPEC gbdt 42)
  echo "| gbdt crate | 2 | $(echo "$out" | field seconds 3) | $(echo "$out" | field test_roc_auc) |"
fi

echo
echo "## Quality: German credit, one fit per stratified split (same split for both)"
echo
echo "| split seed | hist ROC AUC | XGBoost ROC AUC | difference |"
echo "| --- | --- | --- | --- |"
sum_h=0; sum_x=0
for seed in 42 1 2 3 4; do
  h=$("$FIT" data/german_credit.csv $SPEC hist $seed "$TMP/dumpgc$seed" | field test_roc_auc)
  x=$("$PY" bench/xgb_fit_once.py "$TMP/dumpgc$seed" 2 | field test_roc_auc)
  echo "| $seed | $h | $x | $(python3 -c "print(f'{$h - $x:+.4f}')") |"
  sum_h=$(python3 -c "print($sum_h + $h)"); sum_x=$(python3 -c "print($sum_x + $x)")
done
echo "| mean | $(python3 -c "print(round($sum_h / 5, 4))") | $(python3 -c "print(round($sum_x / 5, 4))") | $(python3 -c "print(f'{($sum_h - $sum_x) / 5:+.4f}')") |"

train() { # DATA LABEL [ARGS...]
  local data=$1 label=$2
  shift 2
  /usr/bin/time -f "%e %M" -o "$TMP/time" "$LOANCTL" train --data "$data" --spec $SPEC --out "$TMP/out" "$@" >/dev/null 2>"$TMP/err" \
    || { cat "$TMP/err" >&2; exit 1; }
  read -r secs kb <"$TMP/time"
  python3 - "$TMP/out/report.json" "$label" "$secs" "$kb" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["evaluation"]["metrics"]
b = r.get("balance", {})
how = {"smote": f"SMOTE +{b.get('rows')}", "weights": f"weights {b.get('scale_pos_weight', 0):.2f}"}.get(b.get("method"), "none")
print(f"| {sys.argv[2]} | {float(sys.argv[3]):.1f} | {int(sys.argv[4]) / 1024:.0f} | {m['roc_auc']:.4f} | {m['brier']:.4f} | {how} |")
PY
}
echo
echo "## loanctl train, every default"
echo
echo "| data | wall time (s) | peak memory (MiB) | test ROC AUC | Brier | balancing |"
echo "| --- | --- | --- | --- | --- | --- |"
train data/german_credit.csv "German credit (1,000 rows), hist"
train data/german_credit.csv "German credit (1,000 rows), gbdt" --engine gbdt
train "$TMP/100k.csv" "100,000 rows, hist"
if [ $SKIP_1M = 0 ]; then
  say "generating 1,000,000 rows"
  "$LOANCTL" generate --like data/german_credit.csv --seed 11 --id-column "" --rows 1000000 --out "$TMP/1m.csv" >/dev/null
  train "$TMP/1m.csv" "1,000,000 rows, hist"
fi
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%d)."
