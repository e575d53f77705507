"""Source-model training throughput: samples/s of optimizer steps (forward + backward + Adam) per source model.

A sample is one scored instance (a row for the row models; a scored window position for the user-order model,
whose context rows are encoded too but not counted). Timed over ``--steps`` steps after 3 warm-up steps, on the
first batches of a training epoch. The machine may be shared: the load average is printed with the numbers.

Run: .venv/bin/python bench/bench_source_training.py [--users 2000] [--batch-size 1024] [--threads 2] [--steps 30]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import torch

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.features import FeatureEncoder
from iat.models.registry import SOURCE_KINDS, build_source_model, make_batches
from iat.train import batch_samples, set_threads, train_step

WARMUP = 3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000, help="2,000 users is about 200k rows")
    ap.add_argument("--batch-size", type=int, default=1024, help="rows per batch (user-order: scored positions per batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--kinds", default=",".join(SOURCE_KINDS))
    a = ap.parse_args()

    threads = set_threads(a.threads)
    df, schema = generate(a.users, seed=0, progress=False)
    df = add_split(df)
    split = df["split"].to_numpy()
    enc = FeatureEncoder.fit(df[split == "train"], schema)
    frame = enc.transform(df)
    rows = []
    for kind in a.kinds.split(","):
        model = build_source_model(kind, enc, seed=0).train()
        batches = make_batches(model, frame, split, "train", a.batch_size, train=True)
        it = batches.batches(0)
        todo = list(itertools.islice(it, WARMUP + a.steps))  # built before timing: the clock covers training only
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for b in todo[:WARMUP]:
            train_step(model, opt, b, 1.0)
        t0 = time.perf_counter()
        n = 0
        for b in todo[WARMUP:]:
            train_step(model, opt, b, 1.0)
            n += batch_samples(b)
        dt = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        rows.append((kind, params, n, n / dt))
        print(f"{kind}: {n:,} samples in {dt:.1f}s", flush=True)
    print(f"\nusers={a.users:,} rows={len(df):,}; batch size {a.batch_size}; torch threads {threads}; load average {os.getloadavg()[0]:.1f}")
    print("| source model | parameters | samples timed | training samples/s |")
    print("|---|---:|---:|---:|")
    for kind, params, n, sps in rows:
        print(f"| {kind} | {params:,} | {n:,} | {sps:,.0f} |")


if __name__ == "__main__":
    main()
