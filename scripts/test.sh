#!/usr/bin/env bash
# Runs every test in the workspace. Release mode: training-heavy tests (real data, 200 trees)
# take seconds optimised and minutes without, and the build is shared with `cargo bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --release "$@"
