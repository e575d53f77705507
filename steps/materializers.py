"""ZenML materializers for the project's own artifact types."""

import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Tuple, Type

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.metadata.metadata_types import MetadataType

from iat.downstream import RankerBundle, load_ranker
from iat.models.registry import SourceBundle, load_bundle, save_bundle


class _BundleIO:
    """Save / load of a model bundle as its folder of files (model.pt, config.json, encoder.json, metrics.json) under the
    artifact's URI; copied through ``fileio``, so it works on any artifact store (local, S3, GCS...)."""

    _load_folder: ClassVar[Callable[[str], Any]]
    uri: str

    def save(self, data: Any) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            folder = save_bundle(data, Path(tmp) / "bundle")
            fileio.makedirs(self.uri)
            for f in sorted(folder.iterdir()):
                fileio.copy(str(f), os.path.join(self.uri, f.name), overwrite=True)

    def load(self, data_type: Type[Any]) -> Any:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            for name in fileio.listdir(self.uri):
                fileio.copy(os.path.join(self.uri, str(name)), os.path.join(tmp, str(name)))
            return type(self)._load_folder(tmp)  # reads everything into memory, so the temp folder can go

    def extract_metadata(self, data: Any) -> Dict[str, MetadataType]:
        meta: Dict[str, MetadataType] = {k: data.config[k] for k in ("kind", "config_hash", "version")}
        meta["parameters"] = int(sum(p.numel() for p in data.model.parameters()))
        for split in ("valid", "test"):
            for k, v in data.metrics.get(split, {}).items():
                if v is not None:  # CIs are None when no bootstrap ran
                    meta[f"{split}_{k}"] = float(v)
        return meta


class SourceBundleMaterializer(_BundleIO, BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (SourceBundle,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL
    _load_folder = staticmethod(load_bundle)


class RankerBundleMaterializer(_BundleIO, BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (RankerBundle,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL
    _load_folder = staticmethod(load_ranker)
