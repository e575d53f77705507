"""Writing token stores: immutable parts, atomic publication, and ``write_store`` for a whole store.

Why a manifest swap rather than renaming whole store folders: replacing a folder needs two renames (old aside,
new in) with a moment where no store exists, and an append would have to copy the store. Here every part is
written under a temp name, fsync'd and renamed into ``parts/``; only then is ``manifest.json`` replaced in one
``os.replace``. A reader that reads the manifest gets a complete version (old or new); a crash at any point
leaves the previous manifest, which names only complete parts. Readers that opened earlier keep their
memory maps, which stay valid after a later compaction unlinks the files (POSIX semantics).
A brand-new store is built in a hidden sibling folder and renamed into place, so a crash leaves no folder at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iat.tokens import fsio
from iat.tokens.codecs import check_kind_dtype, encode, int8_scale, prepare_tokens
from iat.tokens.manifest import (
    MANIFEST_FILE,
    PARTS_DIR,
    check_source,
    new_manifest,
    read_manifest,
)
from iat.tokens.rows import prepare_rows, sort_rows


def write_part_dir(parts_dir: Path, name: str, arrays: dict[str, np.ndarray | fsio.BlockArray]) -> dict[str, Any]:
    """Write arrays as ``parts_dir/name/<key>.npy``, visible under ``name`` only once all are durable."""
    tmp = parts_dir / fsio.temp_name("." + name)
    tmp.mkdir()
    try:
        files = {f"{k}.npy": fsio.save_npy(tmp / f"{k}.npy", v) for k, v in arrays.items()}
        fsio.fsync_dir(tmp)
        os.rename(tmp, parts_dir / name)
    except BaseException:
        fsio.remove(tmp)
        raise
    fsio.fsync_dir(parts_dir)
    return files


def add_rows_part(root: Path, manifest: dict[str, Any], cols: dict[str, np.ndarray], role: str) -> dict[str, Any]:
    """Sort rows (with ``user_id`` and encoded ``tokens``), write them as a part and list it in ``manifest``."""
    cols = sort_rows(cols)
    user = cols.pop("user_id")
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else np.zeros(0, np.int64)
    offsets = np.append(starts, len(user)).astype(np.int64)
    ts = cols["ts"]
    ts_range = (int(ts.min()), int(ts.max())) if len(ts) else None
    return add_part(root, manifest, {"users": user[starts], "offsets": offsets, **cols}, role, ts_range)


def add_part(
    root: Path,
    manifest: dict[str, Any],
    arrays: dict[str, np.ndarray | fsio.BlockArray],
    role: str,
    ts_range: tuple[int, int] | None,
) -> dict[str, Any]:
    """Write a part's arrays (``users``, ``offsets``, the row columns and ``tokens``, rows in (user, ts,
    instance_id) order) and list it in ``manifest``."""
    name = f"{role}-v{manifest['version']:06d}-{uuid.uuid4().hex[:8]}"
    files = write_part_dir(root / PARTS_DIR, name, arrays)
    rec = {
        "name": name,
        "role": role,
        "rows": arrays["ts"].shape[0],
        "users": arrays["users"].shape[0],
        "ts_min": ts_range[0] if ts_range else None,
        "ts_max": ts_range[1] if ts_range else None,
        "files": files,
    }
    manifest["parts"].append(rec)
    manifest["rows"] += rec["rows"]
    return rec


def publish(root: Path, manifest: dict[str, Any]) -> None:
    """Make ``manifest`` the store's state, then delete parts no version from now on refers to.

    Callers hold the writer lock, so the only unlisted entries in parts/ are superseded parts and temp
    leftovers of crashed writers; temp entries of live processes are left alone.
    """
    fsio.write_json_atomic(root / MANIFEST_FILE, manifest)
    listed = {p["name"] for p in manifest["parts"]} | {p["name"] for p in manifest["label_updates"]}
    for entry in (root / PARTS_DIR).iterdir():
        if entry.name not in listed and not fsio.is_temp(entry.name):
            fsio.remove(entry)
    fsio.sweep_dead_temps(root / PARTS_DIR)
    fsio.sweep_dead_temps(root)


def write_store(
    path: str | Path,
    *,
    user_id: Any,
    ts: Any,
    instance_id: Any,
    domain: Any,
    item_id: Any,
    category: Any,
    click: Any,
    conversion: Any,
    conversion_ts: Any,
    tokens: Any,
    kind: str,
    dtype: str,
    source: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write a complete token store from rows in any order; publish it atomically.

    ``tokens``: float [N, D] for kind 'dense' (stored as dtype fp32 / fp16 / int8 with a per-dimension
    scale), or integer codes [N, T, M] in 0..255 for kind 'codes' (dtype uint8). ``conversion`` / ``conversion_ts``
    may hold nulls (None, NaN, pandas NA) or be None. ``source`` identifies the model that made the tokens
    (keys model, version, run_id, config_hash). With ``overwrite`` an existing store is replaced: its
    readers keep their snapshot and new readers see the new store; without it an existing store is an error.
    """
    root = Path(path)
    check_kind_dtype(kind, dtype)
    src = check_source(source)
    cols, vocab = prepare_rows(
        user_id=user_id, ts=ts, instance_id=instance_id, domain=domain, item_id=item_id, category=category,
        click=click, conversion=conversion, conversion_ts=conversion_ts, domains=[],
    )  # fmt: skip
    x = prepare_tokens(tokens, kind, len(cols["ts"]))
    scale = int8_scale(x) if dtype == "int8" else None
    cols["tokens"], _ = encode(x, dtype, scale)
    manifest = new_manifest(source=src, kind=kind, dtype=dtype, dims=list(x.shape[1:]), scale=scale)
    manifest["domains"] = vocab
    return create_store(root, manifest, lambda folder: add_rows_part(folder, manifest, cols, "base"), overwrite)


def create_store(root: Path, manifest: dict[str, Any], add_base: Callable[[Path], object], overwrite: bool) -> Path:
    """Publish a store at ``root`` whose base part ``add_base(folder)`` writes and lists in ``manifest``.

    With ``overwrite`` an existing store gets the new base as its next version; a new store is built in a
    hidden sibling folder and renamed into place.
    """
    if (root / MANIFEST_FILE).is_file():
        if not overwrite:
            raise FileExistsError(f"token store {root} exists; pass overwrite=True to replace it")
        with fsio.writer_lock(root):
            manifest["version"] = read_manifest(root)["version"] + 1
            add_base(root)
            publish(root, manifest)
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not a token store (no {MANIFEST_FILE}); refusing to touch it")

    root.parent.mkdir(parents=True, exist_ok=True)
    fsio.sweep_dead_temps(root.parent, prefix=f".{root.name}.tmp-")
    tmp_root = root.parent / fsio.temp_name(f".{root.name}")
    (tmp_root / PARTS_DIR).mkdir(parents=True)
    (tmp_root / fsio.LOCK_FILE).touch()
    try:
        manifest["version"] = 1
        add_base(tmp_root)
        fsio.write_json_atomic(tmp_root / MANIFEST_FILE, manifest)
        try:
            os.rename(tmp_root, root)  # replaces an empty folder; fails if a store appeared meanwhile
        except OSError as e:
            raise FileExistsError(f"token store {root} appeared while writing; not replacing it") from e
    except BaseException:
        fsio.remove(tmp_root)
        raise
    fsio.fsync_dir(root.parent)
    return root
