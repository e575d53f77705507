"""``iat tokens inspect``: what a store holds (manifest facts, sizes, per-user history lengths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iat.tokens.store import TokenStore


def inspect_store(path: str | Path, verify: str = "fast") -> dict[str, Any]:
    store = TokenStore.open(path, verify=verify)
    m = store.manifest
    users = np.concatenate([p.users for p in store.parts])
    counts = np.concatenate([np.diff(p.offsets) for p in store.parts])
    _, inv = np.unique(users, return_inverse=True)
    lengths = np.bincount(inv, weights=counts).astype(np.int64) if len(users) else np.zeros(0, np.int64)
    token_bytes = sum(p["files"]["tokens.npy"]["bytes"] for p in m["parts"])
    all_bytes = sum(f["bytes"] for p in m["parts"] + m["label_updates"] for f in p["files"].values())
    q = np.percentile(lengths, [50, 90, 99]) if len(lengths) else [0, 0, 0]
    return {
        "path": str(store.root),
        "version": store.version,
        "source": store.source,
        "kind": store.kind,
        "dtype": store.dtype,
        "dims": list(store.dims),
        "rows": store.rows,
        "domains": store.domains,
        "parts": [{k: p[k] for k in ("name", "role", "rows", "ts_min", "ts_max")} for p in m["parts"]],
        "label_updates": sum(p["rows"] for p in m["label_updates"]),
        "bytes": all_bytes,
        "token_bytes_per_row": token_bytes / max(store.rows, 1),
        "bytes_per_row": all_bytes / max(store.rows, 1),
        "users": int(len(lengths)),
        "length": {
            "min": int(lengths.min()) if len(lengths) else 0,
            "median": float(q[0]),
            "p90": float(q[1]),
            "p99": float(q[2]),
            "max": int(lengths.max(initial=0)),
        },
    }


def format_inspection(info: dict[str, Any]) -> str:
    src = ", ".join(f"{k}={v}" for k, v in info["source"].items())
    ln = info["length"]
    parts = "\n".join(
        f"  {p['role']:8s} {p['name']}  {p['rows']:,} rows, ts {p['ts_min']}..{p['ts_max']}" for p in info["parts"]
    )
    return "\n".join(
        [
            f"token store  {info['path']}  (version {info['version']})",
            f"source       {src}",
            f"tokens       {info['kind']} {info['dtype']} dims={info['dims']}",
            f"rows         {info['rows']:,} over {info['users']:,} users; domains {info['domains']}",
            f"history len  min {ln['min']}  median {ln['median']:g}  p90 {ln['p90']:g}  p99 {ln['p99']:g}  max {ln['max']}",
            f"size         {info['bytes'] / 2**20:.1f} MiB; {info['bytes_per_row']:.1f} B/row "
            f"({info['token_bytes_per_row']:.1f} B token + side info)",
            f"label updates {info['label_updates']:,} rows (folded in by compaction)",
            "parts",
            parts,
        ]
    )
