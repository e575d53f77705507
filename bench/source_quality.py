"""Headline figure of issue 3: test AUC / GAUC / LogLoss of the source models on synthetic data, mean and 95%
t-interval over seeds, plus the paired user-order - temporal difference.

Seed s generates the log with ``generate(users, seed=s)`` and trains every model with ``TrainConfig(seed=s)``, so
the spread covers both data and initialisation; the models of one seed share the data, so their differences are
paired. Model selection (early stopping) uses the valid split only; test is scored once at the end.

Run: .venv/bin/python bench/source_quality.py [--users 2000] [--seeds 0,1,2] [--epochs 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.metrics import auc, mean_ci
from iat.models.registry import train_source
from iat.train import TrainConfig

METRICS = ("auc", "gauc", "logloss")
# Learning rates picked on the valid split of seed 0 (2,000 users) from {5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2}.
TUNED_TRAIN: dict[str, dict] = {"temporal": {"lr": 3e-3}, "user_order": {"lr": 2e-3}, "logreg": {"lr": 3e-3}}


def fmt(values: list[float]) -> str:
    m, lo, hi = mean_ci(values)
    return f"{m:.4f} [{lo:.4f}, {hi:.4f}]" if len(values) > 1 else f"{m:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--kinds", default="logreg,temporal,user_order")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the cores this process may use)")
    ap.add_argument("--models", default="{}", help='JSON per-kind model configs, e.g. {"user_order": {"t_src": 64}}')
    ap.add_argument("--train", default=json.dumps(TUNED_TRAIN), help="JSON per-kind TrainConfig overrides (default: the tuned learning rates)")
    ap.add_argument("--out", help="also write every run's metrics as JSON here")
    a = ap.parse_args()
    kinds, seeds, model_cfgs, train_cfgs = a.kinds.split(","), [int(s) for s in a.seeds.split(",")], json.loads(a.models), json.loads(a.train)

    results: dict[str, list[dict]] = {k: [] for k in kinds}
    oracle = []
    for seed in seeds:
        df, schema = generate(a.users, seed=seed, progress=False)
        df = add_split(df)
        test = df[df["split"] == "test"]
        oracle.append(auc(test["click"].to_numpy(), test["p_click"].to_numpy()))
        for kind in kinds:
            t0 = time.perf_counter()
            cfg = TrainConfig(**{"epochs": a.epochs, "batch_size": a.batch_size, "seed": seed, "threads": a.threads, "progress": False, **train_cfgs.get(kind, {})})
            bundle = train_source(df, schema, kind, model_cfgs.get(kind), cfg, n_boot=0)
            r = {**{m: bundle.metrics["test"][m] for m in METRICS}, "best_epoch": bundle.metrics["best_epoch"], "seconds": time.perf_counter() - t0, "seed": seed}
            r["valid_auc"] = bundle.metrics["valid"]["auc"]
            results[kind].append(r)
            print(f"seed {seed} {kind:<10} test auc {r['auc']:.4f} gauc {r['gauc']:.4f} logloss {r['logloss']:.4f} (valid auc {r['valid_auc']:.4f}, best epoch {r['best_epoch']}, {r['seconds']:.0f}s)", flush=True)

    print(f"\nsynthetic, {a.users:,} users, seeds {seeds}; test split; mean [95% t-interval over seeds]\n")
    print("| model | test AUC | test GAUC | test LogLoss |")
    print("|---|---|---|---|")
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(fmt([r[m] for r in results[kind]]) for m in METRICS) + " |")
    print(f"| oracle (true p_click) | {fmt(oracle)} | | |")
    if "temporal" in results and "user_order" in results:
        print("\npaired difference user_order - temporal (same data and seed):\n")
        print("| metric | mean [95% CI] | relative |")
        print("|---|---|---|")
        for m in METRICS:
            d = [u[m] - t[m] for u, t in zip(results["user_order"], results["temporal"])]
            rel = np.mean(d) / np.mean([t[m] for t in results["temporal"]]) * 100
            print(f"| {m} | {fmt(d)} | {rel:+.2f}% |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "oracle_auc": oracle, "runs": results}, f, indent=2)


if __name__ == "__main__":
    main()
