"""Build a Bento from a serving package: the package saved as a BentoML model (``iat-serving-package:<bento
name>-<version>``), and a Bento of the service code and the core library that lists that model under the alias
the service loads (``serving-package``), tagged with the ZenML model version. No Docker is needed to build one
(``bentoml containerize`` is a later step)."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import bentoml
import yaml
from bentoml.exceptions import NotFound

from iat.serving_package import ServingPackage, read_package

SOURCE_ROOT = Path(__file__).resolve().parent.parent
BENTOFILE = SOURCE_ROOT / "deploy" / "bentofile.yaml"
BENTO_PREFIX = "iat-ranker"
PACKAGE_MODEL = "iat-serving-package"  # the BentoML model of every serving package; its version names the Bento
PACKAGE_ALIAS = "serving-package"  # how the Bento names its package model (serving/service.py loads it by this)
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


def _delete_if_present(delete: Callable[[str], None], tag: str) -> None:
    """Remove a model or Bento of that tag from the local store, so a rebuild replaces it."""
    try:
        delete(tag)
    except NotFound:
        pass


def save_package_model(pkg: ServingPackage, version: str, labels: dict[str, str]) -> bentoml.Model:
    """The serving package as BentoML model ``iat-serving-package:<version>`` (replaced if it exists): ``bentoml
    models list`` shows it with its size, and a Bento that lists it carries it."""
    tag = f"{PACKAGE_MODEL}:{_slug(version)}"
    _delete_if_present(bentoml.models.delete, tag)
    with bentoml.models.create(tag, labels=labels, metadata={"L": pkg.L, "store_rows": int(pkg.meta.get("store_rows", 0))}) as model:
        shutil.copytree(pkg.root, model.path, dirs_exist_ok=True)
    return bentoml.models.get(tag)


def build_bento(package_dir: str | Path, name: str, version: str, labels: dict[str, str] | None = None, bentofile: Path = BENTOFILE) -> bentoml.Bento:
    """Save the package as a BentoML model, stage ``iat/`` and ``serving/`` in a temporary build context and build
    the Bento described by ``bentofile`` with that exact model under the alias ``serving-package``; an existing
    Bento with the same tag is replaced."""
    pkg = read_package(package_dir)
    _delete_if_present(bentoml.bentos.delete, f"{name}:{version}")
    meta = {
        "ranker_version": str(pkg.meta["ranker"]["version"]),
        "source_version": str(pkg.meta["source"]["version"]),
        "L": str(pkg.L),
        **{k: str(v) for k, v in pkg.meta["labels"].items()},
        **(labels or {}),
    }
    model = save_package_model(pkg, f"{name}-{version}", meta)
    config = yaml.safe_load(bentofile.read_text())
    config["models"] = [{"tag": str(model.tag), "alias": PACKAGE_ALIAS}]  # this package, not whichever is latest
    with tempfile.TemporaryDirectory(prefix="iat-bento-") as tmp:
        ctx = Path(tmp)
        for d in _CODE:
            shutil.copytree(SOURCE_ROOT / d, ctx / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (ctx / "bentofile.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        return bentoml.bentos.build_bentofile(str(ctx / "bentofile.yaml"), build_ctx=str(ctx), name=name, version=version, labels=meta)


def latest_bento(prefix: str = BENTO_PREFIX) -> bentoml.Bento:
    """The most recently built Bento whose name starts with ``prefix``."""
    bentos = [b for b in bentoml.bentos.list() if b.tag.name.startswith(prefix)]
    if not bentos:
        raise FileNotFoundError(f"no Bento named {prefix}* in the local store; build one with `iat package`")
    return max(bentos, key=lambda b: b.info.creation_time)
