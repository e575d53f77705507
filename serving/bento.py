"""Build a Bento from a serving package: the service code, the core library and the package, under a tag that
carries the ZenML model version. No Docker is needed to build one (``bentoml containerize`` is a later step)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

from iat.serving_package import read_package

SOURCE_ROOT = Path(__file__).resolve().parent.parent
BENTOFILE = SOURCE_ROOT / "deploy" / "bentofile.yaml"
BENTO_PREFIX = "iat-ranker"
_CODE = ("iat", "serving")


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", s.lower()).strip("-._")


def bento_name(model_name: str) -> str:
    """A valid Bento name (lowercase letters, digits, '-', '_', '.') for a ranker's ZenML model name, starting
    with ``iat-ranker`` so that ``latest_bento`` finds it."""
    slug = _slug(model_name)
    return slug if slug.startswith(BENTO_PREFIX) else f"{BENTO_PREFIX}-{slug}".rstrip("-")


def bento_version(model_version: str, ranker_version: str) -> str:
    """``mv<ZenML model version>-<ranker weights hash>``: the same model version and weights give the same tag."""
    return f"mv{_slug(str(model_version))}-{ranker_version}"


def build_bento(package_dir: str | Path, name: str, version: str, labels: dict[str, str] | None = None, bentofile: Path = BENTOFILE) -> bentoml.Bento:
    """Stage ``iat/``, ``serving/`` and the package (as ``package/``) in a temporary build context and build the
    Bento described by ``bentofile``; an existing Bento with the same tag is replaced."""
    pkg = read_package(package_dir)
    tag = f"{name}:{version}"
    try:
        bentoml.bentos.delete(tag)
    except NotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="iat-bento-") as tmp:
        ctx = Path(tmp)
        for d in _CODE:
            shutil.copytree(SOURCE_ROOT / d, ctx / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copytree(pkg.root, ctx / "package")
        shutil.copy(bentofile, ctx / "bentofile.yaml")
        meta = {
            "ranker_version": str(pkg.meta["ranker"]["version"]),
            "source_version": str(pkg.meta["source"]["version"]),
            "L": str(pkg.L),
            **{k: str(v) for k, v in pkg.meta["labels"].items()},
            **(labels or {}),
        }
        return bentoml.bentos.build_bentofile(str(ctx / "bentofile.yaml"), build_ctx=str(ctx), name=name, version=version, labels=meta)


def latest_bento(prefix: str = BENTO_PREFIX) -> bentoml.Bento:
    """The most recently built Bento whose name starts with ``prefix``."""
    bentos = [b for b in bentoml.bentos.list() if b.tag.name.startswith(prefix)]
    if not bentos:
        raise FileNotFoundError(f"no Bento named {prefix}* in the local store; build one with `iat package`")
    return max(bentos, key=lambda b: b.info.creation_time)
