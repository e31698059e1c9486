"""Trains the Python reference model: what the original stack did, on the same data and settings.

    bench/reference/.venv/bin/python bench/reference/train.py \
        --data data/german_credit.csv --spec data/german_credit.spec.json --out models/reference

Stratified 80/20 split (seed 42), scikit-learn ColumnTransformer fitted on the training part only
(median imputation + StandardScaler on numerics, one-hot on categoricals, protected attributes
left out), SMOTE-NC (imbalanced-learn, k = 5, balanced; applied to scaled numerics and raw
categories, as the Rust side does), XGBoost with 200 trees of depth 4 and learning rate 0.05,
Platt calibration and decision thresholds fitted on 3-fold out-of-fold margins, evaluation on the
held-out part. Writes into --out: preprocessor.joblib, xgb_model.json, meta.json.

The split and SMOTE use numpy/scikit-learn random streams, so the 200 held-out rows are not the
same 200 rows as the Rust split (same idea, same seed number, different generator).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import booleans_to_float, load_spec, model_features, read_csv  # noqa: E402


def make_preprocessor(spec: dict) -> ColumnTransformer:
    feats = model_features(spec)
    num = [f["name"] for f in feats if f["kind"] == "numeric"]
    cat = [f["name"] for f in feats if f["kind"] == "categorical"]
    boo = [f["name"] for f in feats if f["kind"] == "boolean"]
    parts = []
    if num:
        parts.append(("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), num))
    if cat:
        # Unseen or missing categories encode as all zeros, as on the Rust side.
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat))
    if boo:
        parts.append(("bool", SimpleImputer(strategy="most_frequent"), boo))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def smote_nc(pre: ColumnTransformer, spec: dict, x: pd.DataFrame, y: np.ndarray, seed: int, k: int):
    """SMOTE-NC on scaled numerics and raw categories; returns raw-unit rows and labels."""
    from imblearn.over_sampling import SMOTENC

    feats = model_features(spec)
    num = [f["name"] for f in feats if f["kind"] == "numeric"]
    other = [f["name"] for f in feats if f["kind"] != "numeric"]
    num_pipe = pre.named_transformers_["num"]
    frame = pd.DataFrame(num_pipe.transform(x[num]), columns=num, index=x.index)
    for c in other:
        frame[c] = x[c].astype("string").fillna("").astype(object)
    sm = SMOTENC(categorical_features=list(range(len(num), len(num) + len(other))), k_neighbors=k, random_state=seed)
    xr, yr = sm.fit_resample(frame, y)
    xr = pd.DataFrame(xr, columns=num + other)
    raw = pd.DataFrame(num_pipe.named_steps["scale"].inverse_transform(xr[num].astype(float)), columns=num)
    for c in other:
        col = xr[c].replace("", np.nan)
        raw[c] = col.astype(float) if x[c].dtype.kind == "f" else col
    return raw, np.asarray(yr), len(yr) - len(y)


def fit_booster(pre, spec, x: pd.DataFrame, y: np.ndarray, args) -> tuple[xgb.Booster, int]:
    added = 0
    if not args.no_smote:
        x, y, added = smote_nc(pre, spec, x, y, args.seed, args.smote_k)
    clf = xgb.XGBClassifier(
        n_estimators=args.trees,
        max_depth=args.max_depth,
        learning_rate=args.learning_rate,
        objective="binary:logistic",
        tree_method="hist",
        random_state=args.seed,
        n_jobs=args.jobs,
    )
    clf.fit(np.asarray(pre.transform(x), dtype=np.float32), y)
    return clf.get_booster(), added


def platt(margins: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling with smoothed targets, fitted by Newton's method (as the Rust side)."""
    pos = y.sum()
    neg = len(y) - pos
    t = np.where(y, (pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0))

    def loss(a, b):
        z = a * margins + b
        return float(np.sum(np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - t * z))

    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a * margins + b)))
        d = p - t
        w = np.maximum(p * (1 - p), 1e-12)
        g = np.array([np.sum(d * margins), np.sum(d)])
        h = np.array([[np.sum(w * margins**2) + 1e-9, np.sum(w * margins)], [np.sum(w * margins), np.sum(w) + 1e-9]])
        step_dir = np.linalg.solve(h, g)
        cur, step = loss(a, b), 1.0
        while step > 1e-10 and loss(a - step * step_dir[0], b - step * step_dir[1]) > cur:
            step /= 2
        a, b = a - step * step_dir[0], b - step * step_dir[1]
        if np.all(np.abs(step * step_dir) < 1e-10):
            break
    return float(a), float(b)


def thresholds(p: np.ndarray, y: np.ndarray, review_recall: float) -> dict:
    """Decline at the F1-optimal threshold; approve below the highest threshold that still sends
    `review_recall` of defaulters to review or decline (Rust: Thresholds::choose)."""
    cands = np.unique(p)
    pos = p[y]
    neg = p[~y]
    tp = np.array([(pos >= c).sum() for c in cands])
    fp = np.array([(neg >= c).sum() for c in cands])
    fn = len(pos) - tp
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    decline = float(cands[int(np.argmax(f1))])
    ok = cands[tp / max(len(pos), 1) >= review_recall]
    approve = float(ok.max()) if len(ok) else float(cands[0])
    return {"approve": min(approve, decline), "decline": decline, "rule": "f1", "review_recall": review_recall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/german_credit.csv")
    ap.add_argument("--spec", default="data/german_credit.spec.json")
    ap.add_argument("--out", default="models/reference")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--trees", type=int, default=200)
    ap.add_argument("--max-depth", type=int, default=4)
    ap.add_argument("--learning-rate", type=float, default=0.05)
    ap.add_argument("--no-smote", action="store_true")
    ap.add_argument("--smote-k", type=int, default=5)
    ap.add_argument("--calibration-folds", type=int, default=3)
    ap.add_argument("--review-recall", type=float, default=0.9)
    ap.add_argument("--jobs", type=int, default=None, help="XGBoost threads (default: all cores)")
    args = ap.parse_args()

    started = time.perf_counter()
    spec = load_spec(args.spec)
    df = booleans_to_float(read_csv(args.data, spec), spec)
    target = spec["target"]
    y = (df[target["name"]].astype(str) == str(target["positive"])).to_numpy()
    inputs = [f["name"] for f in model_features(spec)]
    x = df[inputs]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=args.test_fraction, stratify=y, random_state=args.seed)

    pre = make_preprocessor(spec).fit(x_tr)
    width = len(pre.get_feature_names_out())

    # Out-of-fold margins for calibration and thresholds (each fold with its own SMOTE).
    oof = np.zeros(len(y_tr))
    folds = StratifiedKFold(n_splits=args.calibration_folds, shuffle=True, random_state=args.seed)
    for fit_idx, held_idx in folds.split(x_tr, y_tr):
        b, _ = fit_booster(pre, spec, x_tr.iloc[fit_idx], y_tr[fit_idx], args)
        oof[held_idx] = b.inplace_predict(np.asarray(pre.transform(x_tr.iloc[held_idx]), dtype=np.float32), predict_type="margin")
    a, bb = platt(oof, y_tr)
    oof_p = 1 / (1 + np.exp(-(a * oof + bb)))
    th = thresholds(oof_p, y_tr, args.review_recall)

    booster, smote_rows = fit_booster(pre, spec, x_tr, y_tr, args)
    m_te = np.asarray(booster.inplace_predict(np.asarray(pre.transform(x_te), dtype=np.float32), predict_type="margin"), dtype=np.float64)
    p_raw = 1 / (1 + np.exp(-m_te))
    p_cal = 1 / (1 + np.exp(-(a * m_te + bb)))
    fpr, tpr, _ = roc_curve(y_te, p_cal)
    metrics = {
        "test_roc_auc": roc_auc_score(y_te, p_cal),
        "test_pr_auc": average_precision_score(y_te, p_cal),
        "test_ks": float(np.max(tpr - fpr)),
        "test_brier_calibrated": brier_score_loss(y_te, p_cal),
        "test_brier_uncalibrated": brier_score_loss(y_te, p_raw),
        "test_log_loss_calibrated": log_loss(y_te, p_cal),
        "train_rows": int(len(y_tr)),
        "test_rows": int(len(y_te)),
        "smote_rows_added": int(smote_rows),
        "encoded_columns": int(width),
    }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(pre, out / "preprocessor.joblib")
    booster.save_model(str(out / "xgb_model.json"))
    meta = {
        "name": "loan-default-reference",
        "version": "1",
        "spec": spec,
        "inputs": inputs,
        "params": {k: v for k, v in vars(args).items() if k not in ("data", "spec", "out")},
        "calibration": {"a": a, "b": bb},
        "thresholds": th,
        "metrics": metrics,
        "versions": {
            "python": platform.python_version(),
            "xgboost": xgb.__version__,
            "scikit-learn": sklearn.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
        },
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    took = time.perf_counter() - started
    print(
        f"trained in {took:.2f} s: {metrics['train_rows']} rows to train (+{smote_rows} SMOTE-NC), "
        f"{metrics['test_rows']} held out, {width} encoded columns"
    )
    print(
        f"test ROC AUC {metrics['test_roc_auc']:.4f}  PR AUC {metrics['test_pr_auc']:.4f}  KS {metrics['test_ks']:.4f}  "
        f"Brier {metrics['test_brier_calibrated']:.4f} (uncalibrated {metrics['test_brier_uncalibrated']:.4f})  "
        f"log loss {metrics['test_log_loss_calibrated']:.4f}"
    )
    print(f"thresholds: approve < {th['approve']:.4f} <= review < {th['decline']:.4f} <= decline; wrote {out}")


if __name__ == "__main__":
    main()
