#!/usr/bin/env bash
# Fuzzes the batch-file splitter (CSV/NDJSON), the feature-spec loader and the model-bundle loader
# (fuzz/fuzz_targets), SECONDS_EACH seconds per target (default 60), with cargo-fuzz and
# libFuzzer. Not part of CI. Seeds come from the bundled data; findings land in
# fuzz/artifacts/<target>/ and stop the run with the reproducing input's path.
#   scripts/fuzz.sh [seconds] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(batch_split spec_load bundle_load)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/corpus/batch_split fuzz/corpus/spec_load fuzz/corpus/bundle_load
cp data/german_credit.spec.json fuzz/corpus/spec_load/german_credit.spec.json
{ printf '\x00'; head -40 data/german_credit.csv; } >fuzz/corpus/batch_split/german.csv
{ printf '\x01'; python3 -c 'import csv, json; [print(json.dumps(r)) for r in list(csv.DictReader(open("data/german_credit.csv")))[:40]]'; } >fuzz/corpus/batch_split/german.ndjson
[ -f models/gc/model/model.json ] || cargo run --release -p loanctl -- train --data data/german_credit.csv \
  --spec data/german_credit.spec.json --out models/gc --trees 20
cp models/gc/model/model.json fuzz/corpus/bundle_load/model.json
for target in "${targets[@]}"; do
  echo "fuzz: $target for ${seconds}s" >&2
  # The toolchain is stable; RUSTC_BOOTSTRAP lets it take the sanitizer flags cargo-fuzz passes.
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096
done
