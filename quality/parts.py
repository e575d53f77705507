"""Validate a chunked dataset part by part: the same GX suites per part, clean and quarantine written per part.

Memory holds one part (plus, for the cross-part uniqueness check, the ids of earlier parts whose id range
overlaps this part's; none when parts own disjoint id ranges, as ``generate_chunks`` writes them).
Result: as ``validate_log`` on the concatenated parts, row for row: the same rows clean, the same rows
quarantined with the same reasons (``input_row`` counts across parts). Two differences: table-level
checks (a missing column, a column in which no value parses) judge each part alone, and there is no HTML
report (``validation_summary.json`` carries the counts).

Outputs in ``out_dir``: ``clean/`` (a chunked dataset: the clean rows of part k in ``part-k``),
``quarantine/part-k.parquet``, ``validation_summary.json``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iat.data.files import load_log
from iat.data.io import SCHEMA_FILE, check_part_rows, dataset_parts, part_file, write_atomic, write_parts
from iat.schema import Schema
from quality.report import writable_quarantine
from quality.result import ValidationError, ValidationResult
from quality.validate import validate_part


@dataclass
class PartsValidation:
    """Totals of a part-by-part run, and where its outputs are."""

    n_input: int = 0
    n_clean: int = 0
    n_quarantine: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    max_quarantine_share: float = 0.05
    parts: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def quarantine_share(self) -> float:
        return self.n_quarantine / self.n_input if self.n_input else 0.0

    @property
    def passed(self) -> bool:
        return self.quarantine_share <= self.max_quarantine_share

    def summary(self) -> dict[str, Any]:
        return {
            "n_input": self.n_input,
            "n_clean": self.n_clean,
            "n_quarantine": self.n_quarantine,
            "quarantine_share": self.quarantine_share,
            "max_quarantine_share": self.max_quarantine_share,
            "passed": self.passed,
            "counts": dict(self.counts),
            "parts": self.parts,
        }


class PartsThresholdError(ValidationError):
    """More rows of the whole chunked log were quarantined than allowed; every output was written."""

    def __init__(self, result: PartsValidation) -> None:
        self.result = result
        super().__init__(
            f"quarantined {result.n_quarantine} of {result.n_input} rows ({result.quarantine_share:.2%}) > allowed "
            f"{result.max_quarantine_share:.2%}: "
            + "; ".join(f"{k}: {v} rows" for k, v in sorted(result.counts.items(), key=lambda kv: -kv[1])),
        )


def validate_parts(
    data_dir: str | Path, out_dir: str | Path, max_quarantine_share: float = 0.05, progress: bool = True
) -> PartsValidation:
    """Validate every part of the chunked dataset at ``data_dir``; raise ``PartsThresholdError`` after writing
    the outputs when more than ``max_quarantine_share`` of all rows were quarantined."""
    if not 0.0 <= max_quarantine_share <= 1.0:
        raise ValueError(f"max_quarantine_share must be in [0, 1], got {max_quarantine_share}")
    data, out = Path(data_dir), Path(out_dir)
    parts = dataset_parts(data)
    schema = Schema.from_yaml(data / SCHEMA_FILE)
    result = PartsValidation(max_quarantine_share=max_quarantine_share)
    shutil.rmtree(out / "quarantine", ignore_errors=True)  # a re-run with fewer parts must not leave stale parts
    (out / "quarantine").mkdir(parents=True)
    ids_dir = out / ".validated-ids"  # the ids each part let through to the value suite, for later parts
    ids_dir.mkdir(exist_ok=True)
    try:
        frames = _clean_frames(parts, schema, out, ids_dir, result, progress)
        result.paths["clean"] = write_parts(out / "clean", frames, schema)
    finally:
        shutil.rmtree(ids_dir, ignore_errors=True)
    result.paths["quarantine"] = out / "quarantine"
    result.paths["summary"] = out / "validation_summary.json"
    write_atomic(result.paths["summary"], lambda p: p.write_text(json.dumps(result.summary(), indent=2)))
    if not result.passed:
        raise PartsThresholdError(result)
    return result


def _clean_frames(
    parts: dict[Path, int], schema: Schema, out: Path, ids_dir: Path, result: PartsValidation, progress: bool
) -> Iterator[pd.DataFrame]:
    """Validate part after part, writing its quarantine and adding to ``result``; yield its clean rows."""
    seen: list[tuple[int, int, Path]] = []  # (min id, max id, ids file) of each earlier part
    for k, path in enumerate(tqdm(parts, desc="validate", unit="part", disable=not progress)):
        df = check_part_rows(path, load_log(path)[0], parts[path])  # a short part would lose rows silently
        lo, hi = _id_bounds(df["instance_id"])
        earlier = [np.load(f) for a, b, f in seen if a <= hi and lo <= b]
        res, ids = validate_part(df, schema, 1.0, np.concatenate(earlier) if earlier else None)
        if len(ids):
            np.save(ids_dir / f"{k}.npy", ids)
            seen.append((int(ids.min()), int(ids.max()), ids_dir / f"{k}.npy"))
        quarantine = res.quarantine.set_axis(res.quarantine.index + result.n_input)  # input rows across parts
        write_atomic(out / "quarantine" / part_file(k), lambda p, q=quarantine: writable_quarantine(q).to_parquet(p, index=True))
        _add(result, res, path.name)
        yield res.clean


def _id_bounds(s: pd.Series) -> tuple[float, float]:
    """Bounds of the ids a part can let through; unbounded unless the column is integer-typed (text or
    float ids may parse to values a float min/max would round)."""
    if pd.api.types.is_integer_dtype(s.dtype) and s.notna().any():
        return int(s.min()), int(s.max())
    return -np.inf, np.inf


def _add(total: PartsValidation, res: ValidationResult, name: str) -> None:
    total.n_input += res.n_input
    total.n_clean += len(res.clean)
    total.n_quarantine += len(res.quarantine)
    for label, n in res.counts.items():
        total.counts[label] = total.counts.get(label, 0) + n
    total.parts.append({"part": name, "rows": res.n_input, "clean": len(res.clean), "quarantined": len(res.quarantine)})
