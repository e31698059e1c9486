"""The original stack's scoring service: FastAPI + pydantic + scikit-learn + XGBoost.

    REF_MODEL_DIR=models/reference bench/reference/.venv/bin/uvicorn app:app \
        --app-dir bench/reference --host 127.0.0.1 --port 8100 --workers 2 --no-access-log

POST /v1/predict (and /v1/score, the same handler) takes the body the Rust API's /v1/predict
takes: one JSON object of feature values, named as in the spec (protected attributes may be sent
and are ignored; unknown fields are refused with 422). It answers {"default_probability",
"decision", "model", "request_id"}, without reason codes (the original service had none; compare
with the Rust API's /v1/predict?explain=false). GET /readyz is 200 once the model is loaded (503
before), GET /healthz 200 while the process runs.

Per request it does what such a service does: the body validated by a pydantic model generated
from the spec (types, ranges, categories), one-row pandas DataFrame, ColumnTransformer.transform,
Booster.inplace_predict, Platt calibration and thresholds. REF_ENCODER=numpy swaps the
DataFrame + ColumnTransformer step for a hand-written encoder with the same fitted parameters
(a tuned variant, to see how much of the gap is pandas/scikit-learn per-row overhead).
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal, Optional

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, create_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Model  # noqa: E402

MODEL_DIR = os.environ.get("REF_MODEL_DIR", "models/reference")
# "sklearn" (default): a one-row DataFrame through the fitted ColumnTransformer, as the original
# service did. "numpy": a hand-written encoder with the same fitted parameters (a tuned variant).
ENCODER = os.environ.get("REF_ENCODER", "sklearn")
# One XGBoost thread per worker process: uvicorn runs one worker per core.
NTHREAD = int(os.environ.get("REF_NTHREAD", "1"))

state: dict = {}


def application_model(spec: dict):
    """A pydantic model of one application, from the feature spec (every feature, as the Rust
    API accepts protected ones too; only model inputs are used)."""
    fields = {}
    for f in spec["features"]:
        if f["kind"] == "numeric":
            typ = Annotated[float, Field(ge=f.get("min"), le=f.get("max"), allow_inf_nan=False)]
        elif f["kind"] == "categorical" and f.get("categories"):
            typ = Literal[tuple(f["categories"])]
        elif f["kind"] == "boolean":
            typ = bool
        else:
            typ = str
        if f.get("required", True) and not f.get("protected", False):
            fields[f["name"]] = (typ, ...)
        else:
            fields[f["name"]] = (Optional[typ], None)
    extra = {spec["id_column"]: (Optional[str], None)} if spec.get("id_column") else {}
    return create_model("Application", __config__=ConfigDict(extra="forbid"), **fields, **extra)


# The model is loaded at import time so that the request schema can be built from its spec;
# a worker that fails to load it never starts serving.
model = Model.load(MODEL_DIR, nthread=NTHREAD)
Application = application_model(model.spec)
if ENCODER not in ("sklearn", "numpy"):
    raise SystemExit(f"REF_ENCODER={ENCODER!r}: expected sklearn or numpy")
encode_record = model.record_encoder()


@asynccontextmanager
async def lifespan(_app: FastAPI):
    # Warm-up: one score, so the first request does not pay for lazy initialisation.
    row = {}
    for f in model.spec["features"]:
        if f["kind"] == "numeric":
            row[f["name"]] = float(f.get("min") or 0)
        elif f.get("categories"):
            row[f["name"]] = f["categories"][0]
        else:
            row[f["name"]] = None
    model.score_frame(pd.DataFrame([row]))
    model.check_record_encoder(row)
    state["ready"] = True
    yield
    state.clear()


app = FastAPI(title="loan-default reference (original Python stack)", lifespan=lifespan)


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}


@app.get("/readyz")
async def readyz():
    if state.get("ready"):
        return {"status": "ready", "model": model.meta["name"]}
    return JSONResponse({"status": "loading"}, status_code=503)


async def predict(application: Application, request: Request):  # type: ignore[valid-type]
    if ENCODER == "numpy":
        p = model.calibrate(model.margins(encode_record(application.model_dump())))
        decision = model.decide(p)
    else:
        p, decision = model.score_frame(pd.DataFrame([application.model_dump()]))
    rid = request.headers.get("x-request-id") or str(uuid.uuid4())
    return {
        "default_probability": float(np.asarray(p)[0]),
        "decision": str(decision[0]),
        "model": {"name": model.meta["name"], "version": model.meta["version"]},
        "request_id": rid,
    }


app.post("/v1/predict")(predict)
app.post("/v1/score")(predict)
