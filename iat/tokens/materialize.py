"""Materialization: a trained source model maps every instance (all splits) to its token, into a token store.

Sharded by a stable hash of the user id (``shards``, ``shard``) so shards run as parallel steps; a shard
writes an fp32 / uint8 store of its users and ``publish_shards`` merges the K shard stores into one store of
the requested dtype. Merging raw values and encoding once (never re-encoding fp16 / int8) makes the
published store equal, byte for byte, to the one an unsharded run writes. A chunked dataset is materialized
part by part (``materialize_parts``): each part holds whole users, so it is a shard.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from iat.data.io import check_part_rows, dataset_parts
from iat.model_names import POST_SIT_SUFFIX, source_model_name
from iat.models.registry import SourceBundle, make_batches
from iat.tokens.merge import merge_stores
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


def default_dtype(kind: str) -> str:
    return "uint8" if kind == "codes" else "fp16"


def raw_dtype(kind: str) -> str:
    """How a shard stores tokens: unrounded, so the publish step encodes them once."""
    return "uint8" if kind == "codes" else "fp32"


def source_identity(bundle: SourceBundle, run_id: str = "", post_sit: bool = False) -> dict[str, str]:
    """What a store records about the model that made its tokens (checked by ``TokenStore.open``)."""
    name = source_model_name(bundle.encoder.schema.name, bundle.kind) + (POST_SIT_SUFFIX if post_sit else "")
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
    dtype = dtype or default_dtype(kind)
    rows = df if shard is None else df[user_shard(df["user_id"].to_numpy(), shards) == shard]
    tokens = encode_instances(bundle, rows, post_sit, batch_size, progress)
    target = Path(out) if shard is None else shard_path(out, shard, shards)
    return write_store(
        target,
        **_side_info(rows, bundle.encoder.schema.category_column),
        tokens=tokens,
        kind=kind,
        dtype=dtype if shard is None else raw_dtype(kind),
        source=source_identity(bundle, run_id, post_sit),
        overwrite=overwrite,
    )


def shard_path(out: str | Path, shard: int, shards: int) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.shards" / f"shard-{shard:04d}-of-{shards:04d}"


def publish_shards(out: str | Path, shards: int, dtype: str | None = None, overwrite: bool = False, progress: bool = False) -> Path:
    """Merge the K shard stores of ``out`` into one store at ``out`` (refuses if a shard is missing or foreign);
    streamed (``iat.tokens.merge``): memory holds one block of users, not the store."""
    stores = [TokenStore.open(shard_path(out, i, shards)) for i in range(shards)]
    sources = {tuple(sorted(s.source.items())) for s in stores}
    if len(sources) != 1:
        raise ValueError(f"shards of {out} come from different source models: {sorted(sources)}")
    return merge_stores(stores, out, dtype or default_dtype(stores[0].kind), overwrite=overwrite, progress=progress)


def materialize_parts(
    bundle: SourceBundle,
    data_dir: str | Path,
    out: str | Path,
    *,
    dtype: str | None = None,
    post_sit: bool = False,
    run_id: str = "",
    batch_size: int = 4096,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Materialize a chunked dataset (``iat.data.io.write_parts``) streamed: part k -> shard store k -> publish.

    Parts hold whole users, so each part is a shard (the user-order model reads a user's whole log). Peak
    memory: one part's rows and tokens plus the model, then one publish block; the shards are removed
    after publishing. Equal, byte for byte, to ``materialize`` on the concatenated parts.
    """
    parts = {p: n for p, n in dataset_parts(data_dir).items() if n}
    if not parts:
        raise ValueError(f"{data_dir} holds no rows to materialize")
    K = len(parts)
    for k, part in enumerate(tqdm(parts, desc="materialize parts", unit="part", disable=not progress)):
        rows = check_part_rows(part, pd.read_parquet(part), parts[part])
        materialize(
            bundle, rows, shard_path(out, k, K), dtype=raw_dtype(token_kind(bundle)), post_sit=post_sit, run_id=run_id,
            batch_size=batch_size, overwrite=True, progress=False,
        )  # fmt: skip
        del rows  # before the next part is read: one part in memory, not two
    store = publish_shards(out, K, dtype, overwrite=overwrite, progress=progress)
    for k in range(K):
        shutil.rmtree(shard_path(out, k, K))
    shards_dir = shard_path(out, 0, K).parent
    if not any(shards_dir.iterdir()):
        shards_dir.rmdir()
    return store
