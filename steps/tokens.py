from pathlib import Path
from typing import Annotated, Any, Dict, Optional

import pandas as pd
from zenml import log_metadata, step

from iat.models.registry import SourceBundle
from iat.tokens import inspect_store
from iat.tokens.materialize import materialize

TOKEN_STORES_DIR = "data/token_stores"


@step
def materialize_tokens(
    source_bundle: SourceBundle,
    split_instances: pd.DataFrame,
    dtype: Optional[str] = None,
    post_sit: bool = False,
    stores_dir: str = TOKEN_STORES_DIR,
) -> Annotated[Dict[str, Any], "token_store"]:
    """Encode every instance (all splits) with the source model and publish the token store atomically.

    The store's files live in ``stores_dir`` (memory-mapped by training, serving and monitoring); the artifact
    is its handle (path, manifest summary), so lineage runs source_bundle -> token_store -> ranker.
    """
    kind = "codes" if source_bundle.kind == "hgaq" else "dense"
    dtype = dtype or ("uint8" if kind == "codes" else "fp16")
    name = f"{source_bundle.kind}{'-post-sit' if post_sit else ''}-{source_bundle.config['version']}-{dtype}"
    path = Path(stores_dir).resolve() / name
    materialize(source_bundle, split_instances, path, dtype=dtype, post_sit=post_sit, overwrite=True)
    info = inspect_store(path)
    handle = {"path": str(path), "source": info["source"], "kind": info["kind"], "dtype": info["dtype"], "rows": info["rows"], "dims": info["dims"]}
    log_metadata({**handle, "history_lengths": info["length"], "bytes_per_row": info["bytes_per_row"]}, infer_artifact=True, artifact_name="token_store")
    return handle
