#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus alerts of k8s/components/monitoring offline
(run by scripts/k8s-validate.sh, in its venv: PyYAML and promql-parser).

- The dashboard JSON parses, has a uid and a title, unique panel ids, and every query panel
  has targets with an expression and a refId, on the `datasource` variable.
- The PrometheusRule has groups of uniquely named alerts, each with a severity label, summary
  and description annotations, and a valid `for` duration.
- Every PromQL expression (dashboard targets and alert rules) parses (promql-parser, the PromQL
  grammar; Grafana's $__rate_interval, $__interval and $__range are replaced by a duration
  first), and every metric it selects is one the Rust sources export: the name, or the name
  without a histogram's _bucket/_sum/_count suffix, must appear as a string literal ("name")
  in a .rs file under services/ or libs/ (where the metrics are registered). Label names used
  in matchers and in by/without/on/ignoring/group_left/group_right must likewise appear there,
  or be one Prometheus adds itself (TARGET_LABELS). An unknown name fails, naming it.
- With --rendered: an overlay render that has the monitors also has the rule and the dashboard
  ConfigMap (labelled grafana_dashboard: "1", carrying exactly the dashboard file), and one
  without them has neither.

--self-test breaks copies of the files in ways the checks must catch (a misspelled metric, an
unknown label, a syntax error, a missing severity...) and fails unless each is reported.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys

import promql_parser
import yaml

# Series Prometheus records itself, not the services: `up` is every target's scrape health.
PROMETHEUS_SERIES = {"up"}
# Labels Prometheus or the histogram encoding adds to every series (the target's job and
# instance; the Operator's namespace, pod, service, container and endpoint; `le` of buckets).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SEVERITIES = {"critical", "warning", "info"}
# Grafana's interval variables, replaced before parsing (they stand for durations).
GRAFANA_DURATIONS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
DASHBOARD_DATASOURCE_UID = "${datasource}"
DASHBOARD_CONFIGMAP_LABEL = ("grafana_dashboard", "1")


def rust_literals(roots: list[str]) -> set[str]:
    """Every identifier-like string literal ("...") in the .rs files under roots: what
    `grep -r '"name"' services libs` would find."""
    found: set[str] = set()
    literal = re.compile(r'"([A-Za-z_:][A-Za-z0-9_:]*)"')
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in {"target", ".git"}]
            for f in filenames:
                if f.endswith(".rs"):
                    with open(os.path.join(dirpath, f), encoding="utf-8", errors="replace") as fh:
                        found.update(literal.findall(fh.read()))
    return found


class Checker:
    def __init__(self, literals: set[str]):
        self.literals = literals
        self.problems: list[str] = []
        self.exprs = 0
        self.metrics: set[str] = set()

    def fail(self, msg: str) -> None:
        self.problems.append(msg)

    # ---- PromQL ------------------------------------------------------------------------------
    def known_metric(self, name: str) -> bool:
        if name in PROMETHEUS_SERIES or name in self.literals:
            return True
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in self.literals:
                return True
        return False

    def known_label(self, name: str) -> bool:
        return name in TARGET_LABELS or name in self.literals

    def promql(self, expr: str, where: str) -> None:
        self.exprs += 1
        text = GRAFANA_DURATIONS.sub("5m", expr)
        leftover = re.findall(r"\$\{?\w+", re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', "", text))
        if leftover:
            self.fail(f"{where}: Grafana variable(s) {sorted(set(leftover))} outside a label value")
            return
        try:
            ast = promql_parser.parse(text)
        except Exception as e:  # the parser raises ValueError with the position
            self.fail(f"{where}: PromQL does not parse: {e}")
            return
        metrics: list[str] = []
        labels: list[str] = []

        def matchers(ms) -> None:
            if ms is None:
                return
            for m in list(ms.matchers or []) + [m for group in (ms.or_matchers or []) for m in group]:
                if m.name == "__name__":
                    metrics.append(m.value)
                else:
                    labels.append(m.name)

        def visit(node):
            if isinstance(node, promql_parser.VectorSelector):
                if node.name:
                    metrics.append(node.name)
                matchers(node.matchers)
            elif isinstance(node, promql_parser.AggregateExpr):
                if node.modifier is not None:
                    labels.extend(node.modifier.labels or [])
            elif isinstance(node, promql_parser.BinaryExpr):
                mod = node.modifier
                if mod is not None:
                    if mod.matching is not None:
                        labels.extend(mod.matching.labels or [])
                    labels.extend(mod.group_labels or [])
            return True

        promql_parser.walk(ast, visit)
        if not metrics:
            self.fail(f"{where}: selects no metric: {expr.strip()}")
        for name in metrics:
            self.metrics.add(name)
            if not self.known_metric(name):
                self.fail(f"{where}: unknown metric {name!r}: no \"{name}\" in services/ or libs/ "
                          f"(histogram suffixes _bucket/_sum/_count stripped)")
        for name in labels:
            if not self.known_label(name):
                self.fail(f"{where}: unknown label {name!r}: no \"{name}\" in services/ or libs/ "
                          f"and not one Prometheus adds ({', '.join(sorted(TARGET_LABELS))})")

    # ---- dashboard ---------------------------------------------------------------------------
    def dashboard(self, d: dict, where: str) -> None:
        for key in ("uid", "title", "panels"):
            if not d.get(key):
                self.fail(f"{where}: no {key}")
        variables = {v.get("name") for v in (d.get("templating") or {}).get("list") or []}
        if "datasource" not in variables:
            self.fail(f"{where}: no `datasource` template variable (panels use {DASHBOARD_DATASOURCE_UID})")
        ids: set = set()
        panels = list(d.get("panels") or [])
        for p in list(panels):
            panels.extend(p.get("panels") or [])  # panels inside collapsed rows
        queries = 0
        for p in panels:
            title = p.get("title") or f"panel {p.get('id')}"
            if p.get("id") in ids:
                self.fail(f"{where}: duplicate panel id {p.get('id')} ({title})")
            ids.add(p.get("id"))
            if not p.get("gridPos"):
                self.fail(f"{where}: panel {title!r} has no gridPos")
            if p.get("type") == "row":
                continue
            targets = p.get("targets") or []
            if not targets:
                self.fail(f"{where}: panel {title!r} has no queries")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or not all(refs):
                self.fail(f"{where}: panel {title!r} has missing or duplicate refIds {refs}")
            for t in targets:
                ds = (t.get("datasource") or p.get("datasource") or {}).get("uid")
                if ds != DASHBOARD_DATASOURCE_UID:
                    self.fail(f"{where}: panel {title!r} query {t.get('refId')} uses datasource {ds!r}, "
                              f"not {DASHBOARD_DATASOURCE_UID}")
                if not (t.get("expr") or "").strip():
                    self.fail(f"{where}: panel {title!r} query {t.get('refId')} has no expr")
                    continue
                queries += 1
                self.promql(t["expr"], f"{where}: panel {title!r} query {t.get('refId')}")
        if not queries:
            self.fail(f"{where}: no queries at all")

    # ---- alerts ------------------------------------------------------------------------------
    def rules(self, doc: dict, where: str) -> None:
        if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "PrometheusRule":
            self.fail(f"{where}: not a monitoring.coreos.com/v1 PrometheusRule")
        groups = (doc.get("spec") or {}).get("groups") or []
        if not groups:
            self.fail(f"{where}: no rule groups")
        group_names: set = set()
        alert_names: set = set()
        for g in groups:
            gname = g.get("name")
            if not gname or gname in group_names:
                self.fail(f"{where}: group name {gname!r} missing or repeated")
            group_names.add(gname)
            if not g.get("rules"):
                self.fail(f"{where}: group {gname!r} has no rules")
            for r in g.get("rules") or []:
                name = r.get("alert") or r.get("record")
                at = f"{where}: {gname}/{name}"
                if not name:
                    self.fail(f"{where}: group {gname!r} has a rule with neither alert nor record")
                    continue
                if not (r.get("expr") or "").strip():
                    self.fail(f"{at}: no expr")
                else:
                    self.promql(str(r["expr"]), at)
                if "record" in r:
                    continue
                if name in alert_names:
                    self.fail(f"{at}: alert name repeated")
                alert_names.add(name)
                severity = (r.get("labels") or {}).get("severity")
                if severity not in SEVERITIES:
                    self.fail(f"{at}: severity label is {severity!r}, expected one of {sorted(SEVERITIES)}")
                ann = r.get("annotations") or {}
                for key in ("summary", "description"):
                    if not str(ann.get(key) or "").strip():
                        self.fail(f"{at}: no {key} annotation")
                if "for" in r:
                    try:
                        promql_parser.parse_duration(str(r["for"]))
                    except Exception as e:
                        self.fail(f"{at}: `for: {r['for']}` is not a duration: {e}")

    # ---- renders -----------------------------------------------------------------------------
    def rendered(self, path: str, dashboard_text: str, dashboard_key: str) -> str:
        with open(path) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d]
        kinds = {d.get("kind") for d in docs}
        name = os.path.basename(path)
        monitored = bool(kinds & {"ServiceMonitor", "PodMonitor"})
        dashboards = [d for d in docs if d.get("kind") == "ConfigMap" and
                      ((d.get("metadata") or {}).get("labels") or {}).get(DASHBOARD_CONFIGMAP_LABEL[0])
                      == DASHBOARD_CONFIGMAP_LABEL[1]]
        rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
        if not monitored:
            if dashboards or rules:
                self.fail(f"{name}: dashboard ConfigMap or PrometheusRule rendered without the monitors "
                          f"(the monitoring component brings all three)")
            return f"{name}: no monitoring"
        if len(rules) != 1:
            self.fail(f"{name}: {len(rules)} PrometheusRules rendered, expected 1")
        if len(dashboards) != 1:
            self.fail(f"{name}: {len(dashboards)} ConfigMaps labelled "
                      f"{DASHBOARD_CONFIGMAP_LABEL[0]}: \"{DASHBOARD_CONFIGMAP_LABEL[1]}\", expected 1")
        else:
            data = dashboards[0].get("data") or {}
            if data.get(dashboard_key) != dashboard_text:
                self.fail(f"{name}: ConfigMap {dashboards[0]['metadata'].get('name')} does not carry "
                          f"{dashboard_key} as in the dashboard file")
        for r in rules:
            self.rules(r, f"{name}: PrometheusRule {r['metadata'].get('name')}")
        return f"{name}: dashboard ConfigMap and PrometheusRule present"


def run(dashboard: dict, rule_docs: list[dict], literals: set[str], files: tuple[str, str]) -> Checker:
    c = Checker(literals)
    c.dashboard(dashboard, files[0])
    if len(rule_docs) != 1:
        c.fail(f"{files[1]}: {len(rule_docs)} documents, expected one PrometheusRule")
    for doc in rule_docs:
        c.rules(doc, files[1])
    return c


def _replace_in_expr(obj, old: str, new: str, count: list[int], key: str = "expr"):
    """Replaces `old` in the first value of a `key` field that holds it (depth first);
    count[0] says whether it did."""
    if count[0]:
        return obj
    if isinstance(obj, list):
        return [_replace_in_expr(x, old, new, count, key) for x in obj]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == key and isinstance(v, str) and old in v and not count[0]:
                count[0] += 1
                out[k] = v.replace(old, new, 1)
            else:
                out[k] = _replace_in_expr(v, old, new, count, key)
        return out
    return obj


def _first_alert(docs):
    return docs[0]["spec"]["groups"][0]["rules"][0]


# (what, "dashboard" or "rules", mutation). Each must produce at least one problem.
def _mutations():
    def in_text(old, new, key="expr"):
        def m(obj):
            n = [0]
            out = _replace_in_expr(obj, old, new, n, key)
            if not n[0]:
                raise AssertionError(f"self-test: {old!r} not found, update the mutation")
            return out
        return m

    def drop(key):
        def m(docs):
            docs = copy.deepcopy(docs)
            _first_alert(docs)["labels" if key == "severity" else "annotations"].pop(key)
            return docs
        return m

    def add_panel_query(expr):
        def m(d):
            d = copy.deepcopy(d)
            p = next(p for p in d["panels"] if p.get("type") != "row")
            p["targets"].append({"refId": "Z", "expr": expr, "datasource": {"type": "prometheus", "uid": DASHBOARD_DATASOURCE_UID}})
            return d
        return m

    def other_datasource(d):
        d = copy.deepcopy(d)
        p = next(p for p in d["panels"] if p.get("targets"))
        p["targets"][0]["datasource"] = {"type": "prometheus", "uid": "prometheus"}
        return d

    return [
        ("misspelled metric in a dashboard query", "dashboard", in_text("predictions_total{", "prediction_total{")),
        ("misspelled histogram in a dashboard query", "dashboard",
         in_text("http_request_duration_seconds_bucket", "http_request_duration_second_bucket")),
        ("misspelled bare metric (no braces) in a dashboard query", "dashboard",
         in_text("audit_queue_depth", "audit_queue_dept")),
        ("a metric no service exports", "dashboard", add_panel_query('max(feature_drift_ratio{feature="age"})')),
        ("unknown label in a dashboard query", "dashboard", in_text("by (decision)", "by (decisions)")),
        ("dashboard query that does not parse", "dashboard", in_text("sum by (route) (", "sum by (route) ((")),
        ("query on another data source", "dashboard", other_datasource),
        ("misspelled metric in an alert", "rules", in_text("audit_dropped_total", "audit_droped_total")),
        ("unknown label in an alert", "rules", in_text("shadow_version)", "shadow_ver)")),
        ("alert expression that does not parse", "rules", in_text("> 0.05", "> > 0.05")),
        ("alert without severity", "rules", drop("severity")),
        ("alert without description", "rules", drop("description")),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--sources", nargs="+", default=["services", "libs"])
    ap.add_argument("--rendered", nargs="*", default=[], help="overlay renders to check for the component's objects")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()

    with open(args.dashboard) as fh:
        dashboard_text = fh.read()
    try:
        dashboard = json.loads(dashboard_text)
    except json.JSONDecodeError as e:
        print(f"{args.dashboard}: not JSON: {e}")
        return 1
    with open(args.rules) as fh:
        rule_docs = [d for d in yaml.safe_load_all(fh) if d]
    literals = rust_literals(args.sources)
    if not literals:
        print(f"no string literals found in {args.sources}: wrong directory?")
        return 2
    files = (args.dashboard, args.rules)

    if args.self_test:
        base = run(dashboard, rule_docs, literals, files)
        if base.problems:
            print("self-test: the unbroken files already fail:")
            print("\n".join(base.problems))
            return 1
        missed = []
        for what, target, mutate in _mutations():
            d, r = dashboard, rule_docs
            if target == "dashboard":
                d = mutate(dashboard)
            else:
                r = mutate(rule_docs)
            c = run(d, r, literals, files)
            if c.problems:
                print(f"caught  {what}: {c.problems[0]}")
            else:
                print(f"MISSED  {what}")
                missed.append(what)
        total = len(_mutations())
        print(f"self-test: {total - len(missed)}/{total} deliberate breaks reported")
        return 1 if missed else 0

    c = run(dashboard, rule_docs, literals, files)
    exprs, metrics = c.exprs, sorted(c.metrics)
    notes = [c.rendered(path, dashboard_text, os.path.basename(args.dashboard)) for path in args.rendered]
    for p in c.problems:
        print(p)
    for n in notes:
        print(n)
    alerts = sum(1 for doc in rule_docs for g in (doc.get("spec") or {}).get("groups") or []
                 for r in g.get("rules") or [] if "alert" in r)
    print(f"monitoring_check: {exprs} PromQL expressions (dashboard and {alerts} alerts) over "
          f"{len(metrics)} metrics: {', '.join(metrics)}")
    print(f"monitoring_check: {len(c.problems)} problem(s)")
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main())
