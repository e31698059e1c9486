#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (`kubectl kustomize k8s/overlays/<name>`) for what a
schema cannot see: cross-references between objects, the numbers of the topology in
DESIGN.md ("Topology (what k8s/ mirrors)"), the hardening every pod must have, the wiring of
the decision audit log, and which network flows the NetworkPolicies allow and deny.

    k8s_check.py --profile production --secrets-template k8s/base/secrets.template.yaml rendered.yaml
    k8s_check.py --self-test --secrets-template k8s/base/secrets.template.yaml rendered-production.yaml

--self-test breaks the production render in memory in many small ways (a replica count, a
probe delay, a selector...) and fails unless the checker reports every one: a checker that
passes everything would otherwise go unnoticed.

Python 3.11 standard library plus PyYAML. Exit status 0 only when nothing is wrong.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import yaml

# ---------------------------------------------------------------------------------------------
# The contract. DESIGN.md's topology block, as data: change the two together.
# ---------------------------------------------------------------------------------------------

NAMESPACE = "loan-scoring"

# Requests about half of limits: (cpu request, memory request, cpu limit, memory limit).
RESOURCES = {
    "api": ("250m", "512Mi", "500m", "1Gi"),
    "worker": ("500m", "768Mi", "1000m", "2Gi"),
    "redis": ("100m", "128Mi", "200m", "256Mi"),
    "model-registry": ("250m", "512Mi", "500m", "1Gi"),
    "postgres": ("250m", "256Mi", "500m", "512Mi"),
}

REPLICAS = {"model-registry": 1, "worker": 2, "redis": 1, "postgres": 1}  # api: via the HPA

HPA = {
    "target": "api",
    "minReplicas": 3,
    "maxReplicas": 10,
    "cpu": 70,
    "memory": 80,
    "scaleUp": {"stabilizationWindowSeconds": 0,
                "policies": {("Percent", 100, 30), ("Pods", 2, 30)}, "selectPolicy": "Max"},
    "scaleDown": {"stabilizationWindowSeconds": 300, "policies": {("Percent", 50, 60)}},
}

PVCS = {  # name: (size, access mode, workloads that mount it)
    # Registry artifacts only; applicants' files never share a volume with them
    # (docs/security.md, "Where applicants' data lives").
    "mlflow-storage": ("10Gi", "ReadWriteMany", {"model-registry"}),
    # Batch uploads and results, training datasets: the api and the workers only.
    "jobs-storage": ("10Gi", "ReadWriteMany", {"api", "worker"}),
    "postgres-storage": ("5Gi", "ReadWriteOnce", {"postgres"}),
}

# Where each workload keeps its files: variable -> (value, the PVC that path must be on).
STORAGE_PATHS = {
    "model-registry": {"ARTIFACT_ROOT": ("/mnt/mlflow", "mlflow-storage")},
    "api": {"JOBS_ROOT": ("/mnt/jobs", "jobs-storage")},
    "worker": {"JOBS_ROOT": ("/mnt/jobs", "jobs-storage")},
}

# The HTTP border (docs/security.md): which variable lists the Host headers a server answers
# to and which lists the origins allowed to make changes, per workload and its Service.
BORDER = {
    "model-registry": {"service": "model-registry", "hosts": "MLFLOW_SERVER_ALLOWED_HOSTS",
                       "origins": "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",
                       # k8s/README.md registers the first model through `kubectl port-forward`.
                       "also": ("localhost",)},
    "api": {"service": "api", "hosts": "API_ALLOWED_HOSTS", "origins": "CORS_ALLOWED_ORIGINS",
            "also": ()},
}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# ingress-nginx's cors-allow-methods when the annotation is absent.
NGINX_DEFAULT_CORS_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"

CONFIG = {  # ConfigMap values fixed by DESIGN.md
    "MLFLOW_TRACKING_URI": "http://model-registry:5000",
    "MODEL_NAME": "loan-default",
    "MODEL_ALIAS": "champion",
    "REGISTRY_PORT": "5000",
    "API_PORT": "8000",
    "WORKER_PORT": "9000",
}
CONFIG_REQUIRED_KEYS = {"RUST_LOG"}
CONFIGMAP = "loan-scoring-config"

# Which ConfigMap port each workload must listen on.
PORT_KEYS = {"model-registry": "REGISTRY_PORT", "api": "API_PORT", "worker": "WORKER_PORT"}

INGRESS_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/limit-rps": "100",
    "nginx.ingress.kubernetes.io/enable-cors": "true",
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "300",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "300",
}
EDGE_BACKENDS = {"api", "model-registry"}  # the api host and the registry host

# The decision audit log (docs/operations.md): the api and the worker record every decision in
# the audit database, through AUDIT_URL from this Secret key, fail-closed. It is its own database
# with its own role on the registry's server; with the in-cluster PostgreSQL, an init script
# mounted at POSTGRES_INITDB creates both (password: AUDIT_POSTGRES_PASSWORD).
APP_SECRET = "loan-scoring-secrets"
AUDIT_WRITERS = ("api", "worker")
AUDIT_URL_REF = (APP_SECRET, "AUDIT_URL")
AUDIT_MODE = "fail-closed"  # also the services' default when unset
AUDIT_DATABASE, AUDIT_ROLE = "audit", "loan_scoring_audit"
POSTGRES_INITDB = "/docker-entrypoint-initdb.d"

# Keys of APP_SECRET that carry database credentials, and the only workloads that may read
# them: the api and the worker never get the registry's database, nor the registry theirs.
SECRET_KEY_USERS = {
    "DATABASE_URL": {"model-registry"},
    "POSTGRES_PASSWORD": {"postgres"},
    "AUDIT_URL": set(AUDIT_WRITERS),
    "AUDIT_POSTGRES_PASSWORD": {"postgres"},
}

IMAGES = {
    "model-registry": "ghcr.io/loan-scoring/model-registry",
    "api": "ghcr.io/loan-scoring/api",
    "worker": "ghcr.io/loan-scoring/worker",
    "redis": "docker.io/library/redis",
    "postgres": "docker.io/library/postgres",
}


@dataclass(frozen=True)
class Profile:
    """What one overlay is expected to contain."""

    edge: str  # "ingress" (nginx), "gateway" (HTTPRoute), "loadbalancer" (api Service LB)
    postgres: bool = True  # the in-cluster PostgreSQL component
    keda: bool = False
    monitoring: bool = False
    external_db: bool = False


# Every directory in k8s/overlays/ must have an entry: an overlay nobody states expectations
# for is an overlay nobody checks.
PROFILES = {
    "production": Profile(edge="ingress"),
    "production-addons": Profile(edge="ingress", keda=True, monitoring=True),
    "loadbalancer": Profile(edge="loadbalancer"),
    "gateway-api": Profile(edge="gateway"),
    "external-database": Profile(edge="ingress", postgres=False, external_db=True),
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition", "IngressClass"}

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)$")
_MEM_FACTOR = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def cpu(q: Any) -> float:
    m = _CPU.match(str(q))
    if not m:
        raise ValueError(f"not a CPU quantity: {q!r}")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def mem(q: Any) -> float:
    m = _MEM.match(str(q))
    if not m:
        raise ValueError(f"not a memory quantity: {q!r}")
    return float(m.group(1)) * _MEM_FACTOR[m.group(2)]


def dig(obj: Any, *path: Any, default: Any = None) -> Any:
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and -len(obj) <= p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set. An empty
    selector matches everything, as in NetworkPolicy and PDB."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def split_list(value: str | None) -> list[str]:
    """A comma-separated setting, as the services split it (blanks dropped, lower case)."""
    return [x.strip().lower() for x in (value or "").split(",") if x.strip()]


def _split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        i = host.find("]:")
        return (host[:i + 1], host[i + 2:]) if i >= 0 else (host, None)
    name, sep, port = host.rpartition(":")
    if sep and ":" not in name and port.isdigit():
        return name, port
    return host, None


def host_allowed(patterns: list[str], host: str) -> bool:
    """libs/web-guard's rule: `*` allows all; `*` in a pattern matches any run of characters;
    a pattern without a port matches the name on any port, one with a port the whole value."""
    host = host.strip().lower()
    name, _ = _split_port(host)
    for p in patterns:
        if p == "*":
            return True
        subject = host if _split_port(p)[1] is not None else name
        if re.fullmatch(".*".join(re.escape(x) for x in p.split("*")), subject):
            return True
    return False


def image_name(image: str) -> tuple[str, str | None]:
    """ghcr.io/a/b:1.0@sha256:.. -> ("ghcr.io/a/b", "1.0")."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        return ref.rsplit(":", 1)[0], ref.rsplit(":", 1)[1]
    return ref, None


# ---------------------------------------------------------------------------------------------
# The rendered set of objects
# ---------------------------------------------------------------------------------------------


class Render:
    def __init__(self, docs: list[dict], template_docs: list[dict]):
        self.docs = docs
        self.by_kind: dict[str, dict[str, dict]] = {}
        self.duplicates: list[str] = []
        for d in docs:
            kind, name = d.get("kind"), dig(d, "metadata", "name")
            bucket = self.by_kind.setdefault(kind, {})
            if name in bucket:
                self.duplicates.append(f"{kind}/{name}")
            bucket[name] = d
        # Secrets: rendered ones, plus the documented template (created out of band).
        self.secrets: dict[str, set[str]] = {}
        for d in template_docs + list(self.kind("Secret").values()):
            if d.get("kind") == "Secret":
                keys = set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
                self.secrets[d["metadata"]["name"]] = keys

    def kind(self, kind: str) -> dict[str, dict]:
        return self.by_kind.get(kind, {})

    def get(self, kind: str, name: str) -> dict | None:
        return self.kind(kind).get(name)

    def workloads(self) -> dict[str, dict]:
        out = {}
        for k in WORKLOAD_KINDS:
            for name, d in self.kind(k).items():
                out[name] = d
        return out

    @staticmethod
    def pod_spec(workload: dict) -> dict:
        return dig(workload, "spec", "template", "spec", default={}) or {}

    @staticmethod
    def pod_labels(workload: dict) -> dict:
        return dig(workload, "spec", "template", "metadata", "labels", default={}) or {}

    def pods_selected(self, selector: dict | None) -> list[str]:
        return [n for n, w in self.workloads().items() if selector_matches(selector, self.pod_labels(w))]

    def container_ports(self, workload: dict) -> dict[str, int]:
        ports = {}
        for c in self.containers(workload):
            for p in c.get("ports") or []:
                ports[p.get("name") or str(p["containerPort"])] = p["containerPort"]
        return ports

    def containers(self, workload: dict) -> list[dict]:
        spec = self.pod_spec(workload)
        return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])

    def namespace_labels(self, ns: str) -> dict:
        labels = {"kubernetes.io/metadata.name": ns}
        obj = self.get("Namespace", ns)
        if obj:
            labels.update(dig(obj, "metadata", "labels", default={}) or {})
        return labels


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


class Checker:
    def __init__(self, render: Render, profile: Profile):
        self.r = render
        self.p = profile
        self.errors: list[str] = []
        self.checks = 0

    # Each assertion counts as a check; a failed one records a message.
    def ok(self, cond: bool, area: str, msg: str) -> bool:
        self.checks += 1
        if not cond:
            self.errors.append(f"[{area}] {msg}")
        return cond

    def run(self) -> list[str]:
        for fn in (self.check_structure, self.check_services, self.check_scalers,
                   self.check_pdbs, self.check_pod_references, self.check_containers,
                   self.check_hardening, self.check_shutdown, self.check_ingress,
                   self.check_routes, self.check_monitors, self.check_network_policy_selectors,
                   self.check_config_wiring, self.topology_workloads, self.topology_probes,
                   self.topology_resources, self.topology_storage, self.topology_hpa,
                   self.topology_services, self.topology_edge, self.topology_config,
                   self.topology_optional_components, self.topology_storage_paths,
                   self.topology_access, self.topology_audit, self.topology_border,
                   self.topology_network_flows):
            try:
                fn()
            except Exception as e:  # a malformed object must be a finding, not a crash
                self.ok(False, fn.__name__, f"check crashed on malformed input: {type(e).__name__}: {e}")
        return self.errors

    # -- cross-references ------------------------------------------------------------------

    def check_structure(self) -> None:
        self.ok(not self.r.duplicates, "structure", f"duplicate objects: {self.r.duplicates}")
        self.ok(self.r.get("Namespace", NAMESPACE) is not None, "structure",
                f"Namespace {NAMESPACE} is not part of the render")
        for d in self.r.docs:
            if d.get("kind") in CLUSTER_SCOPED:
                continue
            ns = dig(d, "metadata", "namespace")
            self.ok(ns == NAMESPACE, "structure",
                    f"{d.get('kind')}/{dig(d, 'metadata', 'name')} is in namespace {ns!r}, not {NAMESPACE}")

    def check_services(self) -> None:
        for name, svc in self.r.kind("Service").items():
            sel = dig(svc, "spec", "selector") or {}
            if not self.ok(bool(sel), "service", f"Service {name} has no selector"):
                continue
            targets = self.r.pods_selected({"matchLabels": sel})
            if not self.ok(bool(targets), "service", f"Service {name} selects no pod of any workload ({sel})"):
                continue
            for port in dig(svc, "spec", "ports") or []:
                tp = port.get("targetPort", port.get("port"))
                for t in targets:
                    ports = self.r.container_ports(self.r.workloads()[t])
                    found = tp in ports if isinstance(tp, str) else tp in ports.values()
                    self.ok(found, "service",
                            f"Service {name} port {port.get('name')} targets {tp!r}, which {t} does not expose")

    def _scaled(self) -> dict[str, str]:
        """workload name -> what scales it (HPA or ScaledObject)."""
        out = {}
        for n, h in self.r.kind("HorizontalPodAutoscaler").items():
            out[dig(h, "spec", "scaleTargetRef", "name")] = f"HorizontalPodAutoscaler/{n}"
        for n, s in self.r.kind("ScaledObject").items():
            out[dig(s, "spec", "scaleTargetRef", "name")] = f"ScaledObject/{n}"
        return out

    def check_scalers(self) -> None:
        for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
            for n, h in self.r.kind(kind).items():
                ref = dig(h, "spec", "scaleTargetRef") or {}
                target = self.r.get(ref.get("kind", "Deployment"), ref.get("name"))
                if not self.ok(target is not None, "scaling",
                               f"{kind} {n} targets {ref.get('kind', 'Deployment')}/{ref.get('name')}, which does not exist"):
                    continue
                # A manifest replica count would be re-applied over the autoscaler's by every
                # `kubectl apply`.
                self.ok("replicas" not in (target.get("spec") or {}), "scaling",
                        f"{target['kind']} {ref.get('name')} sets spec.replicas although {kind} {n} scales it")
        for n, so in self.r.kind("ScaledObject").items():
            auth_names = [dig(t, "authenticationRef", "name") for t in dig(so, "spec", "triggers") or []]
            for a in filter(None, auth_names):
                self.ok(self.r.get("TriggerAuthentication", a) is not None, "scaling",
                        f"ScaledObject {n} uses TriggerAuthentication {a}, which does not exist")
            for t in dig(so, "spec", "triggers") or []:
                addr = dig(t, "metadata", "address") or ""
                m = re.match(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)$", addr)
                if self.ok(m is not None, "scaling", f"ScaledObject {n}: trigger address {addr!r} is not a "
                           "fully qualified Service address (KEDA resolves it from its own namespace)"):
                    svc, ns, port = m.group(1), m.group(2), int(m.group(3))
                    self.ok(ns == NAMESPACE, "scaling", f"ScaledObject {n}: address namespace {ns} is not {NAMESPACE}")
                    s = self.r.get("Service", svc)
                    self.ok(s is not None and port in [p["port"] for p in dig(s, "spec", "ports") or []],
                            "scaling", f"ScaledObject {n}: no Service {svc} with port {port}")
        for n, ta in self.r.kind("TriggerAuthentication").items():
            for ref in dig(ta, "spec", "secretTargetRef") or []:
                self._secret_ref(f"TriggerAuthentication {n}", ref.get("name"), ref.get("key"))

    def check_pdbs(self) -> None:
        scaled = self._scaled()
        for n, pdb in self.r.kind("PodDisruptionBudget").items():
            targets = self.r.pods_selected(dig(pdb, "spec", "selector"))
            if not self.ok(bool(targets), "pdb", f"PodDisruptionBudget {n} selects no workload"):
                continue
            spec = pdb["spec"]
            for t in targets:
                w = self.r.workloads()[t]
                replicas = w["spec"].get("replicas", 1)
                if t in scaled:
                    replicas = self._min_replicas(t) or replicas
                # A budget that allows no eviction blocks every node drain.
                if "maxUnavailable" in spec:
                    self.ok(spec["maxUnavailable"] not in (0, "0%"), "pdb",
                            f"PodDisruptionBudget {n} has maxUnavailable 0: node drains would hang")
                if isinstance(spec.get("minAvailable"), int):
                    self.ok(spec["minAvailable"] < replicas, "pdb",
                            f"PodDisruptionBudget {n}: minAvailable {spec['minAvailable']} >= {replicas} replicas of {t}")

    def _min_replicas(self, workload: str) -> int | None:
        for h in self.r.kind("HorizontalPodAutoscaler").values():
            if dig(h, "spec", "scaleTargetRef", "name") == workload:
                return dig(h, "spec", "minReplicas", default=1)
        for s in self.r.kind("ScaledObject").values():
            if dig(s, "spec", "scaleTargetRef", "name") == workload:
                return dig(s, "spec", "minReplicaCount", default=0)
        return None

    def _secret_ref(self, where: str, name: str | None, key: str | None) -> None:
        if not self.ok(name in self.r.secrets, "reference",
                       f"{where} uses Secret {name}, which is neither rendered nor in the secrets template"):
            return
        if key is not None:
            self.ok(key in self.r.secrets[name], "reference",
                    f"{where} uses key {key} of Secret {name}, which has no such key")

    def _configmap_ref(self, where: str, name: str | None, key: str | None) -> None:
        cm = self.r.get("ConfigMap", name)
        if not self.ok(cm is not None, "reference", f"{where} uses ConfigMap {name}, which does not exist"):
            return
        if key is not None:
            self.ok(key in (cm.get("data") or {}), "reference",
                    f"{where} uses key {key} of ConfigMap {name}, which has no such key")

    def check_pod_references(self) -> None:
        for wn, w in self.r.workloads().items():
            spec = self.r.pod_spec(w)
            sa = spec.get("serviceAccountName")
            if sa:
                self.ok(self.r.get("ServiceAccount", sa) is not None, "reference",
                        f"{wn} runs as ServiceAccount {sa}, which does not exist")
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for v in volumes.values():
                if "persistentVolumeClaim" in v:
                    claim = v["persistentVolumeClaim"]["claimName"]
                    self.ok(self.r.get("PersistentVolumeClaim", claim) is not None, "reference",
                            f"{wn} mounts PVC {claim}, which does not exist")
                if "configMap" in v:
                    self._configmap_ref(f"{wn} volume {v['name']}", v["configMap"].get("name"), None)
                if "secret" in v:
                    self._secret_ref(f"{wn} volume {v['name']}", v["secret"].get("secretName"), None)
            for c in self.r.containers(w):
                where = f"{wn}/{c['name']}"
                for ef in c.get("envFrom") or []:
                    if "configMapRef" in ef:
                        self._configmap_ref(where, ef["configMapRef"].get("name"), None)
                    if "secretRef" in ef:
                        self._secret_ref(where, ef["secretRef"].get("name"), None)
                for e in c.get("env") or []:
                    vf = e.get("valueFrom") or {}
                    if "configMapKeyRef" in vf:
                        self._configmap_ref(f"{where} env {e['name']}", vf["configMapKeyRef"]["name"],
                                            vf["configMapKeyRef"]["key"])
                    if "secretKeyRef" in vf:
                        self._secret_ref(f"{where} env {e['name']}", vf["secretKeyRef"]["name"],
                                         vf["secretKeyRef"]["key"])
                for m in c.get("volumeMounts") or []:
                    self.ok(m["name"] in volumes, "reference", f"{where} mounts volume {m['name']}, which the pod lacks")
                for e in c.get("env") or []:
                    if e["name"].endswith("_FILE") and "value" in e:
                        self._file_ref(f"{where} env {e['name']}", e["value"], c, volumes)
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    port = dig(c, probe, "httpGet", "port")
                    if isinstance(port, str):
                        self.ok(port in ports, "reference", f"{where} {probe} uses port {port!r}, which it does not declare")

    def _file_ref(self, where: str, path: str, container: dict, volumes: dict) -> None:
        """A *_FILE variable must name a file that a mounted Secret or ConfigMap provides."""
        mounts = [m for m in container.get("volumeMounts") or []
                  if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not self.ok(bool(mounts), "reference", f"{where} points at {path}, which no volume provides"):
            return
        m = max(mounts, key=lambda m: len(m["mountPath"]))
        v = volumes.get(m["name"]) or {}
        rel = path[len(m["mountPath"].rstrip("/")) + 1:]
        if "secret" in v or "configMap" in v:
            src = v.get("secret") or v.get("configMap")
            items = src.get("items")
            if items:
                self.ok(rel in [i["path"] for i in items], "reference", f"{where}: {path} is not among the projected items")
                return
            if "secret" in v:
                name = src.get("secretName")
                self._secret_ref(f"{where} ({path})", name, rel)
            else:
                self._configmap_ref(f"{where} ({path})", src.get("name"), rel)

    def check_containers(self) -> None:
        for wn, w in self.r.workloads().items():
            for c in self.r.containers(w):
                where = f"{wn}/{c['name']}"
                name, tag = image_name(c.get("image", ""))
                self.ok(tag is not None and tag != "latest", "image", f"{where}: image {c.get('image')!r} has no pinned tag")
                self.ok(c.get("imagePullPolicy") in ("IfNotPresent", "Always"), "image",
                        f"{where}: imagePullPolicy must be set explicitly")
                res = c.get("resources") or {}
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        self.ok(r in (res.get(kind) or {}), "resources", f"{where}: no {r} {kind[:-1]}")
                for r, parse in (("cpu", cpu), ("memory", mem)):
                    req, lim = dig(res, "requests", r), dig(res, "limits", r)
                    if req is not None and lim is not None:
                        self.ok(parse(req) <= parse(lim), "resources",
                                f"{where}: {r} request {req} exceeds limit {lim}")

    def check_hardening(self) -> None:
        for wn, w in self.r.workloads().items():
            spec = self.r.pod_spec(w)
            psc = spec.get("securityContext") or {}
            self.ok(spec.get("automountServiceAccountToken") is False, "hardening",
                    f"{wn}: automountServiceAccountToken must be false")
            self.ok(spec.get("enableServiceLinks") is False, "hardening",
                    f"{wn}: enableServiceLinks must be false (Service links inject *_PORT variables)")
            self.ok(dig(psc, "seccompProfile", "type") == "RuntimeDefault", "hardening",
                    f"{wn}: pod seccompProfile must be RuntimeDefault")
            for c in self.r.containers(w):
                where = f"{wn}/{c['name']}"
                csc = c.get("securityContext") or {}
                non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
                uid = csc.get("runAsUser", psc.get("runAsUser"))
                self.ok(non_root is True, "hardening", f"{where}: runAsNonRoot must be true")
                self.ok(isinstance(uid, int) and uid > 0, "hardening", f"{where}: needs a numeric non-root runAsUser")
                self.ok(csc.get("readOnlyRootFilesystem") is True, "hardening", f"{where}: readOnlyRootFilesystem must be true")
                self.ok(csc.get("allowPrivilegeEscalation") is False, "hardening",
                        f"{where}: allowPrivilegeEscalation must be false")
                self.ok("ALL" in (dig(csc, "capabilities", "drop") or []), "hardening",
                        f"{where}: capabilities must drop ALL")
                self.ok(not dig(csc, "capabilities", "add"), "hardening", f"{where}: adds capabilities")
                self.ok(not csc.get("privileged"), "hardening", f"{where}: privileged")

    def check_shutdown(self) -> None:
        """terminationGracePeriodSeconds must cover the preStop sleep plus the app's own
        shutdown timeout (the *_SHUTDOWN_TIMEOUT variable), or SIGKILL cuts requests off."""
        for wn, w in self.r.workloads().items():
            spec = self.r.pod_spec(w)
            grace = spec.get("terminationGracePeriodSeconds", 30)
            for c in self.r.containers(w):
                sleep = dig(c, "lifecycle", "preStop", "sleep", "seconds", default=0)
                timeout = 0
                for e in c.get("env") or []:
                    if e["name"].endswith("_SHUTDOWN_TIMEOUT") and "value" in e:
                        timeout = int(e["value"])
                self.ok(grace > sleep + timeout, "shutdown",
                        f"{wn}/{c['name']}: terminationGracePeriodSeconds {grace} <= preStop sleep {sleep} "
                        f"+ shutdown timeout {timeout}")

    def _service_port(self, svc_name: str, port: dict | int | str) -> bool:
        svc = self.r.get("Service", svc_name)
        if svc is None:
            return False
        ports = dig(svc, "spec", "ports") or []
        if isinstance(port, dict):
            if "name" in port:
                return port["name"] in [p.get("name") for p in ports]
            port = port.get("number")
        return port in [p["port"] for p in ports]

    def check_ingress(self) -> None:
        for n, ing in self.r.kind("Ingress").items():
            self.ok(bool(dig(ing, "spec", "ingressClassName")), "ingress", f"Ingress {n}: no ingressClassName")
            tls_hosts = {h for t in dig(ing, "spec", "tls") or [] for h in t.get("hosts") or []}
            for rule in dig(ing, "spec", "rules") or []:
                self.ok(rule.get("host") in tls_hosts, "ingress", f"Ingress {n}: host {rule.get('host')} has no TLS")
                for path in dig(rule, "http", "paths") or []:
                    svc = dig(path, "backend", "service", "name")
                    port = dig(path, "backend", "service", "port")
                    self.ok(self._service_port(svc, port), "ingress",
                            f"Ingress {n}: backend {svc}:{port} is not an existing Service port")
            auth = dig(ing, "metadata", "annotations", "nginx.ingress.kubernetes.io/auth-secret")
            if auth:
                self._secret_ref(f"Ingress {n} auth-secret", auth, "auth")

    def check_routes(self) -> None:
        for n, route in self.r.kind("HTTPRoute").items():
            self.ok(bool(dig(route, "spec", "parentRefs")), "gateway", f"HTTPRoute {n}: no parentRefs")
            for rule in dig(route, "spec", "rules") or []:
                for b in rule.get("backendRefs") or []:
                    if b.get("kind", "Service") == "Service":
                        self.ok(self._service_port(b["name"], b.get("port")), "gateway",
                                f"HTTPRoute {n}: backend {b['name']}:{b.get('port')} is not an existing Service port")

    def check_monitors(self) -> None:
        for n, sm in self.r.kind("ServiceMonitor").items():
            svcs = [s for s in self.r.kind("Service").values()
                    if selector_matches(dig(sm, "spec", "selector"), dig(s, "metadata", "labels", default={}) or {})]
            if not self.ok(bool(svcs), "monitoring", f"ServiceMonitor {n} selects no Service"):
                continue
            for ep in dig(sm, "spec", "endpoints") or []:
                for s in svcs:
                    self.ok(ep.get("port") in [p.get("name") for p in dig(s, "spec", "ports") or []], "monitoring",
                            f"ServiceMonitor {n}: Service {s['metadata']['name']} has no port named {ep.get('port')}")
        for n, pm in self.r.kind("PodMonitor").items():
            targets = self.r.pods_selected(dig(pm, "spec", "selector"))
            if not self.ok(bool(targets), "monitoring", f"PodMonitor {n} selects no pods"):
                continue
            for ep in dig(pm, "spec", "podMetricsEndpoints") or []:
                for t in targets:
                    self.ok(ep.get("port") in self.r.container_ports(self.r.workloads()[t]), "monitoring",
                            f"PodMonitor {n}: {t} has no port named {ep.get('port')}")

    def check_network_policy_selectors(self) -> None:
        """A selector that matches nothing is almost always a typo that silently drops a flow."""
        for n, np in self.r.kind("NetworkPolicy").items():
            sel = dig(np, "spec", "podSelector") or {}
            if sel:
                self.ok(bool(self.r.pods_selected(sel)), "networkpolicy", f"NetworkPolicy {n}: podSelector matches no pod")
            for direction, peers_key in (("ingress", "from"), ("egress", "to")):
                for rule in dig(np, "spec", direction) or []:
                    for peer in rule.get(peers_key) or []:
                        if "podSelector" in peer and "namespaceSelector" not in peer and peer["podSelector"]:
                            self.ok(bool(self.r.pods_selected(peer["podSelector"])), "networkpolicy",
                                    f"NetworkPolicy {n}: {direction} peer {peer['podSelector']} matches no pod")

    def check_config_wiring(self) -> None:
        """URLs in the configuration point at Services that exist, on ports they expose."""
        cm = self.r.get("ConfigMap", CONFIGMAP)
        if not cm:
            return
        uri = (cm.get("data") or {}).get("MLFLOW_TRACKING_URI", "")
        m = re.match(r"^https?://([a-z0-9-]+):(\d+)$", uri)
        if self.ok(m is not None, "wiring", f"MLFLOW_TRACKING_URI {uri!r} is not http://<service>:<port>"):
            self.ok(self._service_port(m.group(1), int(m.group(2))), "wiring",
                    f"MLFLOW_TRACKING_URI points at {m.group(1)}:{m.group(2)}, which is not a Service port")
        for wn, w in self.r.workloads().items():
            for c in self.r.containers(w):
                for e in c.get("env") or []:
                    if e["name"] == "REDIS_URL" and "value" in e:
                        m = re.match(r"^redis://(?::\$\(([A-Z_]+)\)@)?([a-z0-9-]+):(\d+)(?:/\d+)?$", e["value"])
                        if not self.ok(m is not None, "wiring", f"{wn}: REDIS_URL {e['value']!r} is malformed"):
                            continue
                        self.ok(self._service_port(m.group(2), int(m.group(3))), "wiring",
                                f"{wn}: REDIS_URL points at {m.group(2)}:{m.group(3)}, which is not a Service port")
                        if m.group(1):
                            # $(VAR) expands only variables defined earlier in the same env list.
                            earlier = [x["name"] for x in c["env"][: c["env"].index(e)]]
                            self.ok(m.group(1) in earlier, "wiring",
                                    f"{wn}: REDIS_URL expands $({m.group(1)}), which is not defined before it")

    # -- DESIGN.md topology ----------------------------------------------------------------

    def _w(self, name: str) -> dict | None:
        return self.r.workloads().get(name)

    def _c(self, name: str) -> dict:
        w = self._w(name)
        return (self.r.pod_spec(w).get("containers") or [{}])[0] if w else {}

    def topology_workloads(self) -> None:
        expected = {"model-registry", "api", "worker", "redis"} | ({"postgres"} if self.p.postgres else set())
        present = set(self.r.workloads())
        self.ok(present == expected, "topology", f"workloads are {sorted(present)}, expected {sorted(expected)}")
        scaled = self._scaled()
        for name, n in REPLICAS.items():
            w = self._w(name)
            if w is None:
                continue
            if name in scaled:
                self.ok(self._min_replicas(name) == n, "topology",
                        f"{name}: {scaled[name]} minimum is {self._min_replicas(name)}, DESIGN.md says {n} replicas")
            else:
                self.ok(w["spec"].get("replicas") == n, "topology",
                        f"{name}: replicas is {w['spec'].get('replicas')}, DESIGN.md says {n}")
        self.ok(scaled.get("api", "").startswith("HorizontalPodAutoscaler/"), "topology",
                "api must be scaled by a HorizontalPodAutoscaler (3 replicas = its minimum)")
        for name, img in IMAGES.items():
            c = self._c(name)
            if c:
                self.ok(image_name(c.get("image", ""))[0] == img, "topology",
                        f"{name}: image {c.get('image')!r} is not {img}")
        pg = self._w("postgres")
        if pg is not None:
            self.ok(pg["kind"] == "StatefulSet" or dig(pg, "spec", "strategy", "type") == "Recreate", "topology",
                    "postgres has a ReadWriteOnce volume: Recreate strategy (or a StatefulSet) required")
        reg = self._c("model-registry")
        if reg:
            names = [e["name"] for e in reg.get("env") or []]
            self.ok("REGISTRY_AUTH_USERS_FILE" in names or "REGISTRY_AUTH_TOKENS_FILE" in names, "topology",
                    "model-registry: authentication is off (no REGISTRY_AUTH_USERS_FILE / _TOKENS_FILE)")
        redis = self._w("redis")
        if redis is not None:
            self.ok(dig(redis, "spec", "strategy", "type") == "Recreate", "topology",
                    "redis: Recreate strategy required (never two queues behind one Service)")
            script = " ".join(self._c("redis").get("command") or []) + " ".join(self._c("redis").get("args") or [])
            self.ok("requirepass" in script, "topology", "redis: no password (requirepass) configured")

    def _probe(self, workload: str, probe: str) -> dict:
        return self._c(workload).get(probe) or {}

    def _probe_port(self, workload: str, probe: dict) -> int | None:
        port = dig(probe, "httpGet", "port")
        if isinstance(port, str):
            return {p.get("name"): p["containerPort"] for p in self._c(workload).get("ports") or []}.get(port)
        return port

    def topology_probes(self) -> None:
        def http(workload: str, probe: str, path: str, port: int, **numbers: int) -> None:
            if self._w(workload) is None:
                return
            p = self._probe(workload, probe)
            if not self.ok(bool(p), "topology", f"{workload}: no {probe}"):
                return
            self.ok(dig(p, "httpGet", "path") == path, "topology",
                    f"{workload}: {probe} path is {dig(p, 'httpGet', 'path')!r}, DESIGN.md says {path}")
            self.ok(self._probe_port(workload, p) == port, "topology",
                    f"{workload}: {probe} port is {self._probe_port(workload, p)}, expected {port}")
            for field, value in numbers.items():
                self.ok(p.get(field) == value, "topology",
                        f"{workload}: {probe} {field} is {p.get(field)}, DESIGN.md says {value}")

        http("api", "livenessProbe", "/healthz", 8000, initialDelaySeconds=30, timeoutSeconds=10)
        http("api", "readinessProbe", "/readyz", 8000, initialDelaySeconds=20)
        self.ok(bool(self._probe("api", "startupProbe")), "topology", "api: no startupProbe")
        http("worker", "livenessProbe", "/healthz", 9000)
        http("worker", "readinessProbe", "/readyz", 9000)
        http("model-registry", "livenessProbe", "/health", 5000)
        http("model-registry", "readinessProbe", "/health", 5000)
        for workload, words in (("redis", ("redis-cli", "ping")), ("postgres", ("pg_isready",))):
            if self._w(workload) is None:
                continue
            for probe in ("livenessProbe", "readinessProbe"):
                cmd = " ".join(dig(self._probe(workload, probe), "exec", "command") or [])
                self.ok(all(w in cmd for w in words), "topology",
                        f"{workload}: {probe} must be an exec probe running {' '.join(words)!r}, is {cmd!r}")
        # Pods behind a Service drain before SIGTERM.
        for workload in ("api", "model-registry"):
            if self._w(workload) is not None:
                self.ok(dig(self._c(workload), "lifecycle", "preStop", "sleep", "seconds", default=0) > 0,
                        "topology", f"{workload}: no preStop sleep to let endpoints drain")

    def topology_resources(self) -> None:
        for name, (rc, rm, lc, lm) in RESOURCES.items():
            c = self._c(name)
            if not c:
                continue
            res = c.get("resources") or {}
            for kind, r, parse, want in (("requests", "cpu", cpu, rc), ("requests", "memory", mem, rm),
                                         ("limits", "cpu", cpu, lc), ("limits", "memory", mem, lm)):
                have = dig(res, kind, r)
                self.ok(have is not None and parse(have) == parse(want), "topology",
                        f"{name}: {r} {kind[:-1]} is {have}, DESIGN.md says {want}")

    def topology_storage(self) -> None:
        for name, (size, mode, users) in PVCS.items():
            if name == "postgres-storage" and not self.p.postgres:
                self.ok(self.r.get("PersistentVolumeClaim", name) is None, "topology",
                        f"{name} rendered although this overlay has no in-cluster PostgreSQL")
                continue
            pvc = self.r.get("PersistentVolumeClaim", name)
            if not self.ok(pvc is not None, "topology", f"PVC {name} missing"):
                continue
            have = dig(pvc, "spec", "resources", "requests", "storage")
            self.ok(have is not None and mem(have) == mem(size), "topology", f"PVC {name}: size {have}, DESIGN.md says {size}")
            self.ok(dig(pvc, "spec", "accessModes") == [mode], "topology",
                    f"PVC {name}: access modes {dig(pvc, 'spec', 'accessModes')}, DESIGN.md says [{mode}]")
            mounted_by = {wn for wn, w in self.r.workloads().items()
                          for v in self.r.pod_spec(w).get("volumes") or []
                          if dig(v, "persistentVolumeClaim", "claimName") == name}
            self.ok(mounted_by == users, "topology", f"PVC {name} is mounted by {sorted(mounted_by)}, expected {sorted(users)}")
        extra = set(self.r.kind("PersistentVolumeClaim")) - set(PVCS)
        self.ok(not extra, "topology", f"PVCs not in the topology: {sorted(extra)}")

    def topology_hpa(self) -> None:
        hpas = [h for h in self.r.kind("HorizontalPodAutoscaler").values()
                if dig(h, "spec", "scaleTargetRef", "name") == HPA["target"]]
        if not self.ok(len(hpas) == 1, "topology", f"expected one HPA for {HPA['target']}, found {len(hpas)}"):
            return
        h = hpas[0]
        self.ok(h.get("apiVersion") == "autoscaling/v2", "topology", f"HPA apiVersion is {h.get('apiVersion')}")
        spec = h["spec"]
        for f in ("minReplicas", "maxReplicas"):
            self.ok(spec.get(f) == HPA[f], "topology", f"HPA {f} is {spec.get(f)}, DESIGN.md says {HPA[f]}")
        metrics = {dig(m, "resource", "name"): dig(m, "resource", "target") for m in spec.get("metrics") or []
                   if m.get("type") == "Resource"}
        self.ok(len(spec.get("metrics") or []) == 2, "topology", "HPA must scale on exactly CPU and memory")
        for r in ("cpu", "memory"):
            t = metrics.get(r) or {}
            self.ok(t.get("type") == "Utilization" and t.get("averageUtilization") == HPA[r], "topology",
                    f"HPA {r} target is {t}, DESIGN.md says {HPA[r]} % utilization")
        for direction in ("scaleUp", "scaleDown"):
            want = HPA[direction]
            have = dig(spec, "behavior", direction) or {}
            self.ok(have.get("stabilizationWindowSeconds") == want["stabilizationWindowSeconds"], "topology",
                    f"HPA {direction} stabilizationWindowSeconds is {have.get('stabilizationWindowSeconds')}, "
                    f"DESIGN.md says {want['stabilizationWindowSeconds']}")
            policies = {(p["type"], p["value"], p["periodSeconds"]) for p in have.get("policies") or []}
            self.ok(policies == want["policies"], "topology",
                    f"HPA {direction} policies are {sorted(policies)}, DESIGN.md says {sorted(want['policies'])}")
            if "selectPolicy" in want:  # "100 % or +2 pods": whichever allows more
                self.ok(have.get("selectPolicy", "Max") == want["selectPolicy"], "topology",
                        f"HPA {direction} selectPolicy is {have.get('selectPolicy')}, must be {want['selectPolicy']}")

    def topology_services(self) -> None:
        expected_type = {"api": "LoadBalancer" if self.p.edge == "loadbalancer" else "ClusterIP",
                         "model-registry": "ClusterIP", "redis": "ClusterIP"}
        if self.p.postgres:
            expected_type["postgres"] = "ClusterIP"
        for name, t in expected_type.items():
            svc = self.r.get("Service", name)
            if self.ok(svc is not None, "topology", f"Service {name} missing"):
                self.ok(dig(svc, "spec", "type", default="ClusterIP") == t, "topology",
                        f"Service {name} is {dig(svc, 'spec', 'type', default='ClusterIP')}, expected {t}")
        extra = set(self.r.kind("Service")) - set(expected_type)
        self.ok(not extra, "topology", f"Services not in the topology: {sorted(extra)}")
        for n, svc in self.r.kind("Service").items():
            self.ok("worker" not in self.r.pods_selected({"matchLabels": dig(svc, "spec", "selector") or {}}),
                    "topology", f"Service {n} selects the worker, which has no Service by design")

    def topology_edge(self) -> None:
        ingresses = self.r.kind("Ingress")
        routes = self.r.kind("HTTPRoute")
        if self.p.edge == "ingress":
            backends = set()
            for n, ing in ingresses.items():
                ann = dig(ing, "metadata", "annotations", default={}) or {}
                for k, v in INGRESS_ANNOTATIONS.items():
                    self.ok(str(ann.get(k)) == v, "topology", f"Ingress {n}: {k} is {ann.get(k)!r}, DESIGN.md says {v!r}")
                self.ok(dig(ing, "spec", "ingressClassName") == "nginx", "topology", f"Ingress {n}: class is not nginx")
                self.ok(bool(dig(ing, "spec", "tls")), "topology", f"Ingress {n}: no TLS")
                for rule in dig(ing, "spec", "rules") or []:
                    for path in dig(rule, "http", "paths") or []:
                        backends.add(dig(path, "backend", "service", "name"))
            self.ok(backends == EDGE_BACKENDS, "topology", f"Ingress backends are {sorted(backends)}, "
                    f"expected an api host and a registry host ({sorted(EDGE_BACKENDS)})")
            self.ok(not routes, "topology", "HTTPRoutes rendered next to the nginx Ingress")
        elif self.p.edge == "gateway":
            self.ok(not ingresses, "topology", f"gateway overlay still renders Ingress {sorted(ingresses)}")
            backends = set()
            for n, route in routes.items():
                for rule in dig(route, "spec", "rules") or []:
                    self.ok(dig(rule, "timeouts", "request") == "300s", "topology",
                            f"HTTPRoute {n}: request timeout is {dig(rule, 'timeouts', 'request')}, DESIGN.md says 300s")
                    backends |= {b["name"] for b in rule.get("backendRefs") or []}
            self.ok(backends == EDGE_BACKENDS, "topology", f"HTTPRoute backends are {sorted(backends)}, expected {sorted(EDGE_BACKENDS)}")
        elif self.p.edge == "loadbalancer":
            self.ok(not ingresses and not routes, "topology", "loadbalancer overlay still renders an Ingress or HTTPRoute")

    def topology_config(self) -> None:
        cm = self.r.get("ConfigMap", CONFIGMAP)
        if not self.ok(cm is not None, "topology", f"ConfigMap {CONFIGMAP} missing"):
            return
        data = cm.get("data") or {}
        for k, v in CONFIG.items():
            self.ok(data.get(k) == v, "topology", f"ConfigMap {k} is {data.get(k)!r}, DESIGN.md says {v!r}")
        for k in CONFIG_REQUIRED_KEYS:
            self.ok(k in data, "topology", f"ConfigMap has no {k}")
        for workload, key in PORT_KEYS.items():
            ports = [p["containerPort"] for p in self._c(workload).get("ports") or []]
            self.ok(data.get(key) is not None and int(data[key]) in ports, "topology",
                    f"{workload} listens on {ports}, but {key} is {data.get(key)}")
            envs = [ef.get("configMapRef", {}).get("name") for ef in self._c(workload).get("envFrom") or []]
            self.ok(CONFIGMAP in envs, "topology", f"{workload} does not load ConfigMap {CONFIGMAP}")
        for workload in ("api", "worker"):
            names = [e["name"] for e in self._c(workload).get("env") or []]
            self.ok("REDIS_URL" in names, "topology", f"{workload}: no REDIS_URL")

    def topology_optional_components(self) -> None:
        sos = self.r.kind("ScaledObject")
        if self.p.keda:
            worker = [s for s in sos.values() if dig(s, "spec", "scaleTargetRef", "name") == "worker"]
            if self.ok(len(worker) == 1, "topology", "KEDA profile: no ScaledObject for the worker"):
                types = [t.get("type") for t in dig(worker[0], "spec", "triggers") or []]
                self.ok(types == ["redis"], "topology", f"worker ScaledObject triggers are {types}, expected a redis list trigger")
                self.ok(bool(dig(worker[0], "spec", "triggers", 0, "metadata", "listName")), "topology",
                        "worker ScaledObject has no listName")
        else:
            self.ok(not sos, "topology", "ScaledObject rendered in an overlay without KEDA")
        if self.p.monitoring:
            for svc in ("api", "model-registry"):
                self.ok(any(dig(s, "spec", "selector", "matchLabels", "app.kubernetes.io/name") == svc
                            for s in self.r.kind("ServiceMonitor").values()), "topology", f"no ServiceMonitor for {svc}")
            self.ok(any(dig(s, "spec", "selector", "matchLabels", "app.kubernetes.io/name") == "worker"
                        for s in self.r.kind("PodMonitor").values()), "topology", "no PodMonitor for the worker")
        else:
            self.ok(not self.r.kind("ServiceMonitor") and not self.r.kind("PodMonitor"), "topology",
                    "monitors rendered in an overlay without the monitoring component")
        for name in ("api",):
            keys = {c.get("topologyKey") for c in self.r.pod_spec(self._w(name) or {}).get("topologySpreadConstraints") or []}
            self.ok({"kubernetes.io/hostname", "topology.kubernetes.io/zone"} <= keys, "topology",
                    f"{name}: must spread across nodes and zones (topologySpreadConstraints: {sorted(filter(None, keys))})")
        for name in ("api", "worker"):
            self.ok(any(self.r.pods_selected(dig(p, "spec", "selector")) == [name]
                        for p in self.r.kind("PodDisruptionBudget").values()), "topology", f"{name}: no PodDisruptionBudget")

    # -- storage, credentials and the HTTP border (docs/security.md) ------------------------

    def _env_of(self, workload: str) -> dict[str, str | None]:
        """The first container's environment as the kubelet builds it: ConfigMaps loaded with
        envFrom, then `env` entries, which win. A value from a Secret is None (set, unknown)."""
        c = self._c(workload)
        env: dict[str, str | None] = {}
        for ef in c.get("envFrom") or []:
            cm = self.r.get("ConfigMap", dig(ef, "configMapRef", "name"))
            if cm:
                prefix = ef.get("prefix", "")
                env.update({prefix + k: str(v) for k, v in (cm.get("data") or {}).items()})
        for e in c.get("env") or []:
            env[e["name"]] = e.get("value") if "value" in e else None
        return env

    def _claim_at(self, workload: str, path: str) -> str | None:
        """The PVC that provides `path` in the workload's first container, if any."""
        c = self._c(workload)
        mounts = [m for m in c.get("volumeMounts") or []
                  if path == m["mountPath"].rstrip("/") or path.startswith(m["mountPath"].rstrip("/") + "/")]
        if not mounts:
            return None
        m = max(mounts, key=lambda m: len(m["mountPath"]))
        volumes = {v["name"]: v for v in self.r.pod_spec(self._w(workload)).get("volumes") or []}
        return dig(volumes.get(m["name"]) or {}, "persistentVolumeClaim", "claimName")

    def topology_storage_paths(self) -> None:
        """Artifacts and applicants' files: each variable names the right path, on the right
        volume; the api and the workers agree on JOBS_ROOT."""
        for workload, variables in STORAGE_PATHS.items():
            if self._w(workload) is None:
                continue
            env = self._env_of(workload)
            for var, (want, claim) in variables.items():
                have = env.get(var)
                self.ok(have == want, "storage", f"{workload}: {var} is {have!r}, expected {want!r}")
                if have:
                    on = self._claim_at(workload, have)
                    self.ok(on == claim, "storage",
                            f"{workload}: {var} {have} is on {'PVC ' + on if on else 'no volume'}, expected PVC {claim}")
        roots = {w: self._env_of(w).get("JOBS_ROOT") for w in ("api", "worker") if self._w(w) is not None}
        self.ok(len(set(roots.values())) <= 1, "storage", f"the api and the worker disagree on JOBS_ROOT: {roots}")
        # The registry may name a JOBS_ROOT (paths it refuses to serve); it must not mount one.
        reg_jobs = self._env_of("model-registry").get("JOBS_ROOT") if self._w("model-registry") else None
        if reg_jobs:
            self.ok(self._claim_at("model-registry", reg_jobs) in (None, "mlflow-storage"), "storage",
                    f"model-registry: JOBS_ROOT {reg_jobs} is on a volume other than its artifacts")

    def _token_ref(self, workload: str) -> tuple[str, str] | None:
        for e in self._c(workload).get("env") or []:
            if e["name"] == "MLFLOW_TRACKING_TOKEN":
                ref = dig(e, "valueFrom", "secretKeyRef") or {}
                return ref.get("name"), ref.get("key")
        return None

    def topology_access(self) -> None:
        """Every door has credentials: API keys on the api, permissions on the registry, and the
        api and worker each with their own registry identity (READ vs EDIT)."""
        if self._w("model-registry") is not None:
            env = self._env_of("model-registry")
            self.ok("REGISTRY_AUTH_PERMISSIONS_FILE" in env, "access",
                    "model-registry: no permissions file (REGISTRY_AUTH_PERMISSIONS_FILE): every user gets "
                    "the default permission, so either the worker cannot register versions and nobody can "
                    "promote, or everyone can")
            default = env.get("REGISTRY_AUTH_DEFAULT_PERMISSION", "READ") or "READ"
            self.ok(default.upper() in ("READ", "NO_PERMISSIONS"), "access",
                    f"model-registry: REGISTRY_AUTH_DEFAULT_PERMISSION is {default}; above READ, every "
                    "user the permissions file forgets could change models")
        if self._w("api") is not None:
            env = self._env_of("api")
            self.ok("API_KEYS_FILE" in env or "API_KEYS" in env, "access",
                    "api: authentication is off (no API_KEYS_FILE / API_KEYS)")
        for w in ("api", "worker"):
            if self._w(w) is None:
                continue
            env = self._env_of(w)
            self.ok("MLFLOW_TRACKING_TOKEN" in env or "MLFLOW_TRACKING_USERNAME" in env, "access",
                    f"{w}: sends no registry credentials (MLFLOW_TRACKING_TOKEN)")
            self.ok(env.get("MLFLOW_TRACKING_TOKEN", None) is None and env.get("MLFLOW_TRACKING_PASSWORD") is None,
                    "access", f"{w}: registry credentials written into the manifest instead of a Secret")
        api, worker = self._token_ref("api"), self._token_ref("worker")
        if api and worker:
            self.ok(api != worker, "access", f"the api and the worker use the same registry credentials {api}: "
                    "the api would get the worker's EDIT permission")
        # Database credentials go only where they are used; never the whole Secret.
        for wn, w in self.r.workloads().items():
            for c in self.r.containers(w):
                for ef in c.get("envFrom") or []:
                    self.ok(dig(ef, "secretRef", "name") != APP_SECRET, "access",
                            f"{wn}/{c['name']} loads every key of Secret {APP_SECRET} (envFrom)")
                for e in c.get("env") or []:
                    ref = dig(e, "valueFrom", "secretKeyRef") or {}
                    users = SECRET_KEY_USERS.get(ref.get("key")) if ref.get("name") == APP_SECRET else None
                    if users is not None:
                        self.ok(wn in users, "access", f"{wn}/{c['name']} reads {ref['key']}, which only "
                                f"{sorted(users)} may hold")

    def _secret_key_ref(self, workload: str, var: str) -> tuple[str, str] | None:
        """(Secret, key) that the workload's variable comes from; None if it is not from a Secret."""
        for e in self._c(workload).get("env") or []:
            if e["name"] == var:
                ref = dig(e, "valueFrom", "secretKeyRef")
                return (ref.get("name"), ref.get("key")) if ref else None
        return None

    def topology_audit(self) -> None:
        """No decision without a record: the api and the worker take AUDIT_URL from the Secret
        (never a literal, never another key such as the registry's DATABASE_URL) and run
        fail-closed; the in-cluster PostgreSQL creates the audit role and database on a new
        volume."""
        for w in AUDIT_WRITERS:
            if self._w(w) is None:
                continue
            env = self._env_of(w)
            if self.ok("AUDIT_URL" in env, "audit", f"{w}: no AUDIT_URL: its decisions are not recorded"):
                ref = self._secret_key_ref(w, "AUDIT_URL")
                if self.ok(ref is not None, "audit", f"{w}: AUDIT_URL written into the manifest instead of "
                           f"taken from Secret {APP_SECRET} (it carries a password)"):
                    self.ok(ref == AUDIT_URL_REF, "audit", f"{w}: AUDIT_URL comes from {ref[0]}/{ref[1]}, "
                            f"expected {AUDIT_URL_REF[0]}/{AUDIT_URL_REF[1]} (the audit role's URL)")
            mode = env.get("AUDIT_MODE", AUDIT_MODE)
            self.ok(mode == AUDIT_MODE, "audit", f"{w}: AUDIT_MODE is {mode!r}, expected {AUDIT_MODE!r} "
                    "(no decision without a record)")
        if self._w("postgres") is None:
            return
        self.ok(self._secret_key_ref("postgres", "AUDIT_POSTGRES_PASSWORD") == (APP_SECRET, "AUDIT_POSTGRES_PASSWORD"),
                "audit", "postgres: AUDIT_POSTGRES_PASSWORD (the audit role's password for the init script) "
                f"is not taken from Secret {APP_SECRET}")
        c = self._c("postgres")
        mounts = [m for m in c.get("volumeMounts") or [] if m["mountPath"].rstrip("/") == POSTGRES_INITDB]
        volumes = {v["name"]: v for v in self.r.pod_spec(self._w("postgres")).get("volumes") or []}
        cm = self.r.get("ConfigMap", dig(volumes.get(mounts[0]["name"]) if mounts else {}, "configMap", "name"))
        scripts = "\n".join(str(v) for v in ((cm or {}).get("data") or {}).values())
        creates = (re.search(rf"CREATE\s+ROLE\s+{AUDIT_ROLE}\s+LOGIN\b", scripts, re.I)
                   and re.search(rf"CREATE\s+DATABASE\s+{AUDIT_DATABASE}\s+OWNER\s+{AUDIT_ROLE}\b", scripts, re.I)
                   and "AUDIT_POSTGRES_PASSWORD" in scripts)
        self.ok(bool(creates), "audit", f"postgres: no init script at {POSTGRES_INITDB} (a ConfigMap) creates role "
                f"{AUDIT_ROLE} with AUDIT_POSTGRES_PASSWORD and database {AUDIT_DATABASE} owned by it: a new "
                "volume would have no audit database")

    def _edge(self, service: str) -> list[tuple[str, str, dict]]:
        """(kind/name, host, annotations) for each Ingress rule and HTTPRoute hostname that routes
        to `service`."""
        out = []
        for n, ing in self.r.kind("Ingress").items():
            ann = dig(ing, "metadata", "annotations", default={}) or {}
            for rule in dig(ing, "spec", "rules") or []:
                if any(dig(p, "backend", "service", "name") == service for p in dig(rule, "http", "paths") or []):
                    out.append((f"Ingress {n}", rule.get("host") or "", ann))
        for n, route in self.r.kind("HTTPRoute").items():
            if any(b.get("name") == service for r in dig(route, "spec", "rules") or [] for b in r.get("backendRefs") or []):
                out += [(f"HTTPRoute {n}", h, {}) for h in dig(route, "spec", "hostnames") or []]
        return out

    def topology_border(self) -> None:
        """Allowed hosts name every way the server is reached (Service names, edge hosts) and
        nothing wildcard; allowed origins cover what the edge's CORS lets browsers send."""
        uri_host = re.sub(r"^https?://([^/]+).*$", r"\1", (self._env_of("api") or {}).get("MLFLOW_TRACKING_URI") or "")
        for workload, b in BORDER.items():
            if self._w(workload) is None:
                continue
            env = self._env_of(workload)
            raw = env.get(b["hosts"])
            if not self.ok(bool(raw), "border", f"{workload}: {b['hosts']} is not set (the default allows only "
                           "localhost and private addresses, never the Service or edge names)"):
                continue
            patterns = split_list(raw)
            self.ok("*" not in patterns, "border", f"{workload}: {b['hosts']} allows every host ('*'): "
                    "no DNS-rebinding protection")
            svc = b["service"]
            needed = {svc: "its Service", f"{svc}.{NAMESPACE}.svc": "its Service",
                      f"{svc}.{NAMESPACE}.svc.cluster.local": "its Service"}
            needed.update({h: "k8s/README.md" for h in b["also"]})
            if workload == "model-registry" and uri_host:
                needed[uri_host] = "MLFLOW_TRACKING_URI"
            for where, host, _ in self._edge(svc):
                needed[host] = where
            for host, why in needed.items():
                self.ok(host_allowed(patterns, host), "border",
                        f"{workload}: {b['hosts']} does not allow {host} ({why}): those requests would get 403")
            origins = split_list(env.get(b["origins"]))
            self.ok("*" not in origins, "border", f"{workload}: {b['origins']} lets every origin make changes ('*')")
            for where, _, ann in self._edge(svc):
                if str(ann.get("nginx.ingress.kubernetes.io/enable-cors")) != "true":
                    continue
                methods = {m.strip().upper() for m in str(ann.get("nginx.ingress.kubernetes.io/cors-allow-methods",
                                                                  NGINX_DEFAULT_CORS_METHODS)).split(",")}
                if not methods & STATE_CHANGING:
                    continue
                for origin in split_list(ann.get("nginx.ingress.kubernetes.io/cors-allow-origin", "*")):
                    self.ok(origin in origins or "*" in origins, "border",
                            f"{where} lets {origin} send {sorted(methods & STATE_CHANGING)} cross-origin, but "
                            f"{workload}'s {b['origins']} does not list it: those requests would get 403")

    # -- network flows ---------------------------------------------------------------------

    def _pod(self, name: str) -> dict:
        return {"ns": NAMESPACE, "labels": self.r.pod_labels(self._w(name) or {}), "workload": name}

    @staticmethod
    def _ext_pod(ns: str, labels: dict | None = None) -> dict:
        return {"ns": ns, "labels": labels or {}}

    @staticmethod
    def _ip(ip: str) -> dict:
        return {"ip": ip}

    def _peer_matches(self, peer: dict, ent: dict) -> bool:
        if "ipBlock" in peer:
            if "ip" not in ent:
                return False  # pod IPs are not known here: ipBlocks are for traffic from outside
            addr = ipaddress.ip_address(ent["ip"])
            net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            if addr.version != net.version or addr not in net:
                return False
            return not any(addr in ipaddress.ip_network(x) for x in peer["ipBlock"].get("except") or []
                           if ipaddress.ip_network(x).version == addr.version)
        if "ip" in ent:
            return False
        if "namespaceSelector" in peer:
            ns_labels = self.r.namespace_labels(ent["ns"]) if ent["ns"] == NAMESPACE else \
                {"kubernetes.io/metadata.name": ent["ns"]}
            if not selector_matches(peer["namespaceSelector"], ns_labels):
                return False
        elif ent["ns"] != NAMESPACE:
            return False  # a bare podSelector means this namespace only
        return selector_matches(peer.get("podSelector"), ent["labels"]) if "podSelector" in peer else True

    def _port_matches(self, rule_ports: list | None, port: int, proto: str, dst: dict) -> bool:
        if not rule_ports:
            return True
        for rp in rule_ports:
            if rp.get("protocol", "TCP") != proto:
                continue
            p = rp.get("port")
            if p is None:
                return True
            if isinstance(p, str):  # a named port of the destination pod
                p = self.r.container_ports(self._w(dst["workload"])).get(p) if dst.get("workload") else None
            if p is not None and p <= port <= rp.get("endPort", p):
                return True
        return False

    def _allowed(self, direction: str, subject: dict, other: dict, port: int, proto: str, dst: dict) -> bool:
        """Does `subject` (a pod of this namespace) allow traffic in `direction` to/from `other`?"""
        peers_key = "from" if direction == "Ingress" else "to"
        policies = [np for np in self.r.kind("NetworkPolicy").values()
                    if selector_matches(dig(np, "spec", "podSelector"), subject["labels"])
                    and direction in (dig(np, "spec", "policyTypes") or ["Ingress"])]
        if not policies:
            return True  # not isolated in this direction
        for np in policies:
            for rule in dig(np, "spec", direction.lower()) or []:
                peers = rule.get(peers_key)
                if (not peers or any(self._peer_matches(p, other) for p in peers)) and \
                        self._port_matches(rule.get("ports"), port, proto, dst):
                    return True
        return False

    def flow(self, src: dict, dst: dict, port: int, proto: str = "TCP") -> bool:
        ok = True
        if "workload" in src:
            ok = self._allowed("Egress", src, dst, port, proto, dst)
        if ok and "workload" in dst:
            ok = self._allowed("Ingress", dst, src, port, proto, dst)
        return ok

    def topology_network_flows(self) -> None:
        nps = self.r.kind("NetworkPolicy").values()
        self.ok(any(dig(np, "spec", "podSelector") in ({}, None)
                    and set(dig(np, "spec", "policyTypes") or []) == {"Ingress", "Egress"}
                    and not dig(np, "spec", "ingress") and not dig(np, "spec", "egress") for np in nps),
                "network", "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
        P = self._pod
        dns = self._ext_pod("kube-system", {"k8s-app": "kube-dns"})
        internet = self._ip("203.0.113.10")
        other_ns = self._ext_pod("default", {"app": "anything"})
        allowed = [(P("api"), P("model-registry"), 5000), (P("api"), P("redis"), 6379),
                   (P("worker"), P("model-registry"), 5000), (P("worker"), P("redis"), 6379),
                   (self._ext_pod("monitoring"), P("api"), 8000), (self._ext_pod("monitoring"), P("worker"), 9000),
                   (self._ext_pod("monitoring"), P("model-registry"), 5000)]
        denied = [(P("api"), P("worker"), 9000), (P("worker"), P("api"), 8000),
                  (other_ns, P("redis"), 6379), (other_ns, P("model-registry"), 5000), (other_ns, P("api"), 8000),
                  (internet, P("model-registry"), 5000), (internet, P("redis"), 6379),
                  (P("redis"), internet, 443), (P("api"), internet, 443), (P("worker"), internet, 443),
                  (P("model-registry"), internet, 443), (P("redis"), P("model-registry"), 5000)]
        for w in ("api", "worker", "model-registry", "redis") + (("postgres",) if self.p.postgres else ()):
            allowed.append((P(w), dns, 53, "UDP"))
        if self.p.postgres:
            # The registry's database, and the audit database of the api and the worker.
            allowed += [(P("model-registry"), P("postgres"), 5432), (P("api"), P("postgres"), 5432),
                        (P("worker"), P("postgres"), 5432)]
            denied += [(other_ns, P("postgres"), 5432), (self._ext_pod("ingress-nginx"), P("postgres"), 5432),
                       (internet, P("postgres"), 5432), (P("redis"), P("postgres"), 5432),
                       (P("postgres"), internet, 443), (P("postgres"), P("api"), 8000)]
        if self.p.external_db:
            db = self._ip("10.20.30.40")
            allowed += [(P("model-registry"), db, 5432), (P("api"), db, 5432), (P("worker"), db, 5432)]
            denied += [(P("redis"), db, 5432), (P("api"), db, 6379)]
        edge_ns = {"ingress": "ingress-nginx", "gateway": "gateway-system"}.get(self.p.edge)
        if edge_ns:
            allowed += [(self._ext_pod(edge_ns), P("api"), 8000), (self._ext_pod(edge_ns), P("model-registry"), 5000)]
            denied += [(internet, P("api"), 8000), (self._ext_pod(edge_ns), P("redis"), 6379)]
        else:  # loadbalancer: the api is reachable from outside, the registry is not
            allowed.append((internet, P("api"), 8000))
            denied.append((self._ext_pod("ingress-nginx"), P("model-registry"), 5000))
        if self.p.keda:
            allowed.append((self._ext_pod("keda"), P("redis"), 6379))
        else:
            denied.append((self._ext_pod("keda"), P("redis"), 6379))

        def name(e: dict) -> str:
            return e.get("workload") or e.get("ip") or f"{e['ns']} namespace"

        for src, dst, port, *proto in allowed:
            self.ok(self.flow(src, dst, port, *proto), "network",
                    f"flow {name(src)} -> {name(dst)}:{port} is needed by the topology but denied")
        for src, dst, port, *proto in denied:
            self.ok(not self.flow(src, dst, port, *proto), "network",
                    f"flow {name(src)} -> {name(dst)}:{port} is allowed but the topology has no such flow")


# ---------------------------------------------------------------------------------------------
# Self-test: each mutation of the production render must be reported.
# ---------------------------------------------------------------------------------------------


def _find(docs: list[dict], kind: str, name: str) -> dict:
    for d in docs:
        if d.get("kind") == kind and dig(d, "metadata", "name") == name:
            return d
    raise KeyError(f"{kind}/{name} not in the render")


def _container(docs: list[dict], name: str) -> dict:
    return _find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict, name: str) -> dict:
    return next(e for e in container["env"] if e["name"] == name)


def _set(path: list, value: Any) -> Callable[[dict], None]:
    def f(obj: dict) -> None:
        for p in path[:-1]:
            obj = obj[p]
        obj[path[-1]] = value
    return f


MUTATIONS: list[tuple[str, str, Callable[[list[dict]], None]]] = [
    ("HPA maxReplicas 10 -> 11", "maxReplicas",
     lambda d: _set(["spec", "maxReplicas"], 11)(_find(d, "HorizontalPodAutoscaler", "api"))),
    ("HPA scale-down stabilization 300 -> 200", "stabilizationWindowSeconds",
     lambda d: _set(["spec", "behavior", "scaleDown", "stabilizationWindowSeconds"], 200)(
         _find(d, "HorizontalPodAutoscaler", "api"))),
    ("HPA memory target 80 -> 85", "memory target",
     lambda d: _set(["spec", "metrics", 1, "resource", "target", "averageUtilization"], 85)(
         _find(d, "HorizontalPodAutoscaler", "api"))),
    ("api liveness initialDelaySeconds 30 -> 31", "initialDelaySeconds",
     lambda d: _set(["livenessProbe", "initialDelaySeconds"], 31)(_container(d, "api"))),
    ("api readiness path /readyz -> /healthz", "readinessProbe path",
     lambda d: _set(["readinessProbe", "httpGet", "path"], "/healthz")(_container(d, "api"))),
    ("worker replicas 2 -> 3", "replicas",
     lambda d: _set(["spec", "replicas"], 3)(_find(d, "Deployment", "worker"))),
    ("api gets replicas: 3 next to its HPA", "sets spec.replicas",
     lambda d: _set(["spec", "replicas"], 3)(_find(d, "Deployment", "api"))),
    ("worker memory limit 2Gi -> 1Gi", "worker: memory limit",
     lambda d: _set(["resources", "limits", "memory"], "1Gi")(_container(d, "worker"))),
    ("api cpu request 250m -> 600m (above its limit)", "exceeds limit",
     lambda d: _set(["resources", "requests", "cpu"], "600m")(_container(d, "api"))),
    ("mlflow-storage 10Gi -> 11Gi", "mlflow-storage",
     lambda d: _set(["spec", "resources", "requests", "storage"], "11Gi")(_find(d, "PersistentVolumeClaim", "mlflow-storage"))),
    ("postgres-storage ReadWriteOnce -> ReadWriteMany", "access modes",
     lambda d: _set(["spec", "accessModes"], ["ReadWriteMany"])(_find(d, "PersistentVolumeClaim", "postgres-storage"))),
    ("api Service selector typo", "selects no pod",
     lambda d: _set(["spec", "selector"], {"app.kubernetes.io/name": "apii"})(_find(d, "Service", "api"))),
    ("ConfigMap reference typo", "ConfigMap loan-scoring-confg",
     lambda d: _set(["envFrom", 0, "configMapRef", "name"], "loan-scoring-confg")(_container(d, "worker"))),
    ("Secret key typo", "no such key",
     lambda d: _set(["valueFrom", "secretKeyRef", "key"], "REDIS_PASSWD")(_env(_container(d, "api"), "REDIS_PASSWORD"))),
    ("PVC reference typo", "mounts PVC",
     lambda d: _set(["spec", "template", "spec", "volumes", 0, "persistentVolumeClaim", "claimName"], "mlflow")(
         _find(d, "Deployment", "model-registry"))),
    ("Ingress rate limit 100 -> 50", "limit-rps",
     lambda d: _set(["metadata", "annotations", "nginx.ingress.kubernetes.io/limit-rps"], "50")(_find(d, "Ingress", "api"))),
    ("Ingress proxy-read-timeout removed", "proxy-read-timeout",
     lambda d: _find(d, "Ingress", "model-registry")["metadata"]["annotations"].pop(
         "nginx.ingress.kubernetes.io/proxy-read-timeout")),
    ("readOnlyRootFilesystem off", "readOnlyRootFilesystem",
     lambda d: _set(["securityContext", "readOnlyRootFilesystem"], False)(_container(d, "redis"))),
    ("api grace period 60 -> 30", "terminationGracePeriodSeconds",
     lambda d: _set(["spec", "template", "spec", "terminationGracePeriodSeconds"], 30)(_find(d, "Deployment", "api"))),
    ("default-deny NetworkPolicy removed", "default-deny",
     lambda d: d.remove(_find(d, "NetworkPolicy", "default-deny-all"))),
    ("postgres opened to every namespace", "default namespace -> postgres:5432 is allowed",
     lambda d: _set(["spec", "ingress", 0, "from"], [{"namespaceSelector": {}}])(
         _find(d, "NetworkPolicy", "postgres-from-audit-writers"))),
    # Both ends must open for the flow to exist (redis's egress is closed too).
    ("postgres opened to every pod of the namespace", "redis -> postgres:5432 is allowed", lambda d: (
        _set(["spec", "ingress", 0, "from", 0, "podSelector"], {})(_find(d, "NetworkPolicy", "postgres-from-model-registry")),
        d.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "redis-egress-postgres", "namespace": NAMESPACE},
                  "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}},
                           "policyTypes": ["Egress"],
                           "egress": [{"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgres"}}}],
                                       "ports": [{"protocol": "TCP", "port": 5432}]}]}}))),
    ("registry -> postgres egress removed", "model-registry -> postgres:5432 is needed",
     lambda d: d.remove(_find(d, "NetworkPolicy", "model-registry-egress-postgres"))),
    ("api -> postgres egress removed", "api -> postgres:5432 is needed",
     lambda d: d.remove(_find(d, "NetworkPolicy", "api-egress-postgres"))),
    ("postgres no longer admits the worker", "worker -> postgres:5432 is needed",
     lambda d: _set(["spec", "ingress", 0, "from", 0, "podSelector", "matchExpressions", 0, "values"], ["api"])(
         _find(d, "NetworkPolicy", "postgres-from-audit-writers"))),
    ("postgres strategy Recreate -> RollingUpdate", "Recreate",
     lambda d: _set(["spec", "strategy"], {"type": "RollingUpdate"})(_find(d, "Deployment", "postgres"))),
    ("HPA targets a missing Deployment", "does not exist",
     lambda d: _set(["spec", "scaleTargetRef", "name"], "scoring-api")(_find(d, "HorizontalPodAutoscaler", "api"))),
    ("registry users file renamed to a key the Secret lacks", "no such key",
     lambda d: _set(["value"], "/etc/model-registry/auth/user")(_env(_container(d, "model-registry"), "REGISTRY_AUTH_USERS_FILE"))),
    ("registry authentication turned off (no users or tokens file)", "authentication is off", lambda d: [
        _container(d, "model-registry")["env"].remove(_env(_container(d, "model-registry"), v))
        for v in ("REGISTRY_AUTH_USERS_FILE", "REGISTRY_AUTH_TOKENS_FILE")]),
    ("redis probe no longer redis-cli ping", "redis-cli",
     lambda d: _set(["livenessProbe", "exec", "command"], ["true"])(_container(d, "redis"))),
    # Applicants' files stay off the registry's volume, and the registry off theirs.
    ("registry mounts jobs-storage", "PVC jobs-storage is mounted by", lambda d: (
        _find(d, "Deployment", "model-registry")["spec"]["template"]["spec"]["volumes"].append(
            {"name": "jobs", "persistentVolumeClaim": {"claimName": "jobs-storage"}}),
        _container(d, "model-registry")["volumeMounts"].append({"name": "jobs", "mountPath": "/mnt/jobs"}))),
    ("api mounts mlflow-storage again", "PVC mlflow-storage is mounted by",
     lambda d: _set(["spec", "template", "spec", "volumes", 0, "persistentVolumeClaim", "claimName"], "mlflow-storage")(
         _find(d, "Deployment", "api"))),
    ("worker JOBS_ROOT moved to another path", "worker: JOBS_ROOT",
     lambda d: _set(["value"], "/tmp/jobs")(_env(_container(d, "worker"), "JOBS_ROOT"))),
    ("registry ARTIFACT_ROOT off its volume", "model-registry: ARTIFACT_ROOT",
     lambda d: _set(["value"], "/tmp/artifacts")(_env(_container(d, "model-registry"), "ARTIFACT_ROOT"))),
    # Credentials and permissions.
    ("registry permissions file dropped", "no permissions file",
     lambda d: _container(d, "model-registry")["env"].remove(
         _env(_container(d, "model-registry"), "REGISTRY_AUTH_PERMISSIONS_FILE"))),
    ("registry default permission EDIT", "REGISTRY_AUTH_DEFAULT_PERMISSION is EDIT",
     lambda d: _set(["value"], "EDIT")(_env(_container(d, "model-registry"), "REGISTRY_AUTH_DEFAULT_PERMISSION"))),
    ("api keys file dropped", "api: authentication is off",
     lambda d: _container(d, "api")["env"].remove(_env(_container(d, "api"), "API_KEYS_FILE"))),
    ("api keys file renamed to a key the Secret lacks", "no such key",
     lambda d: _set(["value"], "/etc/api/auth/key")(_env(_container(d, "api"), "API_KEYS_FILE"))),
    ("worker sends the api's registry token", "same registry credentials",
     lambda d: _set(["valueFrom", "secretKeyRef", "key"], "API_MLFLOW_TRACKING_TOKEN")(
         _env(_container(d, "worker"), "MLFLOW_TRACKING_TOKEN"))),
    ("worker registry token dropped", "worker: sends no registry credentials",
     lambda d: _container(d, "worker")["env"].remove(_env(_container(d, "worker"), "MLFLOW_TRACKING_TOKEN"))),
    # The decision audit log.
    ("api AUDIT_URL dropped", "api: no AUDIT_URL",
     lambda d: _container(d, "api")["env"].remove(_env(_container(d, "api"), "AUDIT_URL"))),
    ("worker AUDIT_URL written into the manifest", "worker: AUDIT_URL written into the manifest",
     lambda d: (lambda e: (e.pop("valueFrom"), e.update(value="postgres://loan_scoring_audit:pw@postgres:5432/audit")))(
         _env(_container(d, "worker"), "AUDIT_URL"))),
    ("api audits into the registry's database", "AUDIT_URL comes from loan-scoring-secrets/DATABASE_URL",
     lambda d: _set(["valueFrom", "secretKeyRef", "key"], "DATABASE_URL")(_env(_container(d, "api"), "AUDIT_URL"))),
    ("worker given the registry's DATABASE_URL", "worker/worker reads DATABASE_URL",
     lambda d: _container(d, "worker")["env"].append(
         {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "loan-scoring-secrets", "key": "DATABASE_URL"}}})),
    ("api loads the whole Secret", "loads every key of Secret loan-scoring-secrets",
     lambda d: _container(d, "api")["envFrom"].append({"secretRef": {"name": "loan-scoring-secrets"}})),
    ("AUDIT_MODE fail-open", "AUDIT_MODE is 'fail-open'",
     lambda d: _set(["data", "AUDIT_MODE"], "fail-open")(_find(d, "ConfigMap", "loan-scoring-config"))),
    ("postgres init scripts not mounted", "postgres: no init script",
     lambda d: _container(d, "postgres")["volumeMounts"].remove(
         next(m for m in _container(d, "postgres")["volumeMounts"] if m["mountPath"] == POSTGRES_INITDB))),
    ("init script creates the audit database for the registry's role", "postgres: no init script",
     lambda d: _find(d, "ConfigMap", "postgres-initdb")["data"].update(
         {k: v.replace("OWNER loan_scoring_audit", "OWNER loan_scoring")
          for k, v in _find(d, "ConfigMap", "postgres-initdb")["data"].items()})),
    ("postgres AUDIT_POSTGRES_PASSWORD dropped", "postgres: AUDIT_POSTGRES_PASSWORD",
     lambda d: _container(d, "postgres")["env"].remove(_env(_container(d, "postgres"), "AUDIT_POSTGRES_PASSWORD"))),
    # Allowed hosts and origins.
    ("registry Ingress host changed, allowed hosts not", "does not allow mlflow.bank.example",
     lambda d: _set(["spec", "rules", 0, "host"], "mlflow.bank.example")(_find(d, "Ingress", "model-registry"))),
    ("API_ALLOWED_HOSTS set to *", "allows every host",
     lambda d: _set(["data", "API_ALLOWED_HOSTS"], "*")(_find(d, "ConfigMap", "loan-scoring-config"))),
    ("MLFLOW_SERVER_ALLOWED_HOSTS unset", "MLFLOW_SERVER_ALLOWED_HOSTS is not set",
     lambda d: _find(d, "ConfigMap", "loan-scoring-config")["data"].pop("MLFLOW_SERVER_ALLOWED_HOSTS")),
    ("registry Service name missing from its allowed hosts", "does not allow model-registry:5000",
     lambda d: _set(["data", "MLFLOW_SERVER_ALLOWED_HOSTS"], "registry.loan-scoring.example.com,localhost")(
         _find(d, "ConfigMap", "loan-scoring-config"))),
    ("api CORS origins emptied", "CORS_ALLOWED_ORIGINS does not list",
     lambda d: _set(["data", "CORS_ALLOWED_ORIGINS"], "")(_find(d, "ConfigMap", "loan-scoring-config"))),
    ("registry Ingress CORS opened to writes", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS does not list",
     lambda d: _set(["metadata", "annotations", "nginx.ingress.kubernetes.io/cors-allow-methods"], "GET, POST, OPTIONS")(
         _find(d, "Ingress", "model-registry"))),
]


def self_test(docs: list[dict], template: list[dict]) -> int:
    base_errors = Checker(Render(docs, template), PROFILES["production"]).run()
    failures = 0
    if base_errors:
        print("self-test: the unmodified production render must pass first:")
        for e in base_errors:
            print(f"  {e}")
        return 1
    for title, expect, mutate in MUTATIONS:
        mutated = copy.deepcopy(docs)
        mutate(mutated)
        errors = Checker(Render(mutated, template), PROFILES["production"]).run()
        hit = [e for e in errors if expect in e]
        if hit:
            print(f"  caught  {title}: {hit[0]}")
        else:
            failures += 1
            print(f"  MISSED  {title} (expected a finding containing {expect!r}; got {errors or 'none'})")
    print(f"self-test: {len(MUTATIONS) - failures}/{len(MUTATIONS)} deliberate breaks reported")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rendered", help="output of `kubectl kustomize k8s/overlays/<name>`")
    ap.add_argument("--profile", help=f"overlay name, one of: {', '.join(PROFILES)}")
    ap.add_argument("--secrets-template", required=True, help="k8s/base/secrets.template.yaml")
    ap.add_argument("--self-test", action="store_true", help="break a production render on purpose; "
                    "fail unless every break is reported")
    args = ap.parse_args(argv)
    docs, template = load(args.rendered), load(args.secrets_template)
    if args.self_test:
        return self_test(docs, template)
    if args.profile not in PROFILES:
        print(f"k8s_check: overlay {args.profile!r} has no expectations; add it to PROFILES in {__file__}")
        return 1
    checker = Checker(Render(docs, template), PROFILES[args.profile])
    errors = checker.run()
    for e in errors:
        print(f"  {e}")
    print(f"k8s_check: {args.profile}: {checker.checks - len(errors)}/{checker.checks} checks passed"
          + ("" if not errors else f", {len(errors)} FAILED"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
