from typing import Annotated

import pandas as pd
from zenml import log_metadata, step

from iat.data.split import add_split, split_counts


@step
def split(clean_instances: pd.DataFrame, train: float = 0.8, valid: float = 0.1) -> Annotated[pd.DataFrame, "split_instances"]:
    """Add the per-domain time split (train / valid / test) as a ``split`` column."""
    out = add_split(clean_instances, (train, valid, round(1.0 - train - valid, 10)))
    log_metadata({"rows_per_domain_split": split_counts(out)}, infer_artifact=True, artifact_name="split_instances")
    return out
