"""Training throughput with 1 and 2 DDP processes on the same data: samples/s of optimizer steps, and the ratio.

Each measurement is a fresh ``python -m iat.dist_train`` run (through torchrun for N > 1; gloo on CPU; one torch
thread per process) on the same dataset folder and the same global batch. samples/s = all ranks' training samples
over the slowest rank's training seconds, as ``iat.train.fit`` counts them: forward, backward, gradient
all-reduce and Adam; not start-up, data loading or evaluation. A sample is a scored instance (see
bench_source_training.py). The machine may be shared: the load average is printed with the numbers, and a
speed-up needs as many free cores as processes.

Run: .venv/bin/python bench/bench_ddp.py [--users 2000] [--kinds temporal,user_order,ranker] [--processes 1,2]
``measure_training`` is the function other benches call (e.g. on larger logs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from iat.data.io import write_dataset
from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.models.registry import METRICS_FILE
from iat.schema import Schema

RANKER_SPEC = {"name": "base-din", "config": {"seq": "din"}}  # kind "ranker": the base DIN ranker, no tokens


def measure_training(
    data: pd.DataFrame | str | Path,
    processes: int,
    kind: str = "temporal",
    schema: Schema | None = None,
    epochs: int = 1,
    batch_size: int = 1024,
    threads: int = 1,
) -> float:
    """Training samples/s of ``kind`` (a source model kind, or "ranker") with ``processes`` DDP processes.

    ``data``: a dataset folder (whole or chunked, with schema.yaml), or a frame with its ``schema`` (written to a
    temporary folder first). Every process reads the whole log. One epoch by default, no early stop, no bootstrap.
    """
    with tempfile.TemporaryDirectory(prefix="iat-bench-ddp-") as t:
        tmp = Path(t)
        if isinstance(data, pd.DataFrame):
            if schema is None:
                raise ValueError("measure_training: a frame needs its schema")
            data = write_dataset(tmp / "data", data, schema)
        train = {"epochs": epochs, "patience": 0, "batch_size": batch_size, "threads": threads, "progress": False}
        job = ["source", "--kind", kind] if kind != "ranker" else ["downstream", "--spec", json.dumps(RANKER_SPEC)]
        args = [*job, "--data", str(data), "--out", str(tmp / "bundle"), "--train-config", json.dumps(train), "--n-boot", "0"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-m", "iat.dist_train", *args, "--processes", str(processes)], check=True, env=env, stdout=subprocess.DEVNULL)
        return float(json.loads((tmp / "bundle" / METRICS_FILE).read_text())["samples_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000, help="2,000 users is about 200k rows")
    ap.add_argument("--kinds", default="temporal,user_order,ranker")
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--batch-size", type=int, default=1024, help="the global batch (per process: batch_size / processes)")
    ap.add_argument("--epochs", type=int, default=1)
    a = ap.parse_args()

    procs = [int(p) for p in a.processes.split(",")]
    df, schema = generate(a.users, seed=0, progress=False)
    df = add_split(df)
    rows = []
    with tempfile.TemporaryDirectory(prefix="iat-bench-ddp-data-") as t:
        data = write_dataset(Path(t), df, schema)
        for kind in a.kinds.split(","):
            sps = {p: measure_training(data, p, kind, epochs=a.epochs, batch_size=a.batch_size) for p in procs}
            rows.append((kind, sps))
            print(kind, {p: round(v) for p, v in sps.items()}, flush=True)
    print(f"\nusers={a.users:,} rows={len(df):,} (train {int((df['split'] == 'train').sum()):,}); global batch {a.batch_size}; "
          f"{a.epochs} epoch(s); 1 torch thread per process; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| model | " + " | ".join(f"{p} proc samples/s" for p in procs) + " | " + " | ".join(f"{p}/{procs[0]}" for p in procs[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(procs) - 1))
    for kind, sps in rows:
        print(f"| {kind} | " + " | ".join(f"{sps[p]:,.0f}" for p in procs) + " | " + " | ".join(f"{sps[p] / sps[procs[0]]:.2f}x" for p in procs[1:]) + " |")


if __name__ == "__main__":
    main()
