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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class BlockArray:
    """An array written without ever being whole in memory: its shape, dtype, and its rows block by block."""

    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Callable[[], Iterable[np.ndarray]]


def save_npy(path: Path, arr: np.ndarray | BlockArray) -> dict[str, Any]:
    """Write one array durably (the bytes ``np.save`` writes); return its manifest record (bytes, checksum,
    shape, dtype). A ``BlockArray`` is written as its blocks arrive."""
    if isinstance(arr, np.ndarray):
        whole = np.ascontiguousarray(arr)
        arr = BlockArray(whole.shape, whole.dtype, lambda: [whole])
    shape = tuple(int(n) for n in arr.shape)
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": shape}
    rows = 0
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for block in arr.blocks():
            if block.dtype != arr.dtype or block.shape[1:] != shape[1:]:
                raise ValueError(f"{path.name}: a block of {block.dtype}{list(block.shape)} in an array of {arr.dtype}{list(shape)}")
            np.ascontiguousarray(block).tofile(f)
            rows += len(block)
        if rows != shape[0]:
            raise ValueError(f"{path.name}: blocks held {rows} rows, the array {shape[0]}")
        f.flush()
        os.fsync(f.fileno())
    return {
        "bytes": path.stat().st_size,
        "blake2b": file_checksum(path),
        "shape": list(shape),
        "dtype": np.dtype(arr.dtype).str,
    }


def read_rows(arr: np.ndarray, start: int, stop: int) -> np.ndarray:
    """A copy of rows [start, stop) of an array. A memory-mapped .npy file is read with a plain file read:
    a pass over a whole store then leaves its pages in the page cache, not in this process's resident set."""
    whole_file = (
        isinstance(arr, np.memmap)
        and arr.filename is not None
        and arr.offset + arr.nbytes == os.path.getsize(arr.filename)  # the file's array, not a view into it
    )
    if not whole_file or stop <= start:
        return np.array(arr[start:stop])
    per_row = int(np.prod(arr.shape[1:], dtype=np.int64))
    flat = np.fromfile(arr.filename, dtype=arr.dtype, count=(stop - start) * per_row, offset=arr.offset + start * per_row * arr.itemsize)
    return flat.reshape((stop - start, *arr.shape[1:]))


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
