"""A serving package: everything the ranking service loads at start-up, in one folder.

Layout::

    package.json   what is inside: ranker / source versions, the token source, history lengths, labels
    ranker/        the downstream ranker bundle (model.pt, config.json, encoder.json, metrics.json)
    source/        the source-model bundle that encodes newly ingested instances into tokens
    store/         a consistent snapshot of the token store the ranker was trained with

The store inside a package is a *seed*: the service writes ingested instances into a live store (by default
this one, in place; ``ServingCore.load(store=...)`` or ``IAT_TOKEN_STORE`` put it elsewhere, seeded from here
on first start), so a package built into an immutable Bento is never written to.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iat.downstream import RankerBundle, load_ranker, save_ranker
from iat.models.registry import SourceBundle, load_bundle, save_bundle
from iat.model_names import is_post_sit
from iat.tokens import fsio
from iat.tokens.manifest import MANIFEST_FILE, PARTS_DIR, read_manifest, require_source
from iat.tokens.materialize import source_identity, token_kind

PACKAGE_FILE = "package.json"
PACKAGE_FORMAT = "iat-serving-package"
RANKER_DIR, SOURCE_DIR, STORE_DIR = "ranker", "source", "store"
_IDENTITY_KEYS = ("version", "config_hash")  # the weights; run_id says which run wrote a store, not what made its tokens


@dataclass(frozen=True)
class ServingPackage:
    root: Path
    meta: dict[str, Any]

    @property
    def ranker_dir(self) -> Path:
        return self.root / RANKER_DIR

    @property
    def source_dir(self) -> Path:
        return self.root / SOURCE_DIR

    @property
    def store_dir(self) -> Path:
        return self.root / STORE_DIR

    @property
    def L(self) -> int:
        return int(self.meta["L"])

    @property
    def base_L(self) -> int:
        return int(self.meta["base_L"])


def snapshot_store(src: str | Path, dst: str | Path) -> Path:
    """Copy the published version of the store at ``src`` to ``dst`` (a new folder), holding the writer lock so
    no append or compaction changes it mid-copy. Only the parts the manifest lists are copied."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} exists; a store snapshot goes into a new folder")
    tmp = dst.parent / fsio.temp_name(f".{dst.name}")
    (tmp / PARTS_DIR).mkdir(parents=True)
    try:
        with fsio.writer_lock(src):
            m = read_manifest(src)
            for p in m["parts"] + m["label_updates"]:
                shutil.copytree(src / PARTS_DIR / p["name"], tmp / PARTS_DIR / p["name"])
            shutil.copy2(src / MANIFEST_FILE, tmp / MANIFEST_FILE)
        (tmp / fsio.LOCK_FILE).touch()
        os.rename(tmp, dst)
    except BaseException:
        fsio.remove(tmp)
        raise
    return dst


def check_compatible(ranker: RankerBundle, source: SourceBundle, store_source: dict[str, Any], where: str) -> None:
    """Refuse a combination whose tokens would not mean what the ranker learned, or that ingest would corrupt:
    the store must come from ``source`` and be the store the ranker was trained on."""
    have = {"source": token_maker(store_source)}
    require_source(have, token_maker(source_identity(source)), where)
    trained_on = ranker.config.get("token_source")
    if trained_on is None:
        return  # a base ranker reads the store only for its clicked-item sequence
    require_source(have, token_maker(trained_on), where)


def token_maker(source: dict[str, Any]) -> dict[str, str]:
    """What makes two stores' tokens the same: the weights (version, config hash) and the output read (pre- or
    post-SIT). Not the model's name: stores and rankers made before model names carried the data set
    (``iat-source-<kind>``) name the same weights."""
    return {**{k: str(source[k]) for k in _IDENTITY_KEYS if k in source}, "tokens": "post-SIT" if is_post_sit(source.get("model", "")) else "pre-SIT"}


def write_package(
    out: str | Path,
    ranker: RankerBundle | str | Path,
    source: SourceBundle | str | Path,
    store: str | Path,
    labels: dict[str, str] | None = None,
    overwrite: bool = False,
) -> ServingPackage:
    """Assemble a serving package at ``out`` from a ranker, the source model of its tokens and their store."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"serving package {out} exists; pass overwrite=True to replace it")
        shutil.rmtree(out)
    r = ranker if isinstance(ranker, RankerBundle) else load_ranker(ranker)
    s = source if isinstance(source, SourceBundle) else load_bundle(source)
    manifest = read_manifest(Path(store))
    check_compatible(r, s, manifest["source"], str(store))
    if manifest["kind"] != token_kind(s):
        raise ValueError(f"token store {store} holds '{manifest['kind']}' tokens; source '{s.kind}' makes '{token_kind(s)}'")
    tmp = out.parent / fsio.temp_name(f".{out.name}")
    tmp.mkdir(parents=True)
    try:
        save_ranker(r, tmp / RANKER_DIR)
        save_bundle(s, tmp / SOURCE_DIR)
        snapshot_store(store, tmp / STORE_DIR)
        spec = r.spec
        meta = {
            "format": PACKAGE_FORMAT,
            "created": int(time.time()),
            "ranker": {k: r.config[k] for k in ("kind", "version", "config_hash")} | {"spec": r.config["spec"]},
            "source": {k: s.config[k] for k in ("kind", "version", "config_hash")},
            "token_source": manifest["source"],
            "store_version": int(manifest["version"]),
            "store_rows": int(manifest["rows"]),
            "L": spec.L,
            "base_L": spec.base_L,
            "labels": dict(labels or {}),
        }
        (tmp / PACKAGE_FILE).write_text(json.dumps(meta, indent=2))
        os.rename(tmp, out)
    except BaseException:
        fsio.remove(tmp)
        raise
    return ServingPackage(out, meta)


def read_package(path: str | Path) -> ServingPackage:
    root = Path(path)
    f = root / PACKAGE_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{root} is not a serving package: {PACKAGE_FILE} is missing (build one with iat.serving_package.write_package)")
    meta = json.loads(f.read_text())
    if meta.get("format") != PACKAGE_FORMAT:
        raise ValueError(f"{f} is not an {PACKAGE_FORMAT} file")
    missing = [d for d in (RANKER_DIR, SOURCE_DIR, STORE_DIR) if not (root / d).is_dir()]
    if missing:
        raise FileNotFoundError(f"serving package {root} lacks {missing}")
    return ServingPackage(root, meta)
