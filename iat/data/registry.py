"""One entry point for every data source: the built-in data sets by name, or any log file by path."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iat.schema import Schema

DATASETS: tuple[str, ...] = ("synthetic", "movielens-100k", "file")
MAX_USERS = 100_000  # of the in-memory generator (~100 rows each); `iat generate --chunked` streams larger logs


def dataset_name(dataset: str, path: str | Path | None = None) -> str:
    """The name a data set's models carry (``iat.model_names``): its schema's name, known before it is loaded (a
    built-in data set's own, a log file's from the schema YAML beside it)."""
    if dataset == "synthetic":
        from iat.data.synthetic import synthetic_schema

        return synthetic_schema().name
    if dataset == "movielens-100k":
        from iat.data.movielens import NAME

        return NAME
    if dataset == "file":
        if path is None:
            raise ValueError("dataset 'file' needs a path to a parquet/csv log (with schema.yaml beside it)")
        from iat.data.files import schema_of

        return schema_of(path).name
    raise ValueError(f"unknown dataset '{dataset}': expected one of {DATASETS}")


def load_dataset(
    dataset: str, *, users: int = 2_000, seed: int = 0, path: str | Path | None = None, progress: bool = True
) -> tuple[pd.DataFrame, Schema]:
    """``synthetic`` generates (users, seed); ``movielens-100k`` converts ml-100k (``path`` optional);
    ``file`` reads a parquet/csv log plus its schema YAML at ``path``."""
    if dataset == "synthetic":
        from iat.data.synthetic import generate

        if isinstance(users, bool) or not isinstance(users, int) or not 1 <= users <= MAX_USERS:
            raise ValueError(f"users must be a whole number from 1 to {MAX_USERS:,}, got {users!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative whole number, got {seed!r}")

        return generate(users, seed=seed, progress=progress)
    if dataset == "movielens-100k":
        from iat.data.movielens import load_movielens

        return load_movielens(path)
    if dataset == "file":
        if path is None:
            raise ValueError("dataset 'file' needs a path to a parquet/csv log (with schema.yaml beside it)")
        from iat.data.files import load_log

        return load_log(path)
    raise ValueError(f"unknown dataset '{dataset}': expected one of {DATASETS}")
