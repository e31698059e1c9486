"""One XGBoost fit on the split `fit_once` dumped (same rows, same encoding), timed.

Usage: python bench/xgb_fit_once.py DUMP_DIR THREADS
Prints one JSON line like `fit_once` does. Settings match `TrainParams::default()`: 200 trees,
depth 4, eta 0.05, lambda 1, min_child_weight 1, gamma 0, 256 bins (255 real + missing).
"""
import json
import sys
import time

import numpy as np
import xgboost as xgb
from sklearn.metrics import roc_auc_score


def main():
    d, threads = sys.argv[1], int(sys.argv[2])
    shape = json.load(open(f"{d}/shape.json"))
    w = shape["width"]
    xtr = np.fromfile(f"{d}/train.f32", dtype="<f4").reshape(-1, w)
    xte = np.fromfile(f"{d}/test.f32", dtype="<f4").reshape(-1, w)
    ytr = np.fromfile(f"{d}/train.y", dtype=np.uint8)
    yte = np.fromfile(f"{d}/test.y", dtype=np.uint8)
    params = dict(
        objective="binary:logistic",
        tree_method="hist",
        max_depth=4,
        eta=0.05,
        max_bin=int(sys.argv[3]) if len(sys.argv) > 3 else 256,
        nthread=threads,
        seed=42,
    )
    started = time.perf_counter()
    dtrain = xgb.DMatrix(xtr, label=ytr, nthread=threads)
    booster = xgb.train(params, dtrain, num_boost_round=200)
    seconds = time.perf_counter() - started
    p = booster.inplace_predict(xte)
    print(json.dumps({
        "engine": f"xgboost {xgb.__version__} hist",
        "rows": int(len(ytr)),
        "columns": w,
        "threads": threads,
        "seconds": seconds,
        "test_roc_auc": float(roc_auc_score(yte, p)),
    }))


if __name__ == "__main__":
    main()
