"""ZenML materializers for the project's own artifact types."""

import os
from pathlib import Path
from typing import Any, ClassVar, Dict, Tuple, Type

from zenml.enums import ArtifactType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.metadata.metadata_types import MetadataType

from iat.models.registry import SourceBundle, load_bundle, save_bundle


class SourceBundleMaterializer(BaseMaterializer):
    """A source bundle as its folder of files (model.pt, config.json, encoder.json, metrics.json) under the
    artifact's URI; copied through ``fileio``, so it works on any artifact store (local, S3, GCS...)."""

    ASSOCIATED_TYPES: ClassVar[Tuple[Type[Any], ...]] = (SourceBundle,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def save(self, data: SourceBundle) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            folder = save_bundle(data, Path(tmp) / "bundle")
            fileio.makedirs(self.uri)
            for f in sorted(folder.iterdir()):
                fileio.copy(str(f), os.path.join(self.uri, f.name), overwrite=True)

    def load(self, data_type: Type[Any]) -> SourceBundle:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            for name in fileio.listdir(self.uri):
                fileio.copy(os.path.join(self.uri, str(name)), os.path.join(tmp, str(name)))
            return load_bundle(tmp)  # reads everything into memory, so the temp folder can go

    def extract_metadata(self, data: SourceBundle) -> Dict[str, MetadataType]:
        meta: Dict[str, MetadataType] = {k: data.config[k] for k in ("kind", "config_hash", "version")}
        meta["parameters"] = int(sum(p.numel() for p in data.model.parameters()))
        for split in ("valid", "test"):
            for k, v in data.metrics.get(split, {}).items():
                meta[f"{split}_{k}"] = float(v)
        return meta
