"""A served rank of 100 candidates x L=256 in-process, over the file store and over the Redis online store.

The set-up of bench/bench_service.py (cached in ``--work``: a synthetic log, a temporal source, its token store and
an L=256 ranker as a serving package). Two ``ServingCore`` objects on the same package: one over a copy of the
package's store, one over a redis-server on 127.0.0.1 seeded from it; the same requests, alternating in blocks
of 10 so both see the same machine load. Prints p50 / p99 of each and their ratio, and the load average.

Run: .venv/bin/python bench/bench_online_rank.py [--work data/bench_service] [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iatcli.env import setup_environment  # noqa: E402

setup_environment()

from bench.bench_service import build, make_requests  # noqa: E402
from iat.serving_core import ServingCore  # noqa: E402
from iat.tokens.redis_server import RedisServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(REPO / "data" / "bench_service"))
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--requests", type=int, default=300)
    a = ap.parse_args()
    import torch

    pkg, df = build(Path(a.work), a.users, 0, a.L, "din", 3000)
    requests = make_requests(df, pkg, a.L, a.candidates, 64, 0)
    torch.set_num_threads(1)
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        cores = {"file": ServingCore.load(pkg, store=Path(tmp) / "live"), "redis": ServingCore.load(pkg, online=server.url)}
        lat: dict[str, list[float]] = {k: [] for k in cores}
        for i in range(0, a.requests, 10):
            for name, core in cores.items():
                for j in range(i, i + 10):
                    q = requests[j % len(requests)]
                    t = time.perf_counter()
                    s = core.rank(q["user_id"], q["ts"], q["context"], q["candidates"], q["domain"])
                    lat[name].append(time.perf_counter() - t)
                    assert s.tokens[0] == a.L
    p = {k: (np.percentile(v[10:], 50) * 1000, np.percentile(v[10:], 99) * 1000) for k, v in lat.items()}
    print(f"load average {os.getloadavg()[0]:.1f}; {a.requests} ranks of {a.candidates} candidates x L={a.L}, one torch thread")
    print("| store | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for k, (p50, p99) in p.items():
        print(f"| {k} | {p50:.1f} | {p99:.1f} |")
    print(f"Redis / file: p50 {p['redis'][0] / p['file'][0]:.2f}x, p99 {p['redis'][1] / p['file'][1]:.2f}x")


if __name__ == "__main__":
    main()
