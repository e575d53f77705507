"""Materialization throughput per source model: rows/s to encode every instance and publish the token store.

Run: .venv/bin/python bench/bench_materialize.py [--users 2000] [--threads 1]
Source models are trained for one epoch first (their quality does not change the encode cost).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.models.registry import train_source
from iat.tokens.materialize import encode_instances, materialize
from iat.train import TrainConfig, set_threads

CASES = [("temporal", False, "fp16"), ("user_order", False, "fp16"), ("user_order", True, "fp16"), ("hgaq", False, "uint8"), ("temporal", False, "int8")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    set_threads(a.threads)
    df, schema = generate(a.users, seed=0, progress=False)
    df = add_split(df)
    bundles = {}
    for kind in sorted({c[0] for c in CASES}):
        bundles[kind] = train_source(df, schema, kind, None, TrainConfig(epochs=1, threads=a.threads, progress=False), n_boot=0)
    print(f"rows={len(df):,} users={a.users:,} threads={a.threads}")
    print("| source model | tokens | dtype | encode rows/s | encode + publish rows/s |")
    print("|---|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, post, dtype in CASES:
            b = bundles[kind]
            t0 = time.perf_counter()
            encode_instances(b, df, post_sit=post, progress=False)
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            materialize(b, df, Path(tmp) / f"{kind}-{post}-{dtype}", dtype=dtype, post_sit=post, progress=False)
            t_all = time.perf_counter() - t0
            label = "post-SIT" if post else ("codes T x M" if kind == "hgaq" else "pre-SIT" if kind == "user_order" else "InsEmb")
            print(f"| {kind} | {label} | {dtype} | {len(df) / t_enc:,.0f} | {len(df) / t_all:,.0f} |")


if __name__ == "__main__":
    main()
