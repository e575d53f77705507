"""Time to build the token-drift report (Evidently) for windows of 1M dense tokens of D=64 (issue 8).

Each window is cut to ``sample_cap`` rows before any statistic runs (DriftConfig.sample_cap, 20,000 by default);
the table shows what that costs and buys at a few caps.

Run: .venv/bin/python bench/bench_drift.py [--rows 1000000] [--dim 64] [--caps 5000 20000 50000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from iatcli.env import setup_environment

setup_environment()

from iat.drift import DriftConfig, domain_classifier_auc, sample_rows  # noqa: E402
from monitoring.drift import token_drift_snapshot, verdict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000, help="tokens per window (reference and current)")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--caps", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    a = ap.parse_args()

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    ref = np.tanh(rng.normal(0, 0.6, (a.rows, a.dim))).astype(np.float32)
    cur = np.tanh(rng.normal(0, 0.6, (a.rows, a.dim)) + np.r_[np.full(a.dim // 4, 0.15), np.zeros(a.dim - a.dim // 4)]).astype(np.float32)
    print(f"windows: 2 x {a.rows:,} tokens of D={a.dim} (a quarter of the dims shifted); made in {time.perf_counter() - t0:.1f}s")
    print("| sample cap | sample (s) | report, detail (s) | report, summary only (s) | HTML (s) | HTML MB | classifier AUC alone (s) | dims drifted | AUC |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cap in a.caps:
        cfg = DriftConfig(sample_cap=cap)
        t0 = time.perf_counter()
        r, c = ref[sample_rows(len(ref), cap, 0)], cur[sample_rows(len(cur), cap, 1)]
        t_sample = time.perf_counter() - t0
        t0 = time.perf_counter()
        snap = token_drift_snapshot(ref, cur, cfg)  # includes its own sampling
        t_full = time.perf_counter() - t0
        t0 = time.perf_counter()
        token_drift_snapshot(ref, cur, cfg, detail=False)
        t_summary = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            snap.save_html(str(Path(d) / "r.html"))
            t_html = time.perf_counter() - t0
            size = (Path(d) / "r.html").stat().st_size / 1e6
        t0 = time.perf_counter()
        domain_classifier_auc(r, c)
        t_auc = time.perf_counter() - t0
        v = verdict(snap, None, cfg)
        print(f"| {cap:,} | {t_sample:.2f} | {t_full:.1f} | {t_summary:.1f} | {t_html:.1f} | {size:.1f} | {t_auc:.1f} | {v.dim_drift_share:.0%} | {v.embedding_score:.3f} |")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
