"""Evidently drift reports between a reference window (e.g. the training period) and a current window.

- token drift: dense tokens [N, D] -> per-dimension drift (Evidently ``ValueDrift`` per ``tok_i``, normed
  Wasserstein by default) with the share of drifted dimensions (``DriftedColumnsCount``), plus the
  embedding-level ``DomainClassifierDrift``; HGAQ codes [N, T, M] -> ``CodeLevelDrift`` per level;
- feature drift: the raw schema features (``DriftedColumnsCount`` + ``ValueDrift`` per column) and, when given,
  the model's predictions (``ValueDrift`` on ``prediction``).

Each window is first cut to a uniform sample of ``DriftConfig.sample_cap`` rows (20,000 by default): drift
statistics of 20k rows already resolve shifts far below the thresholds, and it keeps a 1M-token window fast.
``verdict`` reads the numbers back from the snapshots and lets ``iat.drift.decide`` choose the action.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import DriftedColumnsCount, ValueDrift

from iat.drift import DriftConfig, DriftVerdict, decide, sample_rows
from iat.schema import Schema
from monitoring.metrics import CodeLevelDrift, DomainClassifierDrift

TOKEN_PREFIX = "tok_"
PREDICTION = "prediction"
TAG_TOKENS, TAG_FEATURES = "tokens", "features"


def token_columns(d: int) -> list[str]:
    return [f"{TOKEN_PREFIX}{i}" for i in range(d)]


def code_column(t: int, m: int) -> str:
    return f"code_s{t}_l{m}"


def _tokens_frame(tokens: np.ndarray) -> tuple[pd.DataFrame, DataDefinition]:
    if tokens.ndim == 2:
        cols = token_columns(tokens.shape[1])
        return pd.DataFrame(tokens.astype(np.float32), columns=cols), DataDefinition(numerical_columns=cols)
    _, T, M = tokens.shape
    cols = [code_column(t, m) for t in range(T) for m in range(M)]
    frame = pd.DataFrame(tokens.reshape(len(tokens), T * M).astype(np.int64), columns=cols)
    return frame, DataDefinition(categorical_columns=cols)


def _check_tokens(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name}: tokens must be dense [N, D] or codes [N, T, M], got shape {a.shape}")
    if len(a) < 10:
        raise ValueError(f"{name}: a drift window needs at least 10 tokens, got {len(a)}")
    return a


def token_drift_snapshot(
    reference: Any,
    current: Any,
    cfg: DriftConfig = DriftConfig(),
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> Snapshot:
    """An Evidently snapshot of token drift; dense tokens [N, D] or HGAQ codes [N, T, M]."""
    ref, cur = _check_tokens("reference", reference), _check_tokens("current", current)
    if ref.shape[1:] != cur.shape[1:]:
        raise ValueError(f"reference tokens are {ref.shape[1:]} per row, current {cur.shape[1:]}")
    ref = ref[sample_rows(len(ref), cfg.sample_cap, cfg.seed)]
    cur = cur[sample_rows(len(cur), cfg.sample_cap, cfg.seed + 1)]
    ref_df, definition = _tokens_frame(ref)
    cur_df, _ = _tokens_frame(cur)
    if ref.ndim == 2:
        cols = token_columns(ref.shape[1])
        metrics: list[Any] = [
            DriftedColumnsCount(columns=cols, num_method=cfg.column_method, num_threshold=cfg.column_threshold, drift_share=cfg.dim_share),
            DomainClassifierDrift(columns=cols, threshold=cfg.embedding_auc, seed=cfg.seed),
        ] + [ValueDrift(column=c, method=cfg.column_method, threshold=cfg.column_threshold) for c in cols]
    else:
        _, T, M = ref.shape
        metrics = [
            CodeLevelDrift(level=m, columns=[code_column(t, m) for t in range(T)], threshold=cfg.code_threshold)
            for m in range(M)
        ]
    report = Report(metrics, include_tests=False)
    return report.run(
        Dataset.from_pandas(cur_df, data_definition=definition),
        Dataset.from_pandas(ref_df, data_definition=definition),
        timestamp=timestamp,
        tags=[TAG_TOKENS, *tags],
        metadata=metadata or {},
    )


def feature_columns(schema: Schema, reference: pd.DataFrame, max_categories: int) -> tuple[list[str], list[str]]:
    """(numeric, categorical) schema features for raw-feature drift; id-like categoricals are left out.

    A categorical with more than ``max_categories`` values in the reference (user_id, item_id, ...) has too few
    rows per value for a distribution test: two samples of the same stream would already look different.
    """
    numeric = [c for c in schema.numeric if c in reference.columns]
    categorical = [c for c in schema.categorical if c in reference.columns and reference[c].nunique() <= max_categories]
    return numeric, categorical


def feature_drift_snapshot(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: Schema,
    cfg: DriftConfig = DriftConfig(),
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> Snapshot:
    """An Evidently snapshot of raw-feature drift (schema features) and, if both frames hold a ``prediction``
    column, of prediction drift."""
    if len(reference) < 10 or len(current) < 10:
        raise ValueError(f"feature drift needs at least 10 rows per window, got {len(reference)} and {len(current)}")
    ref = reference.iloc[sample_rows(len(reference), cfg.sample_cap, cfg.seed)]
    cur = current.iloc[sample_rows(len(current), cfg.sample_cap, cfg.seed + 1)]
    numeric, categorical = feature_columns(schema, ref, cfg.max_categories)
    if not numeric and not categorical:
        raise ValueError("feature drift: none of the schema's features is in the frames")
    has_pred = PREDICTION in ref.columns and PREDICTION in cur.columns
    num_cols = numeric + ([PREDICTION] if has_pred else [])
    cols = numeric + categorical
    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=categorical)
    metrics: list[Any] = [
        DriftedColumnsCount(columns=cols, num_method=cfg.column_method, num_threshold=cfg.column_threshold, drift_share=cfg.feature_share)
    ]
    metrics += [ValueDrift(column=c, method=cfg.column_method, threshold=cfg.column_threshold) for c in numeric]
    metrics += [ValueDrift(column=c) for c in categorical]
    if has_pred:
        metrics.append(ValueDrift(column=PREDICTION, method=cfg.column_method, threshold=cfg.prediction_threshold))
    keep = num_cols + categorical
    report = Report(metrics, include_tests=False)
    return report.run(
        Dataset.from_pandas(cur[keep].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(ref[keep].reset_index(drop=True), data_definition=definition),
        timestamp=timestamp,
        tags=[TAG_FEATURES, *tags],
        metadata=metadata or {},
    )


def _metric_values(snapshot: Snapshot) -> list[tuple[dict[str, Any], Any]]:
    return [(m["config"], m["value"]) for m in snapshot.dict()["metrics"]]


def _type(config: dict[str, Any]) -> str:
    return str(config["type"]).rsplit(":", 1)[-1]


def verdict(token_snapshot: Snapshot | None, feature_snapshot: Snapshot | None, cfg: DriftConfig = DriftConfig()) -> DriftVerdict:
    """Read the drift numbers back from the snapshots and decide (``iat.drift.decide``)."""
    found: dict[str, Any] = {}
    if token_snapshot is not None:
        levels: dict[int, float] = {}
        for config, value in _metric_values(token_snapshot):
            kind = _type(config)
            if kind == "DriftedColumnsCount":
                found["dim_drift_share"] = float(value["share"])
            elif kind == "DomainClassifierDrift":
                found["embedding_score"] = float(value)
            elif kind == "CodeLevelDrift":
                levels[int(config["level"])] = float(value["share"])
        if levels:
            found["code_level_share"] = levels
    if feature_snapshot is not None:
        for config, value in _metric_values(feature_snapshot):
            kind = _type(config)
            if kind == "DriftedColumnsCount":
                found["feature_drift_share"] = float(value["share"])
            elif kind == "ValueDrift" and config.get("column") == PREDICTION:
                found["prediction_drift"] = float(value)
    return decide(cfg, **found)


@dataclass
class DriftReport:
    verdict: DriftVerdict
    snapshots: dict[str, Snapshot] = field(default_factory=dict)  # "tokens", "features"

    def save_html(self, folder: str | Path, prefix: str = "") -> dict[str, Path]:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, snap in self.snapshots.items():
            paths[name] = out / f"{prefix}{name}_drift.html"
            snap.save_html(str(paths[name]))
        return paths


def drift_report(
    reference_tokens: Any,
    current_tokens: Any,
    cfg: DriftConfig = DriftConfig(),
    reference_rows: pd.DataFrame | None = None,
    current_rows: pd.DataFrame | None = None,
    schema: Schema | None = None,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
) -> DriftReport:
    """Token drift, plus raw-feature / prediction drift when the windows' instance rows and schema are given."""
    snaps = {TAG_TOKENS: token_drift_snapshot(reference_tokens, current_tokens, cfg, timestamp, tags)}
    if reference_rows is not None and current_rows is not None:
        if schema is None:
            raise ValueError("feature drift needs the schema of the instance rows")
        snaps[TAG_FEATURES] = feature_drift_snapshot(reference_rows, current_rows, schema, cfg, timestamp, tags)
    return DriftReport(verdict(snaps[TAG_TOKENS], snaps.get(TAG_FEATURES), cfg), snaps)
