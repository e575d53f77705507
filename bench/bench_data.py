"""Generation and validation throughput at about 1M rows (issue 2).

Run: .venv/bin/python bench/bench_data.py [--users 10000]
"""

from __future__ import annotations

import argparse
import resource
import time

from iatcli.env import setup_environment

setup_environment()

from iat.data.synthetic import generate  # noqa: E402
from quality import validate_log  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000, help="10,000 users is about 1M rows")
    a = ap.parse_args()

    t0 = time.perf_counter()
    df, schema = generate(a.users, seed=0, progress=False)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = validate_log(df, schema)
    t_val = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    n = len(df)
    print(f"rows={n:,} users={a.users:,} fields={len(schema.features)}")
    print("| stage | seconds | rows/s |")
    print("|---|---:|---:|")
    print(f"| generate (synthetic) | {t_gen:.2f} | {n / t_gen:,.0f} |")
    print(f"| validate (GX suite + quarantine) | {t_val:.2f} | {n / t_val:,.0f} |")
    print(f"peak RSS {peak_gb:.2f} GB; clean={len(res.clean):,} quarantined={len(res.quarantine):,}")


if __name__ == "__main__":
    main()
