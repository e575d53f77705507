from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step

from iat.data.registry import load_dataset
from iat.limits import confined


@step
def ingest(
    dataset: str = "synthetic", users: int = 2_000, seed: int = 0, path: Optional[str] = None
) -> Tuple[Annotated[pd.DataFrame, "raw_instances"], Annotated[dict, "schema"]]:
    """Load or generate the instance log and its schema (as a plain dict, so any store can hold it)."""
    df, schema = load_dataset(dataset, users=users, seed=seed, path=None if path is None else confined(path, "path"))
    log_metadata({"rows": len(df), "users": int(df["user_id"].nunique()), "dataset": dataset}, infer_artifact=True, artifact_name="raw_instances")
    return df, schema.to_dict()
