"""Durable, atomic file operations for the token store: fsync'd .npy writes, checksums, temp names, a writer lock.

Temporary files and folders carry the writer's pid (``<prefix>.tmp-<pid>-<rand>``) so a later writer can tell a
leftover of a crashed process (pid gone) from one that another live process is still filling.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

LOCK_FILE = ".lock"
_TEMP_RE = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")


def temp_name(prefix: str) -> str:
    return f"{prefix}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_temp(name: str) -> bool:
    return _TEMP_RE.search(name) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_dead_temps(folder: Path, prefix: str = "") -> list[Path]:
    """Remove temp entries starting with ``prefix`` whose writing process no longer exists."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP_RE.search(entry.name)
        if m and entry.name.startswith(prefix) and not _pid_alive(int(m.group(1))):
            remove(entry)
            removed.append(entry)
    return removed


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_checksum(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def save_npy(path: Path, arr: np.ndarray) -> dict[str, Any]:
    """Write one array durably; return its manifest record (bytes, checksum, shape, dtype)."""
    arr = np.ascontiguousarray(arr)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {
        "bytes": path.stat().st_size,
        "blake2b": file_checksum(path),
        "shape": list(arr.shape),
        "dtype": arr.dtype.str,
    }


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON in one step: readers see the old file or the new, never a mix."""
    tmp = path.parent / temp_name("." + path.name)
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Serialise writers of one store (threads and processes alike: each call opens its own descriptor)."""
    with open(root / LOCK_FILE, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
