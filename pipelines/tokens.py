from typing import Any, Optional

from zenml import Model, pipeline
from zenml.client import Client
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception
from zenml.models import ModelVersionResponse

from iat.data.registry import dataset_name
from iat.model_names import source_model_name
from steps.tokens import materialize_shard, materialize_tokens, publish_online, publish_tokens


def source_model_version(source: str, source_version: Optional[str], dataset: str, path: Optional[str]) -> ModelVersionResponse:
    """The version (latest by default) of ``iat-source-<data set>-<source>``, or an error naming the command that
    trains it."""
    name = source_model_name(dataset_name(dataset, path), source)
    try:
        return Client().get_model_version(name, source_version)
    except KeyError:
        raise ValueError(f"no source model {name}{':' + source_version if source_version else ''}: run `iat run source --model {source} --dataset {dataset}` first (and --path for a log file)") from None


def tokens_pipeline(
    source: str = "temporal", source_version: Optional[str] = None, dataset: str = "synthetic", path: Optional[str] = None, **params: Any
) -> Any:
    """Materialize the tokens of a trained source model version (``iat-source-<data set>-<source>``, latest by
    default); the token store artifact is linked to that same model version."""
    mv = source_model_version(source, source_version, dataset, path)
    model = Model(name=mv.model.name, version=mv.name)
    return _tokens_pipeline.with_options(model=model)(source_model=mv.model.name, source_version=mv.name, **params)


@pipeline(name="tokens_pipeline", enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)  # runs show as tokens_pipeline-<n>
def _tokens_pipeline(
    source_model: str,
    source_version: str,
    dtype: Optional[str] = None,
    post_sit: bool = False,
    shards: int = 1,
    stores_dir: Optional[str] = None,
    online_store: Optional[str] = None,
    retention: int = 0,
) -> None:
    """source bundle + the split log it was trained on (both read from the model version, for lineage)
    -> materialize -> token store (published atomically).

    With ``shards`` K > 1: K ``materialize_shard_<i>`` steps (users split by id hash; parallel on an orchestrator
    that runs independent steps at once, e.g. Kubernetes or Kubeflow) -> ``publish_tokens`` (one manifest over
    the shards). Either way the ``token_store`` artifact is the same, and so are the store's bytes.
    With ``online_store`` (a redis:// URL): ``publish_online`` then makes the store the live version of the Redis
    online store the ranking replicas read (``retention``: each user's last N tokens, 0 = all).
    """
    mv = Client().get_model_version(source_model, source_version)
    bundle, data = mv.get_artifact("source_bundle"), mv.get_artifact("split_instances")
    if bundle is None or data is None:
        raise ValueError(f"model version {source_model}:{source_version} has no source_bundle / split_instances artifact")
    store = token_store_steps(bundle, data, dtype, post_sit, shards, stores_dir)
    if online_store:
        publish_online(store, online_store, retention)


def token_store_steps(bundle: Any, data: Any, dtype: Optional[str], post_sit: bool, shards: int, stores_dir: Optional[str]) -> Any:
    """The materialization steps of a pipeline (one step, or K shard steps + publish); returns the
    ``token_store`` artifact."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if shards == 1:
        return materialize_tokens(bundle, data, dtype=dtype, post_sit=post_sit, stores_dir=stores_dir)
    parts = [
        materialize_shard(bundle, data, shard=i, shards=shards, dtype=dtype, post_sit=post_sit, stores_dir=stores_dir, id=f"materialize_shard_{i}")
        for i in range(shards)
    ]
    return publish_tokens(parts)
