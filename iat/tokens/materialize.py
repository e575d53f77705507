"""Materialization: a trained source model maps every instance (all splits) to its token, into a token store.

Sharded by a stable hash of the user id (``shards``, ``shard``) so shards run as parallel steps; a shard
writes an fp32 / uint8 store of its users and ``publish_shards`` merges the K shard stores into one store of
the requested dtype. Merging raw values and encoding once (never re-encoding fp16 / int8) makes the
published store equal, byte for byte, to the one an unsharded run writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from iat.models.registry import SourceBundle, make_batches
from iat.tokens.rows import NEVER
from iat.tokens.store import TokenStore
from iat.tokens.writer import write_store

TOKEN_SIDE_COLUMNS = ("user_id", "ts", "instance_id", "domain", "item_id", "category", "click", "conversion", "conversion_ts")


def user_shard(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """Stable shard of each user (splitmix64 finaliser of the id, mod ``shards``): same on every machine."""
    x = np.asarray(user_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(shards)).astype(np.int64)


def token_kind(bundle: SourceBundle) -> str:
    return "codes" if bundle.kind == "hgaq" else "dense"


def source_identity(bundle: SourceBundle, run_id: str = "", post_sit: bool = False) -> dict[str, str]:
    """What a store records about the model that made its tokens (checked by ``TokenStore.open``)."""
    name = f"iat-source-{bundle.kind}" + ("-post-sit" if post_sit else "")
    return {"model": name, "version": str(bundle.config["version"]), "run_id": run_id, "config_hash": str(bundle.config["config_hash"])}


@torch.no_grad()
def encode_instances(
    bundle: SourceBundle, df: pd.DataFrame, post_sit: bool = False, batch_size: int = 4096, progress: bool = True
) -> np.ndarray:
    """Tokens of ``df``'s rows, in ``df``'s row order: float32 [N, D] or uint8 codes [N, T, M]."""
    if post_sit and bundle.kind != "user_order":
        raise ValueError(f"post-SIT tokens exist only for the user_order source model, not '{bundle.kind}'")
    model = bundle.model.eval()
    frame = bundle.encoder.transform(df)
    batches = make_batches(model, frame, np.full(len(frame), "all"), "all", batch_size)
    toks, ids = [], []
    for b in tqdm(batches.batches(0), total=len(batches), desc=f"materialize {bundle.kind}", unit="batch", disable=not progress):
        out = model.encode(b, post_sit=True) if post_sit else model.encode(b)
        toks.append(out.numpy())
        ids.append((b["instance_id"][b["mask"]] if "mask" in b else b["instance_id"]).numpy())
    tokens, iid = np.concatenate(toks), np.concatenate(ids)
    where = np.argsort(iid)
    pos = where[np.searchsorted(iid, df["instance_id"].to_numpy(), sorter=where)]
    if not np.array_equal(iid[pos], df["instance_id"].to_numpy()):
        raise RuntimeError("materialization lost instances: some rows got no token")
    out = tokens[pos]
    return out.astype(np.float32) if out.dtype.kind == "f" else out.astype(np.uint8)


def _side_info(df: pd.DataFrame, category_column: str | None) -> dict[str, Any]:
    side = {c: df[c] for c in TOKEN_SIDE_COLUMNS if c != "category" and c in df.columns}
    side.setdefault("conversion", None)
    side.setdefault("conversion_ts", None)
    side["category"] = df[category_column] if category_column else None
    return side


def materialize(
    bundle: SourceBundle,
    df: pd.DataFrame,
    out: str | Path,
    *,
    dtype: str | None = None,
    post_sit: bool = False,
    shards: int = 1,
    shard: int | None = None,
    run_id: str = "",
    batch_size: int = 4096,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Encode every instance of ``df`` and write the token store at ``out``.

    With ``shard`` given, only that shard's users are encoded, into ``shard_path(out, shard, shards)`` as raw
    (fp32 / uint8) tokens; ``publish_shards`` then writes ``out``. Default dtype: fp16 (dense) / uint8 (codes).
    """
    if shards < 1 or (shard is not None and not 0 <= shard < shards):
        raise ValueError(f"shard must lie in [0, {shards}), got {shard}")
    kind = token_kind(bundle)
    raw_dtype = "uint8" if kind == "codes" else "fp32"
    dtype = dtype or ("uint8" if kind == "codes" else "fp16")
    rows = df if shard is None else df[user_shard(df["user_id"].to_numpy(), shards) == shard]
    tokens = encode_instances(bundle, rows, post_sit, batch_size, progress)
    target = Path(out) if shard is None else shard_path(out, shard, shards)
    return write_store(
        target,
        **_side_info(rows, bundle.encoder.schema.category_column),
        tokens=tokens,
        kind=kind,
        dtype=dtype if shard is None else raw_dtype,
        source=source_identity(bundle, run_id, post_sit),
        overwrite=overwrite,
    )


def shard_path(out: str | Path, shard: int, shards: int) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.shards" / f"shard-{shard:04d}-of-{shards:04d}"


def publish_shards(out: str | Path, shards: int, dtype: str | None = None, overwrite: bool = False) -> Path:
    """Merge the K shard stores of ``out`` into one store at ``out`` (refuses if a shard is missing or foreign)."""
    stores = [TokenStore.open(shard_path(out, i, shards)) for i in range(shards)]
    sources = {tuple(sorted(s.source.items())) for s in stores}
    if len(sources) != 1:
        raise ValueError(f"shards of {out} come from different source models: {sorted(sources)}")
    rows = [s.all_rows() for s in stores]
    cols = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    domains = [np.asarray(s.domains, dtype=object)[r["domain"]] for s, r in zip(stores, rows)]
    kind = stores[0].kind
    conv = cols["conversion"].astype(np.float64)
    conv[conv < 0] = np.nan  # stored "none" back to null
    return write_store(
        out,
        user_id=cols["user_id"],
        ts=cols["ts"],
        instance_id=cols["instance_id"],
        domain=np.concatenate(domains),
        item_id=cols["item_id"],
        category=cols["category"],
        click=cols["click"],
        conversion=conv,
        conversion_ts=pd.array(np.where(cols["conversion_ts"] == NEVER, None, cols["conversion_ts"]), dtype="Int64"),
        tokens=cols["tokens"],
        kind=kind,
        dtype=dtype or ("uint8" if kind == "codes" else "fp16"),
        source=dict(next(iter(sources))),
        overwrite=overwrite,
    )
