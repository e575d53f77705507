from pathlib import Path
from typing import Annotated, Any, Dict

from bentoml._internal.bento import Bento
from zenml import get_step_context, log_metadata, step
from zenml.integrations.bentoml.materializers.bentoml_bento_materializer import BentoMaterializer

from iat.downstream import RankerBundle
from iat.models.registry import SourceBundle
from iat.serving_package import write_package
from serving.bento import bento_name, bento_version, build_bento

PACKAGES_DIR = "data/serving"


@step(enable_cache=False)
def build_serving_package(
    ranker: RankerBundle, source_bundle: SourceBundle, token_store: Dict[str, Any], packages_dir: str = PACKAGES_DIR
) -> Annotated[Dict[str, Any], "serving_package"]:
    """Write the serving package (ranker + source model + a snapshot of the token store) to
    ``packages_dir/<model>-v<version>``; it is refused when the store was not made by this source model or is
    not the store the ranker was trained on. The artifact is its handle, labelled with the ZenML model version."""
    mv = get_step_context().model
    labels = {"zenml_model": mv.name, "zenml_model_version": str(mv.version), "zenml_model_version_number": str(mv.number)}
    out = Path(packages_dir).resolve() / f"{mv.name}-v{mv.number}"
    pkg = write_package(out, ranker, source_bundle, token_store["path"], labels=labels, overwrite=True)
    handle = {"path": str(pkg.root), "ranker_name": pkg.meta["ranker"]["spec"]["name"], "ranker_version": pkg.meta["ranker"]["version"], **labels}
    log_metadata({**handle, "store_rows": pkg.meta["store_rows"], "L": pkg.L}, infer_artifact=True, artifact_name="serving_package")
    return handle


@step(enable_cache=False, output_materializers={"bento": BentoMaterializer})
def build_bento_step(serving_package: Dict[str, Any]) -> Annotated[Bento, "bento"]:
    """``bentoml build`` of the package (deploy/bentofile.yaml), tagged ``<ZenML model>:mv<model version>-<weights hash>``
    (the model is ``iat-ranker-<data set>-<spec name>``)."""
    name = bento_name(serving_package["zenml_model"])
    version = bento_version(serving_package["zenml_model_version"], serving_package["ranker_version"])
    bento = build_bento(serving_package["path"], name, version)
    log_metadata({"bento_tag": str(bento.tag), "bento_path": str(bento.path)}, infer_model=True)
    return bento
