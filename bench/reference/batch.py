"""Scores a CSV file the way the original stack's Celery batch task did, and prints rows/s.

    bench/reference/.venv/bin/python bench/reference/batch.py --model models/reference \
        --data data/generated/apps_1m.csv [--processes 2] [--chunk-rows 50000] [--json]

The file is split into chunks of --chunk-rows rows (byte ranges at line ends, as the API's upload
split does); a pool of --processes worker processes (Celery's prefork pool, one per core by
default), each with the model loaded before the clock starts, runs the task body on each chunk:
pandas.read_csv, ColumnTransformer.transform, Booster.inplace_predict (one XGBoost thread per
process), Platt calibration and thresholds, and writes a result part (the columns that are not
model inputs, such as the id, then default_probability and decision; the label column is
dropped). The time is from the start of the split to the last part written: no reason codes, so
compare with the Rust side's reasons=none.

Quoted fields with line breaks inside are not supported by the byte-range split (the generated
files have none).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Model, read_csv  # noqa: E402

_model: Model | None = None
_header: bytes = b""
_data: str = ""
_out: str = ""


def _init(model_dir: str, data: str, header: bytes, out: str) -> None:
    global _model, _data, _header, _out
    _model = Model.load(model_dir, nthread=1)
    _data, _header, _out = data, header, out


def _ping(_: int) -> int:
    return os.getpid()


def score_chunk(task: tuple[int, int, int]) -> int:
    """The Celery task body: one chunk of the file in, one result part out."""
    i, start, end = task
    m = _model
    with open(_data, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    df = read_csv(io.BytesIO(_header + raw), m.spec)
    p, decision = m.score_frame(df)
    target = m.spec["target"]["name"]
    keep = [c for c in df.columns if c not in m.inputs and c != target]
    out = df[keep].copy()
    out["default_probability"] = np.round(p, 6)
    out["decision"] = decision
    out.to_csv(os.path.join(_out, f"part-{i:05d}.csv"), index=False)
    return len(df)


def split(path: str, chunk_rows: int) -> tuple[bytes, list[tuple[int, int, int]]]:
    """Byte ranges of chunk_rows lines each, after the header line."""
    size = os.path.getsize(path)
    block = 16 << 20
    newlines: list[np.ndarray] = []
    with open(path, "rb") as f:
        pos = 0
        while True:
            buf = f.read(block)
            if not buf:
                break
            newlines.append(np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10) + pos)
            pos += len(buf)
        f.seek(0)
        header = f.readline()
    ends = np.concatenate(newlines) + 1 if newlines else np.array([], dtype=np.int64)
    if len(ends) == 0 or ends[-1] != size:
        ends = np.append(ends, size)  # last line without a newline
    row_ends = ends[1:]  # after the header
    tasks = []
    start = len(header)
    for i, k in enumerate(range(chunk_rows - 1, len(row_ends) + chunk_rows - 1, chunk_rows)):
        end = int(row_ends[min(k, len(row_ends) - 1)])
        if end > start:
            tasks.append((i, start, end))
        start = end
    return header, tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/reference")
    ap.add_argument("--data", default="data/generated/apps_1m.csv")
    ap.add_argument("--out", default=None, help="folder for the result parts (default: a temporary one, removed)")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="ref-batch-")
    Path(out).mkdir(parents=True, exist_ok=True)
    data = os.path.abspath(args.data)
    with open(data, "rb") as f:
        header = f.readline()
    ctx = mp.get_context("fork")
    with ctx.Pool(args.processes, initializer=_init, initargs=(args.model, data, header, out)) as pool:
        pool.map(_ping, range(args.processes * 4))  # workers up, model loaded
        t0 = time.perf_counter()
        header, tasks = split(data, args.chunk_rows)
        t_split = time.perf_counter() - t0
        rows = sum(pool.imap_unordered(score_chunk, tasks))
        took = time.perf_counter() - t0
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    result = {
        "rows": rows,
        "seconds": took,
        "split_seconds": t_split,
        "rows_per_s": rows / took,
        "processes": args.processes,
        "chunks": len(tasks),
        "peak_rss_mib_main": main_rss,
        "peak_rss_mib_worker": child_rss,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{rows} rows in {took:.2f} s (split {t_split:.2f} s, {len(tasks)} chunks, {args.processes} processes): "
            f"{rows / took:,.0f} rows/s; peak RSS main {main_rss:.0f} MiB, largest worker {child_rss:.0f} MiB"
        )


if __name__ == "__main__":
    main()
