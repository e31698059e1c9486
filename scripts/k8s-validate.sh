#!/usr/bin/env bash
# Validates k8s/ offline, with no cluster:
#   1. renders every overlay in k8s/overlays/ with `kubectl kustomize` (and k8s/ itself,
#      which must equal the production overlay);
#   2. validates every render against the Kubernetes OpenAPI schemas of the oldest and the
#      newest version we support, strictly (unknown fields are errors), with
#      kubernetes-validate;
#   3. runs scripts/k8s_check.py on every render: cross-references, DESIGN.md's topology
#      numbers, hardening, network flows; then its self-test (it must catch deliberate breaks);
#   4. checks the monitoring component's Grafana dashboard and alerts: the dashboard JSON
#      parses, every PromQL expression of the dashboard and of the PrometheusRule parses and
#      names only metrics and labels the Rust sources (services/, libs/) export, each alert has
#      a severity, a summary and a description, and the renders carry the dashboard ConfigMap
#      and the rule wherever they carry the monitors (k8s/validation/monitoring_check.py); then
#      its self-test (a misspelled metric and other deliberate breaks must be caught);
#   5. runs checkov's Kubernetes policies (skips, with reasons: k8s/validation/checkov.yaml).
# Exits non-zero if anything fails, after a summary of every step.
#
# Tools: kubectl (with its built-in kustomize), Python 3.11. kubernetes-validate, checkov,
# PyYAML and promql-parser are installed from PyPI into .venv-k8s/ (pinned:
# k8s/validation/requirements.txt)
# on first run and whenever the pins change. K8S_VALIDATE_KEEP=1 keeps the rendered files.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="$ROOT/.venv-k8s"
REQUIREMENTS=k8s/validation/requirements.txt
CHECKOV_CONFIG=k8s/validation/checkov.yaml
SECRETS_TEMPLATE=k8s/base/secrets.template.yaml
DASHBOARD=k8s/components/monitoring/dashboards/loan-scoring.json
ALERT_RULES=k8s/components/monitoring/prometheusrule.yaml

# Oldest: 1.30, the first release where the native preStop `sleep` action is on by default
# (the manifests use it so that images need no shell); older schemas reject the field.
# Newest: the newest schemas kubernetes-validate ships.
K8S_VERSIONS=(1.30.0 1.37.0)
# Custom resources have no built-in schema; kubernetes-validate warns and skips them, and
# scripts/k8s_check.py checks their references instead. A warning for any other kind fails.
# (PrometheusRule: k8s/validation/monitoring_check.py checks its structure and expressions.)
CRD_KINDS='HTTPRoute|ServiceMonitor|PodMonitor|PrometheusRule|ScaledObject|TriggerAuthentication'

started=$(date +%s)
summary=()
failures=0
pass() { summary+=("PASS  $1"); }
fail() { summary+=("FAIL  $1"); failures=$((failures + 1)); }
step() { printf '\n== %s\n' "$1"; }
die() { echo "k8s-validate: $*" >&2; exit 2; }

# ---- tools -------------------------------------------------------------------------------
step "tools"
command -v kubectl >/dev/null || die "kubectl not found (it provides kustomize)"
kubectl kustomize --help >/dev/null 2>&1 || die "this kubectl has no 'kustomize' subcommand"
echo "kubectl: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"

stamp="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.k8s-validate-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "installing validation tools into ${VENV#"$ROOT"/} (pins changed or first run)"
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check --no-input --quiet --require-virtualenv \
    -r "$REQUIREMENTS"
  echo "$stamp" > "$VENV/.k8s-validate-stamp"
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), checkov $("$VENV/bin/checkov" --version)"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/k8s-validate.XXXXXX")
mkdir -p "$OUT/rendered"
cleanup() {
  if [ "$failures" -eq 0 ] && [ "${K8S_VALIDATE_KEEP:-0}" != 1 ]; then rm -rf "$OUT"
  else echo "rendered manifests and logs kept in $OUT"; fi
}
trap cleanup EXIT

# ---- 1. render ---------------------------------------------------------------------------
step "render (kubectl kustomize)"
overlays=()
for dir in k8s/overlays/*/; do
  name=$(basename "$dir")
  if kubectl kustomize "$dir" > "$OUT/rendered/$name.yaml" 2> "$OUT/render-$name.log"; then
    overlays+=("$name")
    echo "$name: $(grep -c '^kind:' "$OUT/rendered/$name.yaml") objects"
    pass "render $name"
  else
    rm -f "$OUT/rendered/$name.yaml"
    cat "$OUT/render-$name.log"
    fail "render $name"
  fi
done
[ "${#overlays[@]}" -gt 0 ] || die "no overlay rendered"

if kubectl kustomize k8s/ > "$OUT/top.yaml" 2> "$OUT/render-top.log" \
    && cmp -s "$OUT/top.yaml" "$OUT/rendered/production.yaml"; then
  pass "kubectl apply -k k8s/ deploys the production overlay"
else
  cat "$OUT/render-top.log"
  echo "k8s/ does not render the same objects as k8s/overlays/production"
  fail "kubectl apply -k k8s/ deploys the production overlay"
fi

# An optional component that no overlay uses is never rendered, so never validated.
for dir in k8s/components/*/; do
  c=$(basename "$dir")
  if grep -qs "components/$c\$" k8s/overlays/*/kustomization.yaml; then
    pass "component $c is used by an overlay"
  else
    echo "component $c is not used by any overlay"
    fail "component $c is used by an overlay"
  fi
done

# The secret template is not rendered by kustomize; validate and scan it like the rest.
cp "$SECRETS_TEMPLATE" "$OUT/rendered/secrets.template.yaml"

# ---- 2. schemas --------------------------------------------------------------------------
step "schemas (kubernetes-validate --strict)"
for version in "${K8S_VERSIONS[@]}"; do
  log="$OUT/schema-$version.log"
  rc=0
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$OUT"/rendered/*.yaml > "$log" 2>&1 || rc=$?
  # Allowed: "WARN <file> Couldn't find schema for kind <CRD kind> ...". Anything else is not.
  unexpected=$(grep -v -E "^WARN .* Couldn't find schema for kind ($CRD_KINDS) " "$log" | grep -v '^\s*$' || true)
  skipped=$(grep -c -E "Couldn't find schema for kind ($CRD_KINDS) " "$log" || true)
  if [ "$rc" -eq 0 ] && [ -z "$unexpected" ]; then
    echo "Kubernetes $version: all built-in objects valid ($skipped custom resources left to k8s_check.py and monitoring_check.py)"
    pass "schemas, Kubernetes $version (strict)"
  else
    echo "$unexpected"
    fail "schemas, Kubernetes $version (strict)"
  fi
done

# ---- 3. our checker ----------------------------------------------------------------------
step "cross-references and DESIGN.md topology (scripts/k8s_check.py)"
for name in "${overlays[@]}"; do
  if "$VENV/bin/python" scripts/k8s_check.py --profile "$name" --secrets-template "$SECRETS_TEMPLATE" \
      "$OUT/rendered/$name.yaml"; then
    pass "k8s_check $name"
  else
    fail "k8s_check $name"
  fi
done
if [ -f "$OUT/rendered/production.yaml" ] && "$VENV/bin/python" scripts/k8s_check.py --self-test \
    --secrets-template "$SECRETS_TEMPLATE" "$OUT/rendered/production.yaml" > "$OUT/self-test.log"; then
  tail -n 1 "$OUT/self-test.log"
  pass "k8s_check self-test (deliberate breaks are caught)"
else
  cat "$OUT/self-test.log" 2>/dev/null || true
  fail "k8s_check self-test (deliberate breaks are caught)"
fi

# ---- 4. dashboards and alerts -------------------------------------------------------------
step "dashboard and alerts (k8s/validation/monitoring_check.py)"
# (a) The dashboard is plain JSON (Grafana and the ConfigMap take it as it is).
if "$PYTHON" -c 'import json, sys; json.load(open(sys.argv[1]))' "$DASHBOARD"; then
  echo "$DASHBOARD: valid JSON"
  pass "dashboard JSON parses"
else
  fail "dashboard JSON parses"
fi
# (b) Every query names metrics and labels the services export; structure of the alerts; the
# overlays with the monitors carry the dashboard and the rule.
rendered=()
for name in "${overlays[@]}"; do rendered+=("$OUT/rendered/$name.yaml"); done
if "$VENV/bin/python" k8s/validation/monitoring_check.py --dashboard "$DASHBOARD" \
    --rules "$ALERT_RULES" --sources services libs --rendered "${rendered[@]}"; then
  pass "dashboard and alert queries use only metrics the Rust sources export"
else
  fail "dashboard and alert queries use only metrics the Rust sources export"
fi
if "$VENV/bin/python" k8s/validation/monitoring_check.py --dashboard "$DASHBOARD" \
    --rules "$ALERT_RULES" --sources services libs --self-test > "$OUT/monitoring-self-test.log"; then
  tail -n 1 "$OUT/monitoring-self-test.log"
  pass "monitoring_check self-test (a misspelled metric and other breaks are caught)"
else
  cat "$OUT/monitoring-self-test.log"
  fail "monitoring_check self-test (a misspelled metric and other breaks are caught)"
fi

# ---- 5. checkov --------------------------------------------------------------------------
step "policies (checkov, offline)"
# BC_SKIP_MAPPING: do not try to fetch guideline links from the vendor's API (no network).
if BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" -d "$OUT/rendered" --config-file "$CHECKOV_CONFIG" \
    > "$OUT/checkov.log" 2>&1; then
  grep -E '^Passed checks' "$OUT/checkov.log" || true
  pass "checkov ($(grep -c -E '^  - CKV' "$CHECKOV_CONFIG") checks skipped, reasons in $CHECKOV_CONFIG)"
else
  cat "$OUT/checkov.log"
  fail "checkov"
fi

# ---- summary -----------------------------------------------------------------------------
printf '\n== summary (%ss)\n' "$(( $(date +%s) - started ))"
printf '%s\n' "${summary[@]}"
if [ "$failures" -gt 0 ]; then
  echo "k8s-validate: $failures step(s) FAILED"
  exit 1
fi
echo "k8s-validate: all ${#summary[@]} steps passed (Kubernetes ${K8S_VERSIONS[*]}; overlays: ${overlays[*]})"
