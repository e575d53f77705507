"""Load any instance log from a parquet or csv file plus its schema YAML.

The loader only reads: it never fixes or drops values. A string in a numeric column, a null id or a NaN
feature reaches validation (``quality.validate_log``) untouched, which quarantines the row with a reason.

String ids: a ``user_id`` / ``item_id`` column that holds strings (a parquet string column, or a csv column
pandas cannot read as numbers) is mapped to int64 by :func:`hash_id` — the first 8 bytes of the BLAKE2b
digest of the UTF-8 string, little-endian, with the top bit cleared so every id is a non-negative int64.
The map is stable across runs, machines and file formats; nulls stay null. A csv id column of digits
only is read as integers by pandas and kept as they are.
"""

from __future__ import annotations

import codecs
import csv as csv_module
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iat.data.io import INSTANCES_FILE, SCHEMA_FILE
from iat.schema import REQUIRED_COLUMNS, Schema, SchemaError

PARQUET_MAGIC = b"PAR1"
HASHED_ID_COLUMNS: tuple[str, ...] = ("user_id", "item_id")
_SNIFF_BYTES = 64 * 1024
_INT63_MASK = (1 << 63) - 1


class LogFormatError(ValueError):
    """The instance-log file is missing, empty, or not a readable parquet/csv file."""


def hash_id(value: str) -> int:
    """Stable non-negative int64 for a string id (BLAKE2b, 8 bytes, little-endian, top bit cleared)."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _INT63_MASK


def load_log(path: str | Path, schema_path: str | Path | None = None) -> tuple[pd.DataFrame, Schema]:
    """Read an instance log (parquet or csv file, or a dataset folder) and its schema.

    ``path`` may be a file or a folder holding ``instances.parquet``; ``schema_path`` defaults to the
    ``schema.yaml`` beside the file (or inside the folder). The format is decided by the file's bytes
    (parquet magic ``PAR1``; otherwise text is read as csv), so a misnamed file gets a clear error.
    """
    log_file, _ = _resolve(Path(path))
    schema = schema_of(path, schema_path)
    csv = _sniff_format(log_file) == "csv"
    df = _read_csv(log_file) if csv else _read_parquet(log_file)
    if len(df) == 0:
        raise LogFormatError(f"instance log {log_file} has no rows (columns: {list(df.columns)})")
    _check_required_columns(log_file, df, csv)
    for col in HASHED_ID_COLUMNS:
        if col in df.columns and _holds_strings(df[col]):
            df[col] = hash_id_column(df[col])
    return df, schema


def schema_of(path: str | Path, schema_path: str | Path | None = None) -> Schema:
    """The schema of the log at ``path``: ``schema_path``, or the ``schema.yaml`` beside the file (inside the folder)."""
    _, default_schema = _resolve(Path(path))
    schema_file = Path(schema_path) if schema_path is not None else default_schema
    if not schema_file.is_file():
        raise SchemaError(f"schema file not found: {schema_file} (pass schema_path, or put {SCHEMA_FILE} beside the log)")
    return Schema.from_yaml(schema_file)


def hash_id_column(s: pd.Series) -> pd.Series:
    """Map every non-null value (as its string form) through :func:`hash_id`; nulls stay null."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    hashed = np.fromiter((hash_id(str(u)) for u in uniques), dtype=np.int64, count=len(uniques))
    if (codes >= 0).all():
        return pd.Series(hashed[codes], index=s.index, name=s.name)
    values = np.where(codes >= 0, hashed[np.maximum(codes, 0)], 0)
    return pd.Series(pd.arrays.IntegerArray(values, codes < 0), index=s.index, name=s.name)


def _resolve(p: Path) -> tuple[Path, Path]:
    if p.is_dir():
        log_file = p / INSTANCES_FILE
        if not log_file.is_file():
            raise LogFormatError(f"{p} is a folder without {INSTANCES_FILE}; pass the log file itself")
        return log_file, p / SCHEMA_FILE
    if not p.is_file():
        raise LogFormatError(f"instance log not found: {p}")
    return p, p.parent / SCHEMA_FILE


def _sniff_format(f: Path) -> str:
    """'parquet' or 'csv' from the file's first bytes; anything else is refused with what it starts with."""
    with f.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if not head:
        raise LogFormatError(f"instance log {f} is empty (0 bytes)")
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if f.suffix.lower() == ".parquet":
        raise LogFormatError(f"{f} is named .parquet but is not a parquet file (starts with {head[:8]!r})")
    try:
        # Incremental decoding: a multi-byte character cut at the end of the sniffed block is still text.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
    except UnicodeDecodeError as e:
        raise LogFormatError(f"{f} is neither parquet nor a UTF-8 csv file (starts with {head[:8]!r})") from e
    if b"\x00" in head:
        raise LogFormatError(f"{f} is neither parquet nor a csv text file (it holds NUL bytes)")
    return "csv"


def _read_parquet(f: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(f)
    except (pa.ArrowException, OSError) as e:
        raise LogFormatError(f"cannot read parquet file {f}: {e}") from e
    df = table.to_pandas()
    # pandas turns an integer column with nulls into float64, which rounds ids above 2**53:
    # keep such columns as nullable Int64 so validation sees the exact values and the nulls.
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_integer(col.type) and col.null_count:
            df[name] = table.select([name]).to_pandas(types_mapper=lambda _t: pd.Int64Dtype())[name]
    return df


def _read_csv(f: Path) -> pd.DataFrame:
    # domain must stay text even when it looks numeric; every other column is read as pandas infers
    # it, so a bad value keeps its column as strings for validation to flag. utf-8-sig drops the byte
    # order mark spreadsheet exports put before the first column name.
    try:
        header = _csv_header(f)
    except (UnicodeDecodeError, csv_module.Error) as e:
        raise LogFormatError(f"cannot read the header of csv file {f}: {e}") from e
    unnamed = [i + 1 for i, c in enumerate(header) if not c.strip()]
    if unnamed:
        raise LogFormatError(f"csv file {f}: header column {unnamed[0]} has no name (a stray comma?)")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # pandas would rename the second 'price' to 'price.1' and carry it on as an extra column
        raise LogFormatError(f"csv file {f}: column names appear more than once in the header: {twice}")
    try:
        return pd.read_csv(f, dtype={"domain": str}, encoding="utf-8-sig", low_memory=False)
    except pd.errors.EmptyDataError as e:
        raise LogFormatError(f"csv file {f} holds no header and no rows") from e
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise LogFormatError(f"cannot read csv file {f}: {e}") from e


def _check_required_columns(f: Path, df: pd.DataFrame, csv: bool) -> None:
    """Every column of the contract's required set, before anything reads one (a wrong csv delimiter reads the whole
    header as one column: say so)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if not missing:
        return
    msg = f"instance log {f}: missing required columns {missing} (it has {len(df.columns)}: {[str(c)[:40] for c in df.columns[:8]]})"
    if csv and len(df.columns) == 1:
        seps = [s for s in (";", "\t", "|") if s in str(df.columns[0])]
        if seps:
            msg += f"; the header reads as one column: the file is separated by {seps[0]!r}, a csv log must use commas"
    raise LogFormatError(msg)


def _csv_header(f: Path) -> list[str]:
    with f.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv_module.reader(fh), [])


def _holds_strings(s: pd.Series) -> bool:
    return s.dtype == object or isinstance(s.dtype, pd.StringDtype)
