from typing import Any, Optional

from zenml import Model, pipeline
from zenml.client import Client

from steps.tokens import materialize_tokens


def tokens_pipeline(source: str = "temporal", source_version: Optional[str] = None, **params: Any) -> Any:
    """Materialize the tokens of a trained source model version (``iat-source-<source>``, latest by default);
    the token store artifact is linked to that same model version."""
    mv = Client().get_model_version(f"iat-source-{source}", source_version)
    model = Model(name=mv.model.name, version=mv.name)
    return _tokens_pipeline.with_options(model=model)(source=source, source_version=mv.name, **params)


@pipeline(enable_cache=True)
def _tokens_pipeline(source: str, source_version: str, dtype: Optional[str] = None, post_sit: bool = False) -> None:
    """source bundle + the split log it was trained on (both read from the model version, for lineage)
    -> materialize -> token store (published atomically)."""
    mv = Client().get_model_version(f"iat-source-{source}", source_version)
    bundle, data = mv.get_artifact("source_bundle"), mv.get_artifact("split_instances")
    if bundle is None or data is None:
        raise ValueError(f"model version iat-source-{source}:{source_version} has no source_bundle / split_instances artifact")
    materialize_tokens(bundle, data, dtype=dtype, post_sit=post_sit)
