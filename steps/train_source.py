from pathlib import Path
from typing import Annotated, Any, Dict, Optional

import pandas as pd
from zenml import log_metadata, step

from iat.models.registry import SourceBundle, train_source as train_source_model
from iat.schema import Schema
from iat.train import TrainConfig
from steps.materializers import SourceBundleMaterializer


@step(output_materializers={"source_bundle": SourceBundleMaterializer})
def train_source(
    split_instances: pd.DataFrame,
    schema: dict,
    kind: str = "temporal",
    model_config: Optional[Dict[str, Any]] = None,
    train_config: Optional[Dict[str, Any]] = None,
    n_boot: int = 200,
    checkpoint_dir: Optional[str] = None,
) -> Annotated[SourceBundle, "source_bundle"]:
    """Train the source model ``kind`` on the train split (early stopping on valid AUC), evaluate valid and test
    with user-bootstrap CIs, and log the metrics on the bundle artifact and on the pipeline's model version.

    ``checkpoint_dir`` (optional): a crashed step re-run with the same folder resumes where it stopped.
    """
    cfg = TrainConfig(**(train_config or {}))
    bundle = train_source_model(
        split_instances, Schema.from_dict(schema), kind, model_config, cfg, Path(checkpoint_dir) if checkpoint_dir else None, n_boot=n_boot
    )
    metrics = {s: bundle.metrics[s] for s in ("valid", "test")}
    summary = {
        "kind": kind,
        "config_hash": bundle.config["config_hash"],
        "version": bundle.config["version"],
        "best_epoch": bundle.metrics["best_epoch"],
        "samples_per_s": bundle.metrics["samples_per_s"],
        **metrics,
    }
    log_metadata(summary, infer_model=True)
    return bundle
