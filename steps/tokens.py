import os
from pathlib import Path
from typing import Annotated, Any, Dict, Optional

import pandas as pd
from zenml import get_step_context, log_metadata, step

from iat.models.registry import SourceBundle
from iat.tokens import inspect_store
from iat.tokens.materialize import materialize

TOKEN_STORES_DIR = "data/token_stores"  # under IAT_HOME (the project folder by default)


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
    kind = "codes" if source_bundle.kind == "hgaq" else "dense"
    dtype = dtype or ("uint8" if kind == "codes" else "fp16")
    name = f"{source_bundle.kind}{'-post-sit' if post_sit else ''}-{source_bundle.config['version']}-{dtype}"
    path = Path(stores_dir or Path(os.environ.get("IAT_HOME", ".")) / TOKEN_STORES_DIR).resolve() / name
    model = get_step_context().model
    run_id = f"{model.name}:{model.version}" if model is not None else ""
    materialize(source_bundle, split_instances, path, dtype=dtype, post_sit=post_sit, run_id=run_id, overwrite=True)
    info = inspect_store(path)
    handle = {"path": str(path), "source": info["source"], "kind": info["kind"], "dtype": info["dtype"], "rows": info["rows"], "dims": info["dims"]}
    log_metadata({**handle, "history_lengths": info["length"], "bytes_per_row": info["bytes_per_row"]}, infer_artifact=True, artifact_name="token_store")
    return handle
