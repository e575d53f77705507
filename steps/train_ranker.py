from typing import Annotated, Any, Dict, Optional

import pandas as pd
from zenml import log_metadata, step

from iat.downstream import DownstreamData, DownstreamSpec, RankerBundle, train_downstream
from iat.models.registry import SourceBundle
from iat.schema import Schema
from iat.tokens import TokenStore
from iat.train import TrainConfig
from steps.materializers import RankerBundleMaterializer


@step(output_materializers={"ranker": RankerBundleMaterializer})
def train_ranker(
    split_instances: pd.DataFrame,
    schema: dict,
    spec: Dict[str, Any],
    token_store: Optional[Dict[str, Any]] = None,
    tokenizer: Optional[SourceBundle] = None,
    train_config: Optional[Dict[str, Any]] = None,
    n_boot: int = 200,
) -> Annotated[RankerBundle, "ranker"]:
    """Train one downstream ranking model (base, +IAT or SIF-Mixer) on the train split, early stopping on
    valid, and score valid / test with user-bootstrap CIs; metrics go to the ranker's ZenML model version."""
    s = DownstreamSpec(**spec)
    store = TokenStore.open(token_store["path"], expected_source=token_store["source"]) if token_store else None
    data = DownstreamData.prepare(split_instances, Schema.from_dict(schema))
    bundle, metrics = train_downstream(
        data, s, store, TrainConfig(**(train_config or {})), tokenizer.model if tokenizer is not None else None, n_boot=n_boot
    )
    log_metadata(
        {"spec": spec, "valid": metrics["valid"], "test": metrics["test"], "params": metrics["params"], "token_source": bundle.config["token_source"] or "none"},
        infer_model=True,
    )
    return bundle
