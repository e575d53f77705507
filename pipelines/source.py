from typing import Any, Dict, Optional

from zenml import Model, pipeline
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception

from iat.data.registry import dataset_name
from iat.model_names import source_model_name
from pipelines.data import data_steps
from steps.train_source import train_source


def source_pipeline(kind: str = "temporal", **params: Any) -> Any:
    """Run the source pipeline for ``kind``; each data set and kind versions its own ZenML Model
    ``iat-source-<data set>-<kind>``."""
    name = source_model_name(dataset_name(params.get("dataset", "synthetic"), params.get("path")), kind)
    model = Model(name=name, description=f"IAT stage-I source model ({kind}); the bundle artifact holds weights, encoder, config and metrics")
    return _source_pipeline.with_options(model=model)(kind=kind, **params)


@pipeline(name="source_pipeline", enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)  # runs show as source_pipeline-<n>
def _source_pipeline(
    kind: str = "temporal",
    dataset: str = "synthetic",
    users: int = 2_000,
    seed: int = 0,
    path: Optional[str] = None,
    max_quarantine_share: float = 0.05,
    reports_dir: str = "reports/validation",
    model_config: Optional[Dict[str, Any]] = None,
    train_config: Optional[Dict[str, Any]] = None,
    n_boot: int = 200,
    processes: int = 1,
) -> None:
    """ingest -> validate -> time split -> train_source (the data steps are shared with the data pipeline)."""
    split_df, schema = data_steps(dataset, users, seed, path, max_quarantine_share, reports_dir)
    train_source(split_df, schema, kind=kind, model_config=model_config, train_config=train_config, n_boot=n_boot, processes=processes)
