"""What each planted effect of the synthetic world (v2) is worth, and what the context of past impressions wins.

    .venv/bin/python bench/synthetic_effects.py --users 2000 --seeds 0,1,2

Prints, per planted term of the true click logit, the oracle test AUC with that term dropped (mean over seeds),
and LightGBM's test AUC on the log's own features vs the same plus hand-made strict-past context aggregates
(``iat.data.synthetic_effects``): the margin a model reading past impressions' context can win.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from iat.data.split import add_split  # noqa: E402
from iat.data.synthetic import generate  # noqa: E402
from iat.data.synthetic_effects import effect_worth, resolving_power  # noqa: E402
from iat.metrics import mean_ci  # noqa: E402

HIGH_CARDINALITY = ("user_id", "item_id", "seller_id")  # given to the tree as numbers: categorical splits overfit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    worth, power, oracle = [], [], []
    for seed in seeds:
        df, schema = generate(args.users, seed=seed, progress=False, terms=True)
        df = add_split(df)
        w = effect_worth(df)
        oracle.append(w.attrs["oracle"])
        worth.append(w.assign(seed=seed))
        cats = [c for c in schema.categorical if c not in HIGH_CARDINALITY]
        feats = schema.feature_names
        for name, r in resolving_power(df, feats, cats, seed).items():
            power.append({"seed": seed, "features": name, "test_auc": r["test"]})
    w = pd.concat(worth).groupby(["effect", "revealed_by"], as_index=False)[["oracle_without", "worth"]].mean()
    print(f"synthetic v2, {args.users} users, seeds {seeds}; load average {os.getloadavg()[0]:.1f}")
    m, lo, hi = mean_ci(oracle)
    print(f"\noracle test AUC: {m:.4f} [{lo:.4f}, {hi:.4f}]\n")
    print("| planted effect | revealed by | oracle AUC without it | worth |\n|---|---|---:|---:|")
    for _, r in w.sort_values("worth", ascending=False).iterrows():
        print(f"| {r['effect']} | {r['revealed_by']} | {r['oracle_without']:.4f} | {r['worth']:+.4f} |")
    p = pd.DataFrame(power).pivot(index="seed", columns="features", values="test_auc")
    print("\n| LightGBM on | test AUC [95% CI over seeds] |\n|---|---:|")
    for col in p.columns:
        m, lo, hi = mean_ci(p[col].to_numpy())
        print(f"| {col} | {m:.4f} [{lo:.4f}, {hi:.4f}] |")
    d = p["log features + context aggregates"].to_numpy() - p["log features"].to_numpy()
    m, lo, hi = mean_ci(d)
    print(f"\npaired margin of the context aggregates: {m:+.4f} [{lo:+.4f}, {hi:+.4f}] AUC (per seed {np.round(d, 4).tolist()})")


if __name__ == "__main__":
    main()
