"""The store manifest (``manifest.json``) and the checks that a store's files match it.

Layout of a store folder::

    manifest.json          the published state: source model, token kind/dtype/dims, domain vocabulary,
                           the parts (base + appended segments) and label updates, with file sizes and checksums
    parts/<name>/*.npy     immutable parts; a part is listed in the manifest only after it is complete
    .lock                  serialises writers

Publishing = atomically replacing manifest.json, so a reader sees one complete version or the previous one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from iat.tokens import fsio

MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"
FORMAT = "iat-token-store"
FORMAT_VERSION = 1
SOURCE_KEYS = ("model", "version", "run_id", "config_hash")
VERIFY_MODES = ("fast", "full")


class TokenStoreError(RuntimeError):
    """A token store is missing, incomplete, corrupt, or does not match what the caller expects."""


class SourceMismatchError(TokenStoreError):
    """The store's tokens come from a different source model than the one expected."""


def check_source(source: Any) -> dict[str, str]:
    if not isinstance(source, dict):
        raise ValueError(f"source must be a dict with keys {SOURCE_KEYS}, got {type(source).__name__}")
    missing = [k for k in SOURCE_KEYS if k not in source]
    if missing:
        raise ValueError(f"source is missing keys {missing}; it identifies the model that made the tokens")
    return {str(k): str(v) for k, v in source.items()}


def require_source(manifest: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Refuse a store whose source differs from ``expected`` on any key ``expected`` names."""
    have = manifest["source"]
    diffs = [f"{k}={have.get(k)!r} (expected {str(v)!r})" for k, v in expected.items() if have.get(k) != str(v)]
    if diffs:
        raise SourceMismatchError(f"token store {where} was made by another source model: {', '.join(diffs)}")


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no token store at {root}: {MANIFEST_FILE} is missing (an interrupted write publishes nothing; "
            "create one with iat.tokens.write_store)"
        )
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TokenStoreError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise TokenStoreError(f"{path} is not an {FORMAT} manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise TokenStoreError(f"{path}: format_version {m.get('format_version')} is not supported ({FORMAT_VERSION})")
    total = sum(p["rows"] for p in m["parts"])
    if total != m["rows"]:
        raise TokenStoreError(f"{path}: manifest says {m['rows']} rows but its parts hold {total}")
    return m


def load_part_files(root: Path, part: dict[str, Any], verify: str) -> dict[str, np.ndarray]:
    """Memory-map one part's arrays after checking each file's size (and checksum when verify='full')."""
    folder = root / PARTS_DIR / part["name"]
    arrays = {}
    for fname, rec in part["files"].items():
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(f"token store {root}: part {part['name']} lacks {fname}")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise TokenStoreError(
                f"token store {root}: {part['name']}/{fname} is {size} bytes but the manifest says {rec['bytes']} "
                "(truncated or replaced file)"
            )
        if verify == "full" and fsio.file_checksum(path) != rec["blake2b"]:
            raise TokenStoreError(f"token store {root}: checksum mismatch in {part['name']}/{fname} (corrupt file)")
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(arr.shape) != rec["shape"] or arr.dtype.str != rec["dtype"]:
            raise TokenStoreError(
                f"token store {root}: {part['name']}/{fname} holds {arr.dtype.str}{list(arr.shape)}, "
                f"manifest says {rec['dtype']}{rec['shape']}"
            )
        arrays[fname.removesuffix(".npy")] = arr
    return arrays


def new_manifest(
    *, source: dict[str, str], kind: str, dtype: str, dims: list[int], scale: np.ndarray | None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": 0,
        "source": source,
        "kind": kind,
        "dtype": dtype,
        "dims": dims,
        "int8_scale": None if scale is None else [float(v) for v in scale],
        "domains": [],
        "rows": 0,
        "parts": [],
        "label_updates": [],
    }
