import os
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional

import pandas as pd
from zenml import get_step_context, log_metadata, step

from iat.models.registry import SourceBundle
from iat.tokens import inspect_store
from iat.tokens.materialize import default_dtype, materialize, publish_shards, token_kind

TOKEN_STORES_DIR = "data/token_stores"  # under IAT_HOME (the project folder by default)


def _store_path(bundle: SourceBundle, dtype: Optional[str], post_sit: bool, stores_dir: Optional[str]) -> tuple[Path, str]:
    """Where the store of ``bundle``'s tokens lives, and its dtype (fp16 dense / uint8 codes by default)."""
    dtype = dtype or default_dtype(token_kind(bundle))
    name = f"{bundle.kind}{'-post-sit' if post_sit else ''}-{bundle.config['version']}-{dtype}"
    return Path(stores_dir or Path(os.environ.get("IAT_HOME", ".")) / TOKEN_STORES_DIR).resolve() / name, dtype


def _run_id() -> str:
    model = get_step_context().model
    return f"{model.name}:{model.version}" if model is not None else ""


def _store_handle(path: Path) -> Dict[str, Any]:
    """The ``token_store`` artifact: the published store's path and manifest summary, also logged as metadata."""
    info = inspect_store(path)
    handle = {"path": str(path), "source": info["source"], "kind": info["kind"], "dtype": info["dtype"], "rows": info["rows"], "dims": info["dims"]}
    log_metadata({**handle, "history_lengths": info["length"], "bytes_per_row": info["bytes_per_row"]}, infer_artifact=True, artifact_name="token_store")
    return handle


@step
def materialize_tokens(
    source_bundle: SourceBundle,
    split_instances: pd.DataFrame,
    dtype: Optional[str] = None,
    post_sit: bool = False,
    stores_dir: Optional[str] = None,
) -> Annotated[Dict[str, Any], "token_store"]:
    """Encode every instance (all splits) with the source model and publish the token store atomically.

    The store's files live in ``stores_dir`` (memory-mapped by training, serving and monitoring); the artifact
    is its handle (path, manifest summary), so lineage runs source_bundle -> token_store -> ranker.
    """
    path, dtype = _store_path(source_bundle, dtype, post_sit, stores_dir)
    materialize(source_bundle, split_instances, path, dtype=dtype, post_sit=post_sit, run_id=_run_id(), overwrite=True)
    return _store_handle(path)


@step
def materialize_shard(
    source_bundle: SourceBundle,
    split_instances: pd.DataFrame,
    shard: int,
    shards: int,
    dtype: Optional[str] = None,
    post_sit: bool = False,
    stores_dir: Optional[str] = None,
) -> Annotated[Dict[str, Any], "token_shard"]:
    """Encode the instances of the users in ``shard`` (of ``shards``, by user-id hash) into a raw shard store
    beside the final store; ``publish_tokens`` merges the shards. The handle says where the final store goes."""
    path, dtype = _store_path(source_bundle, dtype, post_sit, stores_dir)
    shard_dir = materialize(
        source_bundle, split_instances, path, dtype=dtype, post_sit=post_sit, shards=shards, shard=shard, run_id=_run_id(), overwrite=True
    )
    return {"store": str(path), "dtype": dtype, "shard": shard, "shards": shards, "path": str(shard_dir)}


@step
def publish_tokens(shards: List[Dict[str, Any]]) -> Annotated[Dict[str, Any], "token_store"]:
    """Merge the shard stores into one token store (one manifest), the same artifact ``materialize_tokens`` makes."""
    stores = {(s["store"], s["dtype"], s["shards"]) for s in shards}
    if len(stores) != 1 or sorted(s["shard"] for s in shards) != list(range(shards[0]["shards"])):
        raise ValueError(f"publish_tokens needs shards 0..K-1 of one store, got {[(s['store'], s['shard'], s['shards']) for s in shards]}")
    store, dtype, k = stores.pop()
    return _store_handle(publish_shards(store, k, dtype=dtype, overwrite=True))


@step(enable_cache=False)  # what a Redis holds is outside ZenML's knowledge: publish whenever asked
def publish_online(token_store: Dict[str, Any], online_store: str, retention: int = 0) -> Annotated[Dict[str, Any], "online_store"]:
    """Copy the token store to the Redis online store at ``online_store`` (a redis:// URL) as a new version and
    switch the live version to it (``iat.tokens.online.publish``); ``retention`` > 0 keeps each user's last N."""
    from iat.tokens.online import publish_to

    handle = publish_to(token_store["path"], online_store, retention=retention)
    log_metadata(handle, infer_artifact=True, artifact_name="online_store")
    return handle
