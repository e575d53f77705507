"""A dataset on disk: a folder holding ``instances.parquet`` and ``schema.yaml``, or, chunked,
``part-00000.parquet ...`` (each part holds whole users), ``schema.yaml`` and ``parts.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from iat.schema import Schema

INSTANCES_FILE = "instances.parquet"
SCHEMA_FILE = "schema.yaml"
PARTS_FILE = "parts.json"  # index of a chunked dataset's parts; written last, so it names only complete parts


def write_dataset(out_dir: str | Path, df: pd.DataFrame, schema: Schema) -> Path:
    """Write atomically: files appear under their final names only once fully written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / INSTANCES_FILE, lambda p: df.to_parquet(p, index=False))
    write_atomic(out / SCHEMA_FILE, schema.to_yaml)
    return out


def part_file(k: int) -> str:
    return f"part-{k:05d}.parquet"


def write_parts(out_dir: str | Path, frames: Iterable[pd.DataFrame], schema: Schema) -> Path:
    """Write a chunked dataset, one part per frame, holding one frame in memory at a time.

    ``parts.json`` goes first out and last in: a crash leaves no index, never one naming a part of another run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS_FILE).unlink(missing_ok=True)
    parts = []
    for k, df in enumerate(frames):
        write_atomic(out / part_file(k), lambda p, df=df: df.to_parquet(p, index=False))
        parts.append({"file": part_file(k), "rows": len(df)})
    write_atomic(out / SCHEMA_FILE, schema.to_yaml)
    index = {"rows": sum(p["rows"] for p in parts), "parts": parts}
    write_atomic(out / PARTS_FILE, lambda p: p.write_text(json.dumps(index, indent=1)))
    return out


def is_chunked(data_dir: str | Path) -> bool:
    return (Path(data_dir) / PARTS_FILE).is_file()


class DatasetError(ValueError):
    """A dataset folder's index or parts contradict each other (the message names the file and the field)."""


def dataset_parts(data_dir: str | Path) -> dict[Path, int]:
    """The parts of a chunked dataset, in order, with their row counts; ``parts.json`` checked: JSON, each entry a
    part file of this folder (a plain name, never a path out of it) with a whole number of rows, the total right."""
    d = Path(data_dir)
    index_file = d / PARTS_FILE
    if not is_chunked(d):
        raise FileNotFoundError(f"{d} is not a chunked dataset: {PARTS_FILE} is missing (write one with write_parts)")
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{index_file}: not valid JSON ({e})") from None
    entries = index.get("parts") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{index_file}: 'parts' must be a non-empty list of {{file, rows}}")
    parts: dict[Path, int] = {}
    for i, p in enumerate(entries):
        where = f"{index_file}: parts[{i}]"
        name, rows = (p.get("file"), p.get("rows")) if isinstance(p, dict) else (None, None)
        if not isinstance(name, str) or Path(name).name != name or name.startswith(".") or not name.endswith(".parquet"):
            raise DatasetError(f"{where}.file: {name!r} is not the name of a .parquet part inside {d} (no folders, no '..')")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise DatasetError(f"{where}.rows: {rows!r} is not a whole number of rows")
        if d / name in parts:
            raise DatasetError(f"{where}.file: {name} is listed twice")
        parts[d / name] = rows
    total = index.get("rows")
    if total is not None and total != sum(parts.values()):
        raise DatasetError(f"{index_file}: rows says {total}, its parts add up to {sum(parts.values())}")
    return parts


def check_part_rows(path: Path, df: pd.DataFrame, declared: int) -> pd.DataFrame:
    """``df`` read from part ``path``, if it holds the rows ``parts.json`` declares (a short part lost rows)."""
    if len(df) != declared:
        raise DatasetError(f"{path}: holds {len(df):,} rows, but {path.parent / PARTS_FILE} says {declared:,}: the part is incomplete or not this dataset's")
    return df


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` then rename: the file appears under its name only once complete."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def append_csv_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a small results CSV by rewriting it atomically: a crash mid-write never leaves a torn line
    that a resumed run would misread (results files hold at most a few hundred rows)."""
    new = pd.DataFrame(rows)
    full = pd.concat([pd.read_csv(path), new], ignore_index=True) if path.is_file() else new
    write_atomic(path, lambda p: full.to_csv(p, index=False))


def read_dataset(data_dir: str | Path) -> tuple[pd.DataFrame, Schema]:
    """A dataset folder in memory; a chunked one's parts concatenated (stages that stream read the parts instead)."""
    d = Path(data_dir)
    if is_chunked(d):
        parts = [check_part_rows(p, pd.read_parquet(p), rows) for p, rows in dataset_parts(d).items()]
        return pd.concat(parts, ignore_index=True), Schema.from_yaml(d / SCHEMA_FILE)
    if not (d / INSTANCES_FILE).is_file() or not (d / SCHEMA_FILE).is_file():
        raise FileNotFoundError(
            f"{d} is not a dataset folder: expected {INSTANCES_FILE} and {SCHEMA_FILE} "
            f"(create one with `iat generate --dataset synthetic --out {d}`)"
        )
    return pd.read_parquet(d / INSTANCES_FILE), Schema.from_yaml(d / SCHEMA_FILE)
