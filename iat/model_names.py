"""Names of the ZenML models the pipelines version: one model per data set and source kind, and per data set and
ranker spec, so a MovieLens and a synthetic ranker never become versions of one model (and ``iat package`` never
picks a ranker of another data set). The data set part is the schema's name (``iat.data.registry.dataset_name``)."""

from __future__ import annotations

SOURCE_PREFIX = "iat-source-"
RANKER_PREFIX = "iat-ranker-"
POST_SIT_SUFFIX = "-post-sit"  # a token store of post-SIT outputs names its source model with this suffix


def is_post_sit(token_source_model: str) -> bool:
    """Whether a token store's source ``model`` names post-SIT outputs."""
    return str(token_source_model).endswith(POST_SIT_SUFFIX)


def source_model_name(dataset: str, kind: str) -> str:
    """``iat-source-<data set>-<kind>``, e.g. ``iat-source-synthetic-user_order``."""
    return f"{SOURCE_PREFIX}{dataset}-{kind}"


def ranker_model_name(dataset: str, spec: str) -> str:
    """``iat-ranker-<data set>-<spec name>``, e.g. ``iat-ranker-movielens-100k-base-din``."""
    return f"{RANKER_PREFIX}{dataset}-{spec}"
