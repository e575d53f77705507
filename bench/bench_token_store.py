"""Token store benchmark: write rows/s, fetch throughput against numpy copies of the same bytes, bytes per instance.

    python bench/bench_token_store.py [--rows 1000000] [--batch 4096] [--L 256] [--repeats 5]

Fetch: ``--batch`` requests x ``--L`` slots over a store of ``--rows`` tokens (D=64 dense in fp32 / fp16 / int8,
HGAQ codes T=8 x M=3). Requests come from users in proportion to their activity, at a random time inside
the user's span, so histories are a realistic mix of full and partly padded. GB/s counts the bytes fetch
returns (tokens decoded to float32, or uint8 codes, plus mask and side info; "undecoded" rows return the
stored fp16 / int8 values for decoding on the device). In the same run, two plain
numpy copies of exactly that many bytes give the ceiling: a row gather (np.take of the same number of rows of
the same width from an in-memory array) and a contiguous memcpy. Ratios are fetch GB/s / ceiling GB/s.
Decode: for fp16 and int8, numpy's conversion of the fetched values to float32 against the one fetch uses
(``iat.tokens.codecs.decode``: torch for fp16, numpy's for int8), and each as a share of fetch + decode.
Bytes per instance compare the store with the raw feature row of the synthetic log it replaces.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iat.data.synthetic import generate
from iat.tokens import TokenStore, append_segment, inspect_store, write_store
from iat.tokens.codecs import decode

SRC = {"model": "bench", "version": "0", "run_id": "bench", "config_hash": "0"}
D, T, M = 64, 8, 3
CONFIGS = [("dense", "fp32"), ("dense", "fp16"), ("dense", "int8"), ("codes", "uint8")]


def timed(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time of each function after a warm-up, measured in interleaved rounds.

    The machine may be shared: interleaving lets load changes hit the fetch and its numpy ceilings alike,
    so their ratio is steadier than either number.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def make_log(rows: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    users = max(rows // 250, 1)
    activity = rng.lognormal(0, 1, users)  # heavy-tailed history lengths, mean ~250
    user = rng.choice(users, rows, p=activity / activity.sum())
    ts = rng.integers(0, 60 * 86_400, rows)
    click = (rng.random(rows) < 0.1).astype(np.int8)
    conv = np.where(click == 1, (rng.random(rows) < 0.2).astype(np.float64), np.nan)
    return {
        "user_id": user.astype(np.int64),
        "ts": ts,
        "instance_id": rng.permutation(rows),
        "domain": rng.choice(np.array(["ads", "mall", "live"]), rows),
        "item_id": rng.integers(0, 10**7, rows),
        "category": rng.integers(0, 500, rows),
        "click": click,
        "conversion": conv,
        "conversion_ts": np.where(np.isnan(conv), np.nan, ts + 3600.0),
    }


def requests(log: dict[str, Any], batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(log["ts"]), batch)  # a random row -> its user, weighted by activity
    users = log["user_id"][pick]
    return users, log["ts"][pick] + rng.integers(0, 86_400, batch)


def out_bytes(res: Any) -> int:
    fields = ("tokens", "mask", "ts", "time_gap", "instance_id", "domain", "item_id", "category", "click", "conversion")
    return sum(getattr(res, f).nbytes for f in fields)


def copy_baselines(nbytes: int, slots: int, rows: int) -> dict[str, Callable[[], Any]]:
    """Plain numpy moves of ``nbytes`` (as ``slots`` rows of equal width): a row gather and a memcpy."""
    width = max(nbytes // slots, 1)
    rng = np.random.default_rng(2)
    src = rng.integers(0, 255, (max(rows, slots), width), dtype=np.uint8)
    idx = rng.integers(0, rows, slots)
    flat, dst = src.reshape(-1)[: slots * width], np.empty(slots * width, np.uint8)
    return {"gather": lambda: np.take(src, idx, axis=0), "memcpy": lambda: np.copyto(dst, flat)}


def measure(name: str, parts: int, fetch: Callable[[], Any], slots: int, rows: int, repeats: int) -> tuple:
    res = fetch()
    nbytes = out_bytes(res)
    t = timed({"fetch": fetch, **copy_baselines(nbytes, slots, rows)}, repeats)
    gb = nbytes / 1e9
    return name, parts, t["fetch"], float(res.mask.mean()), gb / t["fetch"], gb / t["gather"], gb / t["memcpy"]


def raw_row_bytes(users: int) -> tuple[float, float, int]:
    """Bytes per row of the synthetic log's features: in memory (numpy) and as the parquet log on disk."""
    df, schema = generate(users=users, seed=0, progress=False)
    feats = df[schema.feature_names]
    buf = io.BytesIO()
    df.drop(columns=["p_click", "p_conversion"]).to_parquet(buf, index=False)
    return float(feats.memory_usage(index=False).sum() / len(df)), buf.tell() / len(df), len(schema.feature_names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--segments", type=int, default=3, help="appended segments for the merge-path row")
    ap.add_argument("--raw-users", type=int, default=2000, help="synthetic users for the raw-row size")
    args = ap.parse_args()

    log = make_log(args.rows)
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(args.rows, D)).astype(np.float32)
    codes = rng.integers(0, 256, (args.rows, T, M), dtype=np.uint8)
    req_u, req_t = requests(log, args.batch)
    slots = args.batch * args.L
    m_args = (slots, args.rows, args.repeats)
    root = Path(tempfile.mkdtemp(prefix="bench_tokens_"))
    fetch_rows, size_rows, decode_rows = [], [], []
    try:
        for kind, dtype in CONFIGS:
            tokens = dense if kind == "dense" else codes
            path = root / dtype
            t0 = time.perf_counter()
            write_store(path, **log, tokens=tokens, kind=kind, dtype=dtype, source=SRC)
            write_s = time.perf_counter() - t0
            store = TokenStore.open(path)
            fetch_rows.append(measure(f"{kind} {dtype}", 1, lambda: store.fetch_before(req_u, req_t, args.L), *m_args))
            if dtype in ("fp16", "int8"):  # stored values out, for decoding on the device
                raw = lambda: store.fetch_before(req_u, req_t, args.L, decode_tokens=False)  # noqa: E731
                fetch_rows.append(measure(f"{kind} {dtype} undecoded", 1, raw, *m_args))
                stored = raw().tokens
                numpy_decode = (lambda: stored.astype(np.float32)) if dtype == "fp16" else (lambda: np.multiply(stored, store.scale, dtype=np.float32))
                assert np.array_equal(numpy_decode(), decode(stored, dtype, store.scale))  # the same values, bit for bit
                t = timed({"fetch": raw, "numpy": numpy_decode, "torch": lambda: decode(stored, dtype, store.scale)}, args.repeats)
                decode_rows.append((dtype, t["fetch"], t["numpy"], t["torch"]))
            info = inspect_store(path)
            size_rows.append((f"{kind} {dtype}", info["token_bytes_per_row"], info["bytes_per_row"], args.rows / write_s))
            if dtype == "fp32":  # the merge path: the same rows as a base plus appended segments
                # online shape: the base holds the oldest 70% of the time range, each segment a later slice
                seg_path = root / "fp32_segments"
                cuts = np.quantile(log["ts"], np.linspace(0.7, 1, args.segments + 1)[:-1])
                part = np.searchsorted(cuts, log["ts"], side="right")
                for s in range(args.segments + 1):
                    rows = {k: v[part == s] for k, v in log.items()}
                    if s == 0:
                        write_store(seg_path, **rows, tokens=dense[part == s], kind=kind, dtype=dtype, source=SRC)
                    else:
                        append_segment(seg_path, **rows, tokens=dense[part == s], source=SRC)
                seg_store = TokenStore.open(seg_path)
                seg_fetch = lambda: seg_store.fetch_before(req_u, req_t, args.L)  # noqa: E731
                fetch_rows.append(measure(f"{kind} {dtype}", args.segments + 1, seg_fetch, *m_args))
                shutil.rmtree(seg_path)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"## Fetch: {args.batch} requests x L={args.L} over {args.rows:,} tokens (median of {args.repeats})\n")
    print("| tokens | parts | ms / batch | slots/s | real rows/s | fill | GB/s out | numpy gather GB/s | memcpy GB/s "
          "| vs gather | vs memcpy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, parts, t, fill, gbs, g_gather, g_copy in fetch_rows:
        print(f"| {name} | {parts} | {t * 1e3:.0f} | {slots / t / 1e6:.2f}M | {slots * fill / t / 1e6:.2f}M | {fill:.2f} "
              f"| {gbs:.2f} | {g_gather:.2f} | {g_copy:.2f} | {gbs / g_gather:.2f} | {gbs / g_copy:.2f} |")

    print(f"\n## Decode of the fetched tokens to float32 ({slots:,} slots x D={D}): numpy's conversion vs fetch's (decode)\n")
    print("| stored | fetch undecoded ms | numpy decode ms | decode() ms | numpy / decode() | decode share of fetch: numpy | decode() |")
    print("|---|---|---|---|---|---|---|")
    for dtype, f, n, tt in decode_rows:
        print(f"| {dtype} | {f * 1e3:.0f} | {n * 1e3:.0f} | {tt * 1e3:.0f} | {n / tt:.2f}x | {n / (f + n):.0%} | {tt / (f + tt):.0%} |")

    raw_mem, raw_parquet, n_feats = raw_row_bytes(args.raw_users)
    print(f"\n## Bytes per instance (raw feature row: synthetic log, {n_feats} feature fields)\n")
    print("| storage | token B | token + side info B | write rows/s | raw row in memory / token+side | "
          "raw row parquet / token+side |")
    print("|---|---|---|---|---|---|")
    for name, tok_b, all_b, wps in size_rows:
        print(f"| {name} | {tok_b:.1f} | {all_b:.1f} | {wps / 1e6:.2f}M | {raw_mem / all_b:.2f}x | {raw_parquet / all_b:.2f}x |")
    print(f"| raw feature row (numpy) | - | {raw_mem:.1f} | - | 1.00x | - |")
    print(f"| raw log row (parquet, snappy, all columns) | - | {raw_parquet:.1f} | - | - | 1.00x |")


if __name__ == "__main__":
    main()
