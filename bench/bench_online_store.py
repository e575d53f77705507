"""The online token store on Redis against the file store: publish, ingest and fetch at 1M and 10M tokens.

For each size: a file store of ``--per-user`` tokens per user (D=64 fp16, the product default), published to a
real redis-server on 127.0.0.1 (appendfsync always: an acknowledged ingest is on disk). Then, on both backends:

- fetch: 1,024 single-user requests, L=256 each, one at a time (what one /rank does): p50 / p99;
  and one batch of 1,024 requests (what a training batch does; the median of 5);
- ingest: 2,000 single-row ingests (one script each) and pipelined batches of 256 rows: rows/s; the file store's
  single-row append for comparison (``--file-appends`` rows: it checks every id in the store and adds a part each time);
- Redis memory per token (``used_memory`` after publish / tokens).

Run: .venv/bin/python bench/bench_online_store.py [--sizes 1000000 10000000] [--per-user 250] [--file-appends 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from iat.tokens import TokenStore, append_segment, write_store
from iat.tokens.online import RedisTokenStore, publish
from iat.tokens.redis_server import RedisServer

SRC = {"model": "bench", "version": "1", "run_id": "bench", "config_hash": "0"}
D = 64


def _rows(n: int, users: int, rng: np.random.Generator, start_id: int = 0, ts0: int = 0) -> dict:
    return {
        "user_id": rng.integers(0, users, n), "ts": ts0 + rng.integers(0, 10_000_000, n), "instance_id": np.arange(start_id, start_id + n),
        "domain": np.where(rng.random(n) < 0.5, "ads", "mall"), "item_id": rng.integers(0, 100_000, n), "category": rng.integers(0, 20, n),
        "click": rng.integers(0, 2, n), "conversion": None, "conversion_ts": None, "tokens": rng.standard_normal((n, D), np.float32) * 0.3,
    }  # fmt: skip


def _pct(x: list[float]) -> str:
    a = np.asarray(x) * 1000
    return f"{np.percentile(a, 50):.2f} / {np.percentile(a, 99):.2f}"


def run(size: int, per_user: int, work: Path, file_appends: int = 200) -> dict:
    rng = np.random.default_rng(0)
    users = max(1, size // per_user)
    path = work / f"store_{size}"
    t0 = time.perf_counter()
    chunk = 2_000_000
    write_store(path, **_rows(min(size, chunk), users, rng), kind="dense", dtype="fp16", source=SRC)
    for s in range(chunk, size, chunk):
        append_segment(path, **_rows(min(chunk, size - s), users, rng, start_id=s), source=SRC)
    store = TokenStore.open(path).compact() if size > chunk else TokenStore.open(path)
    t_write = time.perf_counter() - t0
    out: dict = {"size": size, "users": users, "write_s": t_write}
    with RedisServer() as server:
        client = server.client()
        base_mem = int(client.info("memory")["used_memory"])
        t0 = time.perf_counter()
        publish(store, client)
        out["publish_s"] = time.perf_counter() - t0
        out["bytes_per_token"] = (int(client.info("memory")["used_memory"]) - base_mem) / store.rows
        online = RedisTokenStore.open(client)
        req_u = rng.integers(0, users, 1024)
        req_t = np.full(1024, 20_000_000)
        for name, backend in (("file", store), ("redis", online)):
            backend.fetch_before(req_u[:8], req_t[:8], 256)  # warm
            lat = []
            for u, t in zip(req_u, req_t):
                s = time.perf_counter()
                backend.fetch_before(np.array([u]), np.array([t]), 256)
                lat.append(time.perf_counter() - s)
            batch = []
            for _ in range(5):  # the median of 5: one batch is a single number on a shared machine
                s = time.perf_counter()
                backend.fetch_before(req_u, req_t, 256)
                batch.append(time.perf_counter() - s)
            out[f"{name}_fetch_one"], out[f"{name}_fetch_1024"] = lat, float(np.median(batch))
        new = _rows(2_000, users, rng, start_id=10**9, ts0=30_000_000)
        s = time.perf_counter()
        for i in range(2_000):
            online.append(**{k: (v[i : i + 1] if v is not None else None) for k, v in new.items()}, source=SRC)
        out["redis_ingest_single"] = 2_000 / (time.perf_counter() - s)
        batch = _rows(25_600, users, rng, start_id=2 * 10**9, ts0=30_000_000)
        s = time.perf_counter()
        for b in range(0, 25_600, 256):
            online.append(**{k: (v[b : b + 256] if v is not None else None) for k, v in batch.items()}, source=SRC)
        out["redis_ingest_batched"] = 25_600 / (time.perf_counter() - s)
    few = _rows(file_appends, users, rng, start_id=3 * 10**9, ts0=30_000_000)
    s = time.perf_counter()
    for i in range(file_appends):
        append_segment(path, **{k: (v[i : i + 1] if v is not None else None) for k, v in few.items()}, source=SRC)
    out["file_ingest_single"] = file_appends / (time.perf_counter() - s)
    shutil.rmtree(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--per-user", type=int, default=250)
    ap.add_argument("--work", default=None, help="folder for the file stores (default: a temporary one)")
    ap.add_argument("--file-appends", type=int, default=200, help="one-row file-store appends timed (each is O(store): 5 s at 10M tokens)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="iat-bench-online-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f}; D={D} fp16, {a.per_user} tokens per user, L=256")
    print("| tokens | users | publish (s) | Redis bytes / token | fetch 1 request p50 / p99 ms: file / Redis | fetch 1,024 requests s: file / Redis | ingest rows/s: Redis single / Redis batched 256 / file single |")
    print("|---:|---:|---:|---:|---|---|---|")
    for size in a.sizes:
        r = run(size, a.per_user, work, a.file_appends)
        print(
            f"| {size:,} | {r['users']:,} | {r['publish_s']:.1f} | {r['bytes_per_token']:.0f} | {_pct(r['file_fetch_one'])} / {_pct(r['redis_fetch_one'])} | "
            f"{r['file_fetch_1024']:.3f} / {r['redis_fetch_1024']:.3f} | {r['redis_ingest_single']:,.0f} / {r['redis_ingest_batched']:,.0f} / {r['file_ingest_single']:,.1f} |",
            flush=True,
        )
    if not a.work:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
