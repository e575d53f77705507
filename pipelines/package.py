from typing import Any, Optional, Tuple

from zenml import Model, pipeline
from zenml.client import Client
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception
from zenml.models import ModelVersionResponse

from iat.model_names import POST_SIT_SUFFIX, source_model_name
from steps.package import PACKAGES_DIR, build_bento_step, build_serving_package


def source_of(ranker_mv: ModelVersionResponse, source: Optional[str], source_version: Optional[str]) -> Tuple[str, str]:
    """(source model name, version) whose bundle made the ranker's tokens: the model its token store names (unless
    ``source``, a kind of the ranker's data set, is given), the version whose ``source_bundle`` carries the same
    weights hash (unless given)."""
    client = Client()
    ranker = ranker_mv.get_artifact("ranker").load()
    token_source = ranker.config.get("token_source")
    if source is not None:
        name = source_model_name(ranker.encoder.schema.name, source)
    elif token_source is None:
        raise ValueError(f"{ranker_mv.model.name} reads no tokens: name the source model for ingest with --source")
    else:
        name = token_source["model"].removesuffix(POST_SIT_SUFFIX)
    if source_version is not None or token_source is None:
        try:
            return name, client.get_model_version(name, source_version).name
        except KeyError:
            raise ValueError(f"no source model {name}{':' + source_version if source_version else ''}") from None
    try:
        versions = client.list_model_versions(model_name_or_id=name, sort_by="desc:number", size=1000)
    except KeyError:  # no such model at all
        versions = []
    for mv in versions:
        art = mv.get_artifact("source_bundle")
        if art is not None and art.run_metadata.get("version") == token_source["version"]:
            return name, mv.name
    raise ValueError(f"no version of {name} holds the source bundle {token_source['version']} the ranker's tokens came from")


def package_pipeline(
    ranker_model: str, ranker_version: Optional[str] = None, source: Optional[str] = None, source_version: Optional[str] = None, **params: Any
) -> Any:
    """Package ranker model version ``ranker_model`` (``iat-ranker-<data set>-<spec>``; latest by default) with the
    source model version that made its tokens (found from the ranker, unless ``source``, a source kind, is given) and
    that version's token store into a Bento. The package and the Bento are linked to the ranker's model version,
    whose name and number the Bento's tag and labels carry."""
    try:
        mv = Client().get_model_version(ranker_model, ranker_version)
    except KeyError:
        raise ValueError(f"no ranker model {ranker_model}{':' + ranker_version if ranker_version else ''} (`zenml model list` shows them)") from None
    source_model, source_version = source_of(mv, source, source_version)
    model = Model(name=mv.model.name, version=mv.name)
    return _package_pipeline.with_options(model=model)(ranker_model=ranker_model, ranker_version=mv.name, source_model=source_model, source_version=source_version, **params)


@pipeline(name="package_pipeline", enable_cache=False, execution_mode=ExecutionMode.FAIL_FAST)  # runs show as package_pipeline-<n>
def _package_pipeline(ranker_model: str, ranker_version: str, source_model: str, source_version: str, packages_dir: str = PACKAGES_DIR) -> None:
    """ranker + source bundle + token store (read from their model versions, for lineage) -> serving package -> Bento."""
    rmv = Client().get_model_version(ranker_model, ranker_version)
    smv = Client().get_model_version(source_model, source_version)
    arts = {"ranker": rmv.get_artifact("ranker"), "source_bundle": smv.get_artifact("source_bundle"), "token_store": smv.get_artifact("token_store")}
    missing = [k for k, v in arts.items() if v is None]
    if missing:
        raise ValueError(f"cannot package {ranker_model}:{ranker_version} with {source_model}:{source_version}: no {missing} artifact")
    pkg = build_serving_package(arts["ranker"], arts["source_bundle"], arts["token_store"], packages_dir=packages_dir)
    build_bento_step(pkg)
