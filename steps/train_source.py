from pathlib import Path
from typing import Annotated, Any, Dict, Optional

import pandas as pd
from zenml import get_step_context, log_metadata, step

from iat.dist_train import train_source_with
from iat.models.registry import SourceBundle
from iat.limits import check_run_bounds
from iat.model_names import SOURCE_PREFIX, source_model_name
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
    seed: Optional[int] = None,
    epochs: Optional[int] = None,
    processes: int = 1,
    dataset_name: Optional[str] = None,
) -> Annotated[SourceBundle, "source_bundle"]:
    """Train the source model ``kind`` on the train split (early stopping on valid AUC), evaluate valid and test
    with user-bootstrap CIs, and log the metrics on the bundle artifact and on the pipeline's model version.

    ``checkpoint_dir`` (optional): a crashed step re-run with the same folder resumes where it stopped.
    ``seed`` / ``epochs`` (optional) override those of ``train_config`` (pipeline parameters of the same name
    reach them, also in a deployed pipeline's HTTP invoke).
    ``processes`` > 1: train with that many DDP processes on this machine (torchrun; users sharded across them,
    ``batch_size`` stays the global batch); the bundle comes back from rank 0.
    ``dataset_name``: the data set the run's model names were bound to (``end_to_end`` binds it); the log's schema
    must be that data set. Being a parameter, it is part of the step's cache key: a run bound to another data set
    never reuses this step's bundle from the cache (where no check would run).
    """
    check_source_model(kind, Schema.from_dict(schema).name, dataset_name)
    check_run_bounds(epochs=epochs, n_boot=n_boot, processes=processes)
    overrides = {k: int(v) for k, v in (("seed", seed), ("epochs", epochs)) if v is not None}
    cfg = TrainConfig(**{**(train_config or {}), **overrides})
    bundle = train_source_with(
        processes, split_instances, Schema.from_dict(schema), kind, model_config, cfg, Path(checkpoint_dir) if checkpoint_dir else None, n_boot=n_boot
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


def check_source_model(kind: str, dataset: str, bound: Optional[str] = None) -> None:
    """The ZenML model a source model version is registered under is ``iat-source-<data set>-<kind>``; it is fixed
    when the pipeline is compiled (or deployed). Refuse a run whose data set or kind would register under another's name."""
    mv = get_step_context().model_version
    expected = source_model_name(dataset, kind)
    if mv is not None and mv.model.name.startswith(SOURCE_PREFIX):
        named: str | None = mv.model.name
    else:
        named = source_model_name(bound, kind) if bound is not None else None
    if named is not None and named != expected:
        raise ValueError(
            f"this run's source model is {expected} (data set '{dataset}', kind '{kind}') but the run registers its "
            f"models under '{named}' (fixed when the pipeline was compiled or deployed): run or deploy the "
            f"pipeline for that data set and kind instead (e.g. `iat deploy-pipeline end_to_end --kind {kind} "
            f"--name end-to-end-{dataset}-{kind}` with its --dataset, and --path for a log file)"
        )
