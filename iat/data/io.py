"""A dataset on disk: a folder holding ``instances.parquet`` and ``schema.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from iat.schema import Schema

INSTANCES_FILE = "instances.parquet"
SCHEMA_FILE = "schema.yaml"


def write_dataset(out_dir: str | Path, df: pd.DataFrame, schema: Schema) -> Path:
    """Write atomically: files appear under their final names only once fully written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_parquet = out / f".{INSTANCES_FILE}.tmp"
    df.to_parquet(tmp_parquet, index=False)
    os.replace(tmp_parquet, out / INSTANCES_FILE)
    tmp_schema = out / f".{SCHEMA_FILE}.tmp"
    schema.to_yaml(tmp_schema)
    os.replace(tmp_schema, out / SCHEMA_FILE)
    return out


def read_dataset(data_dir: str | Path) -> tuple[pd.DataFrame, Schema]:
    d = Path(data_dir)
    if not (d / INSTANCES_FILE).is_file() or not (d / SCHEMA_FILE).is_file():
        raise FileNotFoundError(
            f"{d} is not a dataset folder: expected {INSTANCES_FILE} and {SCHEMA_FILE} "
            f"(create one with `iat generate --dataset synthetic --out {d}`)"
        )
    return pd.read_parquet(d / INSTANCES_FILE), Schema.from_yaml(d / SCHEMA_FILE)
