"""How cost grows with the log: per-instance time and peak memory of each streamed stage, at several log sizes.

Run: .venv/bin/python bench/bench_scale.py [--sizes 1,4,16] [--work /tmp/iat_scale_bench] [--train-rows 200000]
(one torch thread per process throughout)

A size is millions of synthetic instances (10,000 users per million; about 100 instances a user). Per size,
each stage runs in its own process, so its peak RSS (``ru_maxrss``) is its own:

- generate: ``generate_chunks`` -> ``write_parts`` (parts of 2,000 users);
- validate: ``quality.parts.validate_parts`` (the GX suites per part, cross-part duplicate ids);
- materialize: ``materialize_parts`` with a temporal source model (1 epoch on the first clean part; training
  is not timed here): each part -> a raw shard store, then the streamed publish to one fp16 store;
- fetch: ``fetch_before(user, ts, L)`` for instances drawn uniformly from the store (their history before them);
  time per request, after a warm-up batch;
- train: ``bench_ddp.measure_training`` (temporal, 1 epoch, global batch 1024, 1 torch thread per process) on
  the first parts of the clean log until they hold ``--train-rows`` instances; the training processes' peak RSS.

Everything is written under ``--work`` and deleted after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench_ddp lives beside this file; iat is installed

USERS_PER_MILLION = 10_000
FETCH_REQUESTS, FETCH_BATCH, FETCH_L = 16_384, 1_024, 256


def _generate(work: Path, users: int) -> tuple[float, float]:
    from iat.data.io import dataset_parts, write_parts
    from iat.data.synthetic import generate_chunks, synthetic_schema

    t0 = time.perf_counter()
    parts = write_parts(work / "raw", generate_chunks(users, seed=0), synthetic_schema())
    return sum(dataset_parts(parts).values()), time.perf_counter() - t0


def _validate(work: Path, users: int) -> tuple[float, float]:
    from quality.parts import validate_parts

    t0 = time.perf_counter()
    res = validate_parts(work / "raw", work / "val")
    seconds = time.perf_counter() - t0
    shutil.rmtree(work / "raw")  # disk: the clean parts replace the raw ones
    return res.n_input, seconds


def _prepare(work: Path, users: int, train_rows: int) -> tuple[float, float]:
    """Untimed in the table: the source bundle for materialize (first clean part) and the training sample."""
    from iat.data.io import dataset_parts, write_dataset
    from iat.data.split import add_split
    from iat.data.synthetic import synthetic_schema
    from iat.models.registry import save_bundle, train_source
    from iat.train import TrainConfig

    t0 = time.perf_counter()
    parts = list(dataset_parts(work / "val" / "clean"))
    schema = synthetic_schema()
    first = add_split(pd.read_parquet(parts[0]))
    bundle = train_source(first, schema, "temporal", None, TrainConfig(epochs=1, threads=1, progress=False), n_boot=0)
    save_bundle(bundle, work / "bundle")
    frames: list[pd.DataFrame] = []
    for part in parts:
        if sum(map(len, frames)) >= train_rows:
            break
        frames.append(pd.read_parquet(part))
    sample = add_split(pd.concat(frames, ignore_index=True))
    write_dataset(work / "train", sample, schema)
    return len(sample), time.perf_counter() - t0


def _materialize(work: Path, users: int) -> tuple[float, float]:
    from iat.models.registry import load_bundle
    from iat.tokens import TokenStore
    from iat.tokens.materialize import materialize_parts

    bundle = load_bundle(work / "bundle")
    t0 = time.perf_counter()
    store = materialize_parts(bundle, work / "val" / "clean", work / "store")
    return TokenStore.open(store).rows, time.perf_counter() - t0


def _fetch(work: Path, users: int) -> tuple[float, float]:
    from iat.tokens import TokenStore

    store = TokenStore.open(work / "store")
    part = store.parts[0]
    rng = np.random.default_rng(0)
    rows = np.sort(rng.integers(0, part.rows, FETCH_REQUESTS + FETCH_BATCH))
    user = part.users[np.searchsorted(part.offsets, rows, side="right") - 1]
    ts = np.asarray(part.cols["ts"][rows])
    order = rng.permutation(len(rows))
    user, ts = user[order], ts[order]
    store.fetch_before(user[:FETCH_BATCH], ts[:FETCH_BATCH], FETCH_L)  # warm-up
    t0 = time.perf_counter()
    for i in range(FETCH_BATCH, len(user), FETCH_BATCH):
        store.fetch_before(user[i : i + FETCH_BATCH], ts[i : i + FETCH_BATCH], FETCH_L)
    return FETCH_REQUESTS, time.perf_counter() - t0


def _train(work: Path, processes: int) -> tuple[float, float]:
    from bench.bench_ddp import measure_training

    t0 = time.perf_counter()
    return measure_training(work / "train", processes, "temporal", threads=1), time.perf_counter() - t0


STAGES = {"generate": _generate, "validate": _validate, "materialize": _materialize, "fetch": _fetch}


def run_stage(name: str, work: Path, users: int, train_rows: int, processes: int) -> dict[str, Any]:
    """In this process: run one stage; its count (or samples/s for train), seconds and peak RSS."""
    from iat.train import set_threads

    set_threads(1)
    if name == "train":
        value, seconds = _train(work, processes)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest training process
    else:
        value, seconds = _prepare(work, users, train_rows) if name == "prepare" else STAGES[name](work, users)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"stage": name, "seconds": seconds, "value": value, "peak_gb": peak / 1e6}


def in_child(name: str, work: Path, users: int, train_rows: int, processes: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--stage", name, "--work", str(work), "--users", str(users), "--train-rows", str(train_rows), "--processes", str(processes)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"  {name}{'' if name != 'train' else f' x{processes}'}: {res['seconds']:.1f} s, {res['value']:,.0f}, peak {res['peak_gb']:.2f} GB", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,4,16", help="millions of instances (10,000 users per million)")
    ap.add_argument("--work", default="/tmp/iat_scale_bench", help="scratch folder, deleted after each size")
    ap.add_argument("--train-rows", type=int, default=200_000, help="training reads the first parts until they hold this many rows")
    ap.add_argument("--processes", default="1,2", help="DDP process counts for the training column")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.stage:
        print(json.dumps(run_stage(a.stage, Path(a.work), a.users, a.train_rows, int(a.processes))))
        return

    procs = [int(p) for p in a.processes.split(",")]
    rows = []
    for size in [float(s) for s in a.sizes.split(",")]:
        users = int(round(size * USERS_PER_MILLION))
        work = Path(a.work) / f"{users}u"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        print(f"{size:g}M instances ({users:,} users), load average {os.getloadavg()[0]:.1f}", flush=True)
        try:
            r = {s: in_child(s, work, users, a.train_rows) for s in ("generate", "validate")}
            r["prepare"] = in_child("prepare", work, users, a.train_rows)
            r.update({s: in_child(s, work, users, a.train_rows) for s in ("materialize", "fetch")})
            r["train"] = {p: in_child("train", work, users, a.train_rows, p) for p in procs}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append((size, users, r))

    print(f"\nsizes {a.sizes}M; 1 torch thread per process; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    head = "| instances | users | generate µs/inst | validate µs/inst | materialize µs/inst | fetch µs/request | peak RSS GB gen / val / mat / fetch / train |"
    print(head + "".join(f" train samples/s {p} proc |" for p in procs))
    print("|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(procs))
    for size, users, r in rows:
        n = r["generate"]["value"]
        us = {s: 1e6 * r[s]["seconds"] / r[s]["value"] for s in ("generate", "validate", "materialize", "fetch")}
        peaks = " / ".join(f"{r[s]['peak_gb']:.2f}" for s in ("generate", "validate", "materialize", "fetch")) + f" / {max(t['peak_gb'] for t in r['train'].values()):.2f}"
        train = "".join(f" {r['train'][p]['value']:,.0f} |" for p in procs)
        print(f"| {n:,} | {users:,} | {us['generate']:.1f} | {us['validate']:.1f} | {us['materialize']:.1f} | {us['fetch']:.0f} | {peaks} |{train}")
    print(f"training read the first parts until they held {a.train_rows:,} rows (one epoch over their train split) at every size")


if __name__ == "__main__":
    main()
