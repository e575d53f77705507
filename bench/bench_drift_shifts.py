"""What the drift verdict says for each kind of injected shift, through a tiny temporal source model.

For each seed: a 90-day log of ``--users`` users, the same log with the world shifted on day 60 (interest /
catalogue / context), a source model trained on days 25..52 of the unshifted log; reference = days 53..59,
current = days 60..66 of each log. Prints one row per (seed, shift).

Run: .venv/bin/python bench/bench_drift_shifts.py [--users 400] [--seeds 1 5 9]
"""

from __future__ import annotations

import argparse

from iatcli.env import setup_environment

setup_environment()

from iat.data.synthetic import generate  # noqa: E402
from iat.data.synthetic_world import SHIFT_KINDS, Shift  # noqa: E402
from iat.drift import DriftConfig  # noqa: E402
from monitoring.demo import day_window, train_tiny_source  # noqa: E402
from monitoring.drift import drift_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 9])
    a = ap.parse_args()
    print("| seed | shift | action | dims drifted | classifier AUC | item / context group drifted | unseen item_id | prediction drift |")
    print("|---:|---|---|---:|---:|---|---:|---:|")
    for seed in a.seeds:
        base, schema = generate(a.users, seed=seed, days=90, progress=False)
        src = train_tiny_source(day_window(base, 25, 53), day_window(base, 53, 60), schema, seed=seed)
        ref = day_window(base, 53, 60)
        ref = ref.assign(prediction=src.predict(ref))
        for kind in ("none", *SHIFT_KINDS):
            log = base if kind == "none" else generate(a.users, seed=seed, days=90, progress=False, shift=Shift(at=60 / 90, kind=kind))[0]
            cur = day_window(log, 60, 67)
            cur = cur.assign(prediction=src.predict(cur))
            v = drift_report(src.tokens(ref), src.tokens(cur), DriftConfig(), ref, cur, schema, detail=False).verdict
            g = v.feature_group_share or {}
            print(
                f"| {seed} | {kind} | {v.action} | {v.dim_drift_share:.0%} | {v.embedding_score:.3f} | "
                f"{g.get('item', 0):.0%} / {g.get('context', 0):.0%} | {(v.unseen_value_share or {}).get('item_id', 0):.0%} | {v.prediction_drift:.3f} |"
            )


if __name__ == "__main__":
    main()
