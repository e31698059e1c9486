# The everyday commands. Each recipe is a thin wrapper around commands that work the same
# without `just` (README.md gives them). `just` alone lists the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Image tag for `images` and `up` (compose reads VERSION too).
tag := env_var_or_default("VERSION", "dev")

# List the recipes
default:
    @just --list

# Lints and every test: what CI runs, less the Kubernetes validation (.ci/run)
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    scripts/test.sh

# Every test (needs the local PostgreSQL; extra arguments go to `cargo test`)
test *args:
    scripts/test.sh {{ args }}

# Everything in one process: registry, first model, API and batch worker (README: "Run it")
quickstart *args:
    cargo run --release -p loanctl -- quickstart {{ args }}

# Train on the bundled data: bundle, report and plots in models/gc
train:
    cargo run --release -p loanctl -- train --data data/german_credit.csv --spec data/german_credit.spec.json --out models/gc

# The registry web UI in headless Chromium; screenshots in target/ui-screenshots/
ui-e2e:
    scripts/ui-e2e.sh

# Fuzz the batch-file splitter, the spec and bundle loaders, `seconds` each (not in CI)
fuzz seconds="60" *targets:
    scripts/fuzz.sh {{ seconds }} {{ targets }}

# Run the model registry, embedded (SQLite + artifacts in loanctl-data/registry), on :5000
registry:
    cargo run --release -p model-registry

# Serve the model trained by `just train` on :8000 (no registry needed)
api:
    MODEL_URI=models/gc/model cargo run --release -p api

# Latency of scoring one application (criterion)
bench:
    cargo bench -p model --bench scorer

# Start the local stack (postgres, redis, registry, one-shot trainer, api): needs a Docker engine
up:
    docker compose up -d --build

# Stop the local stack (volumes are kept; `docker compose down -v` drops them)
down:
    docker compose down

# Build the images as ghcr.io/loan-scoring/<name>:dev (VERSION=x.y.z just images for another tag)
images:
    #!/usr/bin/env bash
    set -euo pipefail
    for name in model-registry api loanctl worker; do
      docker build -f "docker/Dockerfile.$name" --build-arg VERSION={{ tag }} \
        -t "ghcr.io/loan-scoring/$name:{{ tag }}" .
    done

# Offline validation of k8s/ (render, schemas, cross-references, policies)
k8s-validate:
    scripts/k8s-validate.sh

# Offline validation of docker/Dockerfile.* and docker-compose.yml (hadolint, compose config)
containers-validate:
    scripts/containers-validate.sh

# One-command quickstart: not built yet; prints the manual steps
quickstart:
    @echo "'loanctl quickstart' (train, register, promote and serve in one command) is not built yet."
    @echo "Until then, three steps, each in its own terminal:"
    @echo "  1. train:    cargo run --release -p loanctl -- train --data data/german_credit.csv --spec data/german_credit.spec.json --out models/gc"
    @echo "  2. registry: cargo run --release -p model-registry"
    @echo "               (not needed to serve models/gc; to register the model, rerun step 1 with"
    @echo "                --registry http://localhost:5000 --register-as loan-default --alias champion)"
    @echo "  3. api:      MODEL_URI=models/gc/model cargo run --release -p api"
    @echo "               (or, after registering, plain 'cargo run --release -p api' serves models:/loan-default@champion)"
    @echo "Then: curl -s localhost:8000/readyz"
