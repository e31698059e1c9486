"""Shared by train.py, app.py and batch.py: the feature spec, reading CSVs, the saved model.

The reference mirrors the original Python stack: a scikit-learn ColumnTransformer (median
imputation + StandardScaler on numerics, one-hot on categoricals, protected attributes left out)
in front of an XGBoost booster, with Platt calibration on out-of-fold margins and the same
decision rule as the Rust side (approve below the review threshold, decline at or above the
F1-optimal one).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import xgboost as xgb

TRUE_WORDS = {"true", "yes", "y", "t", "1"}
FALSE_WORDS = {"false", "no", "n", "f", "0"}


def load_spec(path: str | Path) -> dict:
    spec = json.loads(Path(path).read_text())
    if spec.get("format_version") != 1:
        raise SystemExit(f"{path}: spec format_version {spec.get('format_version')} is not 1")
    return spec


def is_model_input(f: dict) -> bool:
    """As the Rust spec: `use_in_model`, else every feature that is not protected."""
    use = f.get("use_in_model")
    return bool(use) if use is not None else not f.get("protected", False)


def model_features(spec: dict) -> list[dict]:
    return [f for f in spec["features"] if is_model_input(f)]


def read_csv(path, spec: dict, **kw) -> pd.DataFrame:
    """Reads a CSV as the Rust side does: only empty cells are missing ("none" is a category)."""
    dtypes = {f["name"]: ("float64" if f["kind"] == "numeric" else "object") for f in spec["features"]}
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=dtypes, **kw)


def booleans_to_float(df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Boolean features as 0/1 floats (NaN when missing or not a boolean word)."""
    for f in model_features(spec):
        if f["kind"] == "boolean" and f["name"] in df:
            s = df[f["name"]].astype("string").str.strip().str.lower()
            df[f["name"]] = np.where(s.isin(TRUE_WORDS), 1.0, np.where(s.isin(FALSE_WORDS), 0.0, np.nan))
    return df


@dataclass
class Model:
    """What model dir holds: preprocessor.joblib, xgb_model.json, meta.json."""

    preprocessor: object
    booster: xgb.Booster
    meta: dict
    spec: dict

    @classmethod
    def load(cls, model_dir: str | Path, nthread: int | None = None) -> "Model":
        d = Path(model_dir)
        meta = json.loads((d / "meta.json").read_text())
        booster = xgb.Booster()
        booster.load_model(str(d / "xgb_model.json"))
        if nthread is not None:
            booster.set_param({"nthread": nthread})
        pre = joblib.load(d / "preprocessor.joblib")
        return cls(pre, booster, meta, meta["spec"])

    @property
    def inputs(self) -> list[str]:
        return [f["name"] for f in model_features(self.spec)]

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        df = booleans_to_float(df, self.spec)
        return np.asarray(self.preprocessor.transform(df[self.inputs]), dtype=np.float32)

    def margins(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.inplace_predict(x, predict_type="margin"), dtype=np.float64)

    def calibrate(self, margin: np.ndarray) -> np.ndarray:
        c = self.meta["calibration"]
        return 1.0 / (1.0 + np.exp(-(c["a"] * margin + c["b"])))

    def decide(self, p: np.ndarray) -> np.ndarray:
        t = self.meta["thresholds"]
        return np.where(p >= t["decline"], "decline", np.where(p >= t["approve"], "review", "approve"))

    def score_frame(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        p = self.calibrate(self.margins(self.encode(df)))
        return p, self.decide(p)

    def record_encoder(self):
        """A hand-written encoder of one record (dict) with the fitted ColumnTransformer's
        parameters: what a tuned Python service would do instead of a one-row DataFrame.
        Produces the same columns as `encode` (checked in `check_record_encoder`)."""
        ct = self.preprocessor
        num, cats, boos = [], [], []
        offset = 0
        for name, trans, cols in ct.transformers_:
            if name == "num":
                imp, sc = trans.named_steps["impute"], trans.named_steps["scale"]
                for i, c in enumerate(cols):
                    num.append((c, offset + i, float(imp.statistics_[i]), float(sc.mean_[i]), float(sc.scale_[i])))
                offset += len(cols)
            elif name == "cat":
                for c, categories in zip(cols, trans.categories_):
                    cats.append((c, {str(v): offset + j for j, v in enumerate(categories)}))
                    offset += len(categories)
            elif name == "bool":
                for i, c in enumerate(cols):
                    boos.append((c, offset + i, float(trans.statistics_[i])))
                offset += len(cols)
        width = offset

        def encode(rec: dict) -> np.ndarray:
            x = np.zeros((1, width), dtype=np.float32)
            row = x[0]
            for c, j, impute, mean, scale in num:
                v = rec.get(c)
                row[j] = ((impute if v is None else float(v)) - mean) / scale
            for c, lookup in cats:
                j = lookup.get(rec.get(c))
                if j is not None:
                    row[j] = 1.0
            for c, j, impute in boos:
                v = rec.get(c)
                row[j] = impute if v is None else float(v)
            return x

        return encode

    def check_record_encoder(self, rec: dict) -> None:
        enc = self.record_encoder()
        a = enc(rec)
        b = self.encode(pd.DataFrame([rec]))
        if not np.allclose(a, b, atol=1e-6):
            raise RuntimeError("the record encoder disagrees with the ColumnTransformer")


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))
