from typing import Any, Optional

from zenml import Model, pipeline
from zenml.client import Client

from steps.package import PACKAGES_DIR, build_bento_step, build_serving_package


def package_pipeline(ranker: str, ranker_version: Optional[str] = None, source: str = "temporal", source_version: Optional[str] = None, **params: Any) -> Any:
    """Package ranker model version ``iat-ranker-<ranker>`` (latest by default) with source model version
    ``iat-source-<source>`` (latest by default) and that version's token store into a Bento. The package and
    the Bento are linked to the ranker's model version, whose name and number the Bento's tag and labels carry."""
    mv = Client().get_model_version(f"iat-ranker-{ranker}", ranker_version)
    smv = Client().get_model_version(f"iat-source-{source}", source_version)
    model = Model(name=mv.model.name, version=mv.name)
    return _package_pipeline.with_options(model=model)(ranker=ranker, ranker_version=mv.name, source=source, source_version=smv.name, **params)


@pipeline(enable_cache=False)
def _package_pipeline(ranker: str, ranker_version: str, source: str, source_version: str, packages_dir: str = PACKAGES_DIR) -> None:
    """ranker + source bundle + token store (read from their model versions, for lineage) -> serving package -> Bento."""
    rmv = Client().get_model_version(f"iat-ranker-{ranker}", ranker_version)
    smv = Client().get_model_version(f"iat-source-{source}", source_version)
    arts = {"ranker": rmv.get_artifact("ranker"), "source_bundle": smv.get_artifact("source_bundle"), "token_store": smv.get_artifact("token_store")}
    missing = [k for k, v in arts.items() if v is None]
    if missing:
        raise ValueError(f"cannot package iat-ranker-{ranker}:{ranker_version} with iat-source-{source}:{source_version}: no {missing} artifact")
    pkg = build_serving_package(arts["ranker"], arts["source_bundle"], arts["token_store"], packages_dir=packages_dir)
    build_bento_step(pkg)
