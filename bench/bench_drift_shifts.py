"""What the drift verdict says for each kind of injected shift, through a tiny temporal source model.

For each seed: a 90-day log of ``--users`` users, the same log with the world shifted on day 60 (interest /
catalogue / context), a source model trained on days 25..52 of the unshifted log; reference = days 53..59,
current = days 60..66 of each log, control = days 46..52 (the control pair: control -> reference, the log's own
week-on-week drift, against which the verdict judges the current window). Prints one row per (seed, shift).

Run: .venv/bin/python bench/bench_drift_shifts.py [--users 1500] [--seeds 1 5 9]
"""

from __future__ import annotations

import argparse
import os

from iatcli.env import setup_environment

setup_environment()

from iat.data.synthetic import generate  # noqa: E402
from iat.data.synthetic_world import SHIFT_KINDS, Shift  # noqa: E402
from iat.drift import DriftConfig  # noqa: E402
from monitoring.demo import day_window, train_tiny_source  # noqa: E402
from monitoring.drift import Window, drift_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 5, 9])
    a = ap.parse_args()
    print(f"users {a.users}, seeds {a.seeds}, load average {os.getloadavg()[0]:.1f}")
    print("| seed | shift | action | classifier AUC (control) | dims moved | moved columns | unseen item_id (control) | prediction drift (control) | model AUC change (control) |")
    print("|---:|---|---|---:|---:|---|---:|---:|---:|")
    for seed in a.seeds:
        base, schema = generate(a.users, seed=seed, days=90, progress=False)
        src = train_tiny_source(day_window(base, 25, 53), day_window(base, 53, 60), schema, seed=seed)

        def window(df):
            return Window(src.tokens(df), df.assign(prediction=src.predict(df)))

        ref, ctl = window(day_window(base, 53, 60)), window(day_window(base, 46, 53))
        for kind in ("none", *SHIFT_KINDS):
            log = base if kind == "none" else generate(a.users, seed=seed, days=90, progress=False, shift=Shift(at=60 / 90, kind=kind))[0]
            cur = window(day_window(log, 60, 67))
            v = drift_report(ref.tokens, cur.tokens, DriftConfig(), ref.rows, cur.rows, schema, control=ctl).verdict
            c = v.control
            unseen, unseen_c = ((m.unseen_value_share or {}).get("item_id", 0.0) for m in (v, c))
            print(
                f"| {seed} | {kind} | {v.action} | {v.embedding_score:.3f} ({c.embedding_score:.3f}) | {v.dim_drift_share:.0%} | "
                f"{', '.join(v.moved_columns) or '-'} | {unseen:.0%} ({unseen_c:.0%}) | {v.prediction_drift:.3f} ({c.prediction_drift:.3f}) | "
                f"{v.auc_change:+.4f} ({c.auc_change:+.4f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
