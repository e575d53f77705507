from typing import Any, Dict, Optional

from zenml import Model, pipeline
from zenml.client import Client
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception

from iat.data.registry import dataset_name
from iat.model_names import ranker_model_name
from pipelines.tokens import source_model_version
from steps.train_ranker import train_ranker


def downstream_pipeline(
    spec: Dict[str, Any],
    source: str = "user_order",
    source_version: Optional[str] = None,
    dataset: str = "synthetic",
    path: Optional[str] = None,
    **params: Any,
) -> Any:
    """Train a downstream ranker on the data of source model version ``iat-source-<data set>-<source>`` (latest by
    default), reading that version's latest token store when the spec uses tokens. The ranker is versioned as
    ZenML model ``iat-ranker-<data set>-<spec name>``; its lineage shows the data, source model and token store."""
    mv = source_model_version(source, source_version, dataset, path)
    name = mv.model.name
    # Checked before the run exists: a failed run would leave an empty version of the ranker's ZenML model.
    if spec.get("tokens") is not None and spec["tokens"] != source:
        raise ValueError(f"the ranker reads the tokens of '{spec['tokens']}' but the source model is '{source}': pass --source {spec['tokens']} (or leave it out)")
    if spec.get("tokens") is not None and mv.get_artifact("token_store") is None:
        raise ValueError(f"{name}:{mv.name} has no token store yet: run `iat run tokens --source {source} --dataset {dataset}` first (and --path for a log file)")
    model = Model(name=ranker_model_name(dataset_name(dataset, path), spec["name"]), description=f"downstream ranker {spec}")
    return _downstream_pipeline.with_options(model=model)(spec=spec, source_model=name, source_version=mv.name, **params)


@pipeline(name="downstream_pipeline", enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)  # runs show as downstream_pipeline-<n>
def _downstream_pipeline(
    spec: Dict[str, Any],
    source_model: str,
    source_version: str,
    train_config: Optional[Dict[str, Any]] = None,
    n_boot: int = 200,
    processes: int = 1,
) -> None:
    """split log (+ token store, + HGAQ tokenizer for the SIF-Mixer) of a source model version -> train_ranker."""
    mv = Client().get_model_version(source_model, source_version)
    store = mv.get_artifact("token_store") if spec.get("tokens") is not None else None  # present: downstream_pipeline checked
    tokenizer = mv.get_artifact("source_bundle") if spec.get("model") == "sif_mixer" else None
    train_ranker(
        mv.get_artifact("split_instances"), mv.get_artifact("schema"), spec, store, tokenizer, train_config=train_config, n_boot=n_boot, processes=processes
    )
