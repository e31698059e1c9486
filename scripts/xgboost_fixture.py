#!/usr/bin/env python3
"""Generate the XGBoost test fixture used by the Rust model crate.

What it does
------------
1. Builds a deterministic synthetic loan-default data set with numpy
   (2000 rows, 5 numeric features: income, debt_ratio, age,
   num_late_payments, loan_amount; label 1 = default, drawn from a logistic
   function of the features).  About 10% of debt_ratio and of
   num_late_payments are missing (NaN) so that XGBoost's default directions
   for missing values matter.  Every feature value is rounded to float32
   before training and predicting, because the Rust scorer evaluates trees in
   f32 and must see exactly the same numbers.
2. Trains xgboost.XGBClassifier(n_estimators=30, max_depth=3,
   learning_rate=0.1, objective="binary:logistic", base_score=0.3,
   tree_method="hist", random_state=7, n_jobs=1).  base_score is
   deliberately not 0.5 so that the importer has to handle it.  The feature
   names (and "float" types) are stored in the model so the importer can
   check them against the spec.
3. Writes into libs/model/tests/fixtures/xgboost/:
     model.json  - the model, as written by Booster.save_model (XGBoost JSON)
     spec.json   - our feature spec (format_version 1) for the 5 features
     cases.json  - 40 test rows with XGBoost's own margin, probability and
                   TreeSHAP contributions (pred_contribs; last = bias)
     cases.csv   - the same 40 rows as CSV (application_id + features,
                   empty cell = missing) for CLI tests
4. Checks the JSON format itself: re-implements prediction and TreeSHAP in
   plain Python over model.json and compares with booster.predict, printing
   the max abs differences (and failing if they are not tiny).  It also
   checks that plain f32 arithmetic (base margin = f32(logit(base_score) in
   f64), then leaf values added in f32 in tree order) reproduces XGBoost's
   margins bit for bit.

How to rerun (from the repository root)
---------------------------------------
    pip install xgboost-cpu==3.2.0 numpy scikit-learn && python3 scripts/xgboost_fixture.py

(scikit-learn is needed because xgboost.XGBClassifier refuses to start
without it.  The fixture files were made with xgboost-cpu 3.2.0,
numpy 2.4.6 and scikit-learn 1.9.1 on Python 3.11; pin numpy==2.4.6 too if
you need byte-identical data.)

Everything is seeded, so reruns with the same versions reproduce the same
files byte for byte.  A different xgboost version may change the model and
the JSON layout, and a different numpy may change the random draws: read the
README next to the fixture before upgrading.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import xgboost as xgb

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "libs" / "model" / "tests" / "fixtures" / "xgboost"

FEATURES = ["income", "debt_ratio", "age", "num_late_payments", "loan_amount"]
N_ROWS = 2000
DATA_SEED = 20240601
MISSING_RATE = 0.10
N_CASES = 40

# Feature spec bounds; every test row stays inside them so a CLI test can
# score all 40 rows without rejections.
SPEC_FEATURES = [
    {
        "name": "income",
        "kind": "numeric",
        "required": True,
        "min": 0.0,
        "max": 1000000.0,
        "reason": "Income is low",
        "protected": False,
        "on_invalid": "reject",
    },
    {
        "name": "debt_ratio",
        "kind": "numeric",
        "required": False,
        "min": 0.0,
        "max": 5.0,
        "reason": "Debt is high compared with income",
        "protected": False,
        "on_invalid": "missing",
    },
    {
        "name": "age",
        "kind": "numeric",
        "required": True,
        "min": 18.0,
        "max": 100.0,
        "reason": "Younger applicants have defaulted more often",
        # Age is a protected characteristic in credit law (e.g. ECOA/Reg B):
        # never a reason code, but this model does use it (column 2), so
        # use_in_model must be set or the spec would drop it from the inputs.
        "protected": True,
        "use_in_model": True,
        "on_invalid": "reject",
    },
    {
        "name": "num_late_payments",
        "kind": "numeric",
        "required": False,
        "min": 0.0,
        "max": 100.0,
        "reason": "Has a record of late payments",
        "protected": False,
        "on_invalid": "missing",
    },
    {
        "name": "loan_amount",
        "kind": "numeric",
        "required": True,
        "min": 0.0,
        "max": 1000000.0,
        "reason": "Requested loan amount is large",
        "protected": False,
        "on_invalid": "reject",
    },
]


def make_dataset(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = N_ROWS
    income = np.clip(np.round(rng.lognormal(np.log(55000.0), 0.5, n), -2), 8000.0, 600000.0)
    debt_ratio = np.round(rng.beta(2.0, 5.0, n) * 1.2, 3)
    age = rng.integers(21, 76, n).astype(np.float64)
    num_late = np.minimum(rng.poisson(0.7, n), 15).astype(np.float64)
    loan_amount = np.clip(np.round(rng.lognormal(np.log(15000.0), 0.6, n), -1), 1000.0, 250000.0)

    miss_debt = rng.random(n) < MISSING_RATE
    miss_late = rng.random(n) < MISSING_RATE

    logit = (
        -1.6
        - 1.2 * (np.log(income) - np.log(55000.0))
        + 3.0 * (debt_ratio - 0.34)
        - 0.02 * (age - 48.0)
        + 0.6 * (num_late - 0.7)
        + 0.5 * (np.log(loan_amount) - np.log(15000.0))
        # Applicants who do not report their debt are a bit riskier, so the
        # learned default direction for missing debt_ratio is meaningful.
        + 0.8 * miss_debt
    )
    p = 1.0 / (1.0 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.int32)

    X = np.column_stack([income, debt_ratio, age, num_late, loan_amount])
    X[miss_debt, 1] = np.nan
    X[miss_late, 3] = np.nan
    return X.astype(np.float32), y


def root_thresholds(model_json: dict) -> list[tuple[int, float]]:
    """(feature index, split condition) of the root of each tree, deduplicated."""
    seen, out = set(), []
    for tree in model_json["learner"]["gradient_booster"]["model"]["trees"]:
        f = int(tree["split_indices"][0])
        c = float(np.float32(tree["split_conditions"][0]))
        if tree["left_children"][0] != -1 and (f, c) not in seen:
            seen.add((f, c))
            out.append((f, c))
    return out


def pick_cases(rng: np.random.Generator, X: np.ndarray, model_json: dict) -> np.ndarray:
    miss_d = np.isnan(X[:, 1])
    miss_l = np.isnan(X[:, 3])
    groups = [
        (np.flatnonzero(~miss_d & ~miss_l), 10),
        (np.flatnonzero(miss_d & ~miss_l), 5),
        (np.flatnonzero(~miss_d & miss_l), 5),
        (np.flatnonzero(miss_d & miss_l), 2),
    ]
    rows = []
    for idx, k in groups:
        rows.extend(X[i].copy() for i in rng.choice(idx, size=k, replace=False))

    nan = np.nan
    # Extreme (but in-spec) applicants.
    extremes = [
        [0.0, 0.0, 18.0, 0.0, 0.0],                # zero income, minimum age, zero loan
        [1000000.0, 0.0, 100.0, 0.0, 1000.0],      # very rich, maximum age
        [12000.0, 5.0, 22.0, 100.0, 1000000.0],    # everything at the risky end
        [9000.0, nan, 19.0, nan, 900000.0],        # both optional features missing, risky
        [750000.0, nan, 60.0, nan, 5000.0],        # both missing, safe
        [25000.0, 4.2, 35.0, 40.0, 300000.0],      # large debt ratio and late count
    ]
    rows.extend(np.array(r, dtype=np.float32) for r in extremes)

    # Rows that sit exactly on a split threshold and one float32 ulp below it,
    # so the importer's `x < split_condition` (strict, in f32) gets exercised.
    thresholds = root_thresholds(model_json)
    base = X[np.flatnonzero(~miss_d & ~miss_l)[0]]
    n_left = N_CASES - len(rows)
    for j in range(n_left):
        f, c = thresholds[(j // 2) % len(thresholds)]
        r = base.copy()
        c32 = np.float32(c)
        r[f] = c32 if j % 2 == 0 else np.nextafter(c32, np.float32(-np.inf))
        rows.append(r)
    cases = np.vstack(rows).astype(np.float32)
    assert cases.shape == (N_CASES, len(FEATURES))
    return cases


def num(v) -> float | None:
    """float32 value as an exact JSON number (None for missing)."""
    v32 = np.float32(v)
    return None if np.isnan(v32) else float(v32)


# --------------------------------------------------------------------------
# Independent re-implementation over model.json, used to check the format.
# --------------------------------------------------------------------------

def parse_base_score(raw: str) -> float:
    s = raw.strip()
    if s.startswith("["):
        vals = [v for v in s.strip("[]").split(",") if v.strip()]
        assert len(vals) == 1, raw
        s = vals[0]
    return float(s)


def tree_leaf(tree: dict, x: np.ndarray) -> int:
    nid = 0
    left, right = tree["left_children"], tree["right_children"]
    while left[nid] != -1:
        v = x[tree["split_indices"][nid]]
        if np.isnan(v):
            nid = left[nid] if tree["default_left"][nid] else right[nid]
        elif np.float32(v) < np.float32(tree["split_conditions"][nid]):
            nid = left[nid]
        else:
            nid = right[nid]
    return nid


def treeshap(tree: dict, x: np.ndarray, phi: np.ndarray) -> None:
    """Lundberg et al. TreeSHAP (Algorithm 2), cover = sum_hessian."""
    left, right = tree["left_children"], tree["right_children"]
    cover = tree["sum_hessian"]
    value = tree["split_conditions"]  # leaf value lives here for leaves

    def extend(path, pz, po, pi):
        path = [list(e) for e in path] + [[pi, pz, po, 1.0 if not path else 0.0]]
        d = len(path) - 1
        for i in range(d - 1, -1, -1):
            path[i + 1][3] += po * path[i][3] * (i + 1) / (d + 1)
            path[i][3] = pz * path[i][3] * (d - i) / (d + 1)
        return path

    def unwind(path, i):
        d = len(path) - 1
        po, pz = path[i][2], path[i][1]
        n = path[d][3]
        path = [list(e) for e in path]
        for j in range(d - 1, -1, -1):
            if po != 0:
                t = path[j][3]
                path[j][3] = n * (d + 1) / ((j + 1) * po)
                n = t - path[j][3] * pz * (d - j) / (d + 1)
            else:
                path[j][3] = path[j][3] * (d + 1) / (pz * (d - j))
        for j in range(i, d):
            path[j][0:3] = path[j + 1][0:3]
        return path[:-1]

    def unwound_sum(path, i):
        d = len(path) - 1
        po, pz = path[i][2], path[i][1]
        n = path[d][3]
        total = 0.0
        for j in range(d - 1, -1, -1):
            if po != 0:
                t = n * (d + 1) / ((j + 1) * po)
                total += t
                n = path[j][3] - t * pz * (d - j) / (d + 1)
            else:
                total += path[j][3] / (pz * (d - j) / (d + 1))
        return total

    def recurse(j, path, pz, po, pi):
        path = extend(path, pz, po, pi)
        if left[j] == -1:
            for i in range(1, len(path)):
                w = unwound_sum(path, i)
                phi[path[i][0]] += w * (path[i][2] - path[i][1]) * value[j]
            return
        f = tree["split_indices"][j]
        hot = _next(tree, j, x)
        cold = right[j] if hot == left[j] else left[j]
        iz, io = 1.0, 1.0
        k = next((k for k in range(1, len(path)) if path[k][0] == f), None)
        if k is not None:
            iz, io = path[k][1], path[k][2]
            path = unwind(path, k)
        recurse(hot, path, iz * cover[hot] / cover[j], io, f)
        recurse(cold, path, iz * cover[cold] / cover[j], 0.0, f)

    recurse(0, [], 1.0, 1.0, -1)


def _next(tree: dict, j: int, x: np.ndarray) -> int:
    v = x[tree["split_indices"][j]]
    if np.isnan(v):
        return tree["left_children"][j] if tree["default_left"][j] else tree["right_children"][j]
    if np.float32(v) < np.float32(tree["split_conditions"][j]):
        return tree["left_children"][j]
    return tree["right_children"][j]


def expected_value(tree: dict) -> float:
    """Cover-weighted mean of the leaf values (the tree's SHAP bias)."""
    left, right = tree["left_children"], tree["right_children"]
    cover, value = tree["sum_hessian"], tree["split_conditions"]

    def mean(j):
        if left[j] == -1:
            return value[j]
        return (mean(left[j]) * cover[left[j]] + mean(right[j]) * cover[right[j]]) / cover[j]

    return mean(0)


def check_against_json(model_json: dict, X: np.ndarray, margin, contribs) -> dict:
    lmp = model_json["learner"]["learner_model_param"]
    base_prob = parse_base_score(lmp["base_score"])
    base_margin = math.log(base_prob / (1.0 - base_prob))  # binary:logistic
    trees = model_json["learner"]["gradient_booster"]["model"]["trees"]

    my_margin = np.empty(len(X))
    my_contribs = np.zeros((len(X), X.shape[1] + 1))
    leaf_eq_base_weight = True
    for r, x in enumerate(X):
        total = base_margin
        phi = np.zeros(X.shape[1] + 1)
        phi[-1] = base_margin
        for t in trees:
            total += t["split_conditions"][tree_leaf(t, x)]
            treeshap(t, x, phi)
            phi[-1] += expected_value(t)
        my_margin[r] = total
        my_contribs[r] = phi
    for t in trees:
        for j, l in enumerate(t["left_children"]):
            if l == -1 and np.float32(t["split_conditions"][j]) != np.float32(t["base_weights"][j]):
                leaf_eq_base_weight = False
    my_prob = 1.0 / (1.0 + np.exp(-my_margin))
    return {
        "base_score_raw": lmp["base_score"],
        "max_abs_margin_diff": float(np.max(np.abs(my_margin - margin))),
        "max_abs_prob_diff": float(np.max(np.abs(my_prob - 1.0 / (1.0 + np.exp(-margin.astype(np.float64)))))),
        "max_abs_contrib_diff": float(np.max(np.abs(my_contribs - contribs))),
        "leaf_split_condition_equals_base_weight": leaf_eq_base_weight,
    }


def check_file_structure(raw: str, model_json: dict) -> dict:
    """Facts about the JSON text the Rust importer relies on."""
    import re
    from decimal import Decimal

    # Every float literal gives the same f32 whether parsed straight to f32 or
    # to f64 and then cast (no double-rounding trap for an f64-first parser).
    lits = re.findall(r"-?\d+(?:\.\d+)?[Ee][-+]?\d+|-?\d+\.\d+", raw)
    double_rounding = 0
    for lit in lits:
        d = Decimal(lit)
        c = np.float32(float(lit))
        err = abs(d - Decimal(float(c)))
        for nb in (np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))):
            if abs(d - Decimal(float(nb))) < err:
                double_rounding += 1
    trees = model_json["learner"]["gradient_booster"]["model"]["trees"]
    reachable = True
    for t in trees:
        seen, stack = set(), [0]
        while stack:
            n = stack.pop()
            seen.add(n)
            if t["left_children"][n] != -1:
                stack += [t["left_children"][n], t["right_children"][n]]
        reachable &= len(seen) == int(t["tree_param"]["num_nodes"])
        reachable &= t["tree_param"]["num_deleted"] == "0"
    return {
        "float_literals_checked": len(lits),
        "float_literals_double_rounding_mismatch": double_rounding,
        "all_nodes_reachable_and_none_deleted": reachable,
        "default_left_is_int_0_1": all(
            type(v) is int and v in (0, 1) for t in trees for v in t["default_left"]
        ),
        "num_nodes_per_tree": sorted({int(t["tree_param"]["num_nodes"]) for t in trees}),
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(DATA_SEED)
    X, y = make_dataset(rng)

    model = xgb.XGBClassifier(
        n_estimators=30,
        max_depth=3,
        learning_rate=0.1,
        objective="binary:logistic",
        base_score=0.3,
        tree_method="hist",
        random_state=7,
        n_jobs=1,
    )
    model.fit(X, y)
    # Store the feature names (and float types) in the model, as a model
    # trained from a data frame would have, so the importer can check them
    # against the spec.  Order = column order = split_indices.
    model.get_booster().feature_names = FEATURES
    model.get_booster().feature_types = ["float"] * len(FEATURES)
    model_path = OUT / "model.json"
    model.save_model(str(model_path))
    model_json = json.loads(model_path.read_text())

    cases = pick_cases(rng, X, model_json)
    booster = model.get_booster()
    dm = xgb.DMatrix(cases, missing=np.nan, feature_names=FEATURES)
    margin = booster.predict(dm, output_margin=True)
    prob = model.predict_proba(cases)[:, 1]
    contribs = booster.predict(dm, pred_contribs=True)
    assert contribs.shape == (N_CASES, len(FEATURES) + 1)

    spec = {
        "format_version": 1,
        "target": {"name": "default", "positive": "1"},
        "id_column": "application_id",
        "features": SPEC_FEATURES,
    }
    (OUT / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")

    doc = {
        "xgboost_version": xgb.__version__,
        "feature_names": FEATURES,
        "cases": [
            {
                "features": [num(v) for v in row],
                "margin": float(m),
                "probability": float(p),
                "contribs": [float(c) for c in cs],
            }
            for row, m, p, cs in zip(cases, margin, prob, contribs)
        ],
    }
    with open(OUT / "cases.json", "w") as f:
        f.write("{\n")
        f.write(f'  "xgboost_version": {json.dumps(doc["xgboost_version"])},\n')
        f.write(f'  "feature_names": {json.dumps(FEATURES)},\n')
        f.write('  "cases": [\n')
        f.write(",\n".join("    " + json.dumps(c) for c in doc["cases"]))
        f.write("\n  ]\n}\n")

    with open(OUT / "cases.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["application_id"] + FEATURES)
        for i, row in enumerate(cases, start=1):
            w.writerow([f"A{i:04d}"] + ["" if num(v) is None else repr(num(v)) for v in row])

    # Self-checks: the files say what XGBoost says.
    back = json.loads((OUT / "cases.json").read_text())
    for c, row in zip(back["cases"], cases):
        for a, b in zip(c["features"], row):
            assert (a is None and np.isnan(b)) or np.float32(a) == b
    assert np.allclose(contribs.sum(axis=1), margin, atol=1e-5)
    assert np.allclose(prob, 1.0 / (1.0 + np.exp(-margin.astype(np.float64))), atol=1e-6)

    report = check_against_json(model_json, cases, margin.astype(np.float64), contribs.astype(np.float64))
    # Same check on all 2000 training rows for the margin (prediction only).
    full_margin32 = booster.predict(
        xgb.DMatrix(X, missing=np.nan, feature_names=FEATURES), output_margin=True
    )
    full_margin = full_margin32.astype(np.float64)
    lmp = model_json["learner"]["learner_model_param"]
    bp = parse_base_score(lmp["base_score"])
    trees = model_json["learner"]["gradient_booster"]["model"]["trees"]
    mine = np.array([
        math.log(bp / (1 - bp)) + sum(t["split_conditions"][tree_leaf(t, x)] for t in trees) for x in X
    ])
    report["max_abs_margin_diff_all_2000_rows"] = float(np.max(np.abs(mine - full_margin)))
    # Bit-exact f32 recipe (what a Rust scorer doing f32 arithmetic can match).
    bm32 = np.float32(math.log(bp / (1 - bp)))
    exact = 0
    for x, target in zip(X, full_margin32):
        acc = bm32
        for t in trees:
            acc = np.float32(acc + np.float32(t["split_conditions"][tree_leaf(t, x)]))
        exact += int(acc == target)
    report["f32_sequential_margin_bit_exact_rows"] = f"{exact}/{len(X)}"
    report.update(check_file_structure(model_path.read_text(), model_json))
    report["xgboost_version"] = xgb.__version__
    report["train_default_rate"] = float(y.mean())
    report["model_json_bytes"] = model_path.stat().st_size
    print(json.dumps(report, indent=2))
    ok = (
        report["max_abs_margin_diff"] < 1e-5
        and report["max_abs_margin_diff_all_2000_rows"] < 1e-5
        and report["max_abs_contrib_diff"] < 1e-5
        and report["leaf_split_condition_equals_base_weight"]
        and report["float_literals_double_rounding_mismatch"] == 0
        and report["all_nodes_reachable_and_none_deleted"]
    )
    if not ok:
        print("ERROR: re-implementation over model.json disagrees with XGBoost", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
