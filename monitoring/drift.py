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

from iat.drift import DriftConfig, DriftMeasures, DriftVerdict, decide, sample_rows
from iat.schema import Schema
from monitoring.metrics import AUCChange, CodeLevelDrift, DomainClassifierDrift, UnseenValueShare

TOKEN_PREFIX = "tok_"
PREDICTION = "prediction"
LABEL = "click"  # the label column every dataset carries (iat.schema): the model's AUC on a window is measured on it
TAG_TOKENS, TAG_FEATURES = "tokens", "features"
TAG_DAY, TAG_WINDOW = "day", "window"  # one day of the current window / the whole window
TAG_CONTROL = "control"  # the control pair: an earlier window of the log against the reference
TAG_CURRENT = "current"  # a daily point of the current window (beside the same day's control point)


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
    detail: bool = True,
) -> Snapshot:
    """An Evidently snapshot of token drift; dense tokens [N, D] or HGAQ codes [N, T, M].

    ``detail=False`` leaves out the per-dimension ``ValueDrift`` widgets (the share of drifted dimensions is still
    measured): they are most of the cost and size of a snapshot, and a dashboard point needs only the summary.
    """
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
        ]
        if detail:
            metrics += [ValueDrift(column=c, method=cfg.column_method, threshold=cfg.column_threshold) for c in cols]
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


@dataclass(frozen=True)
class FeatureLayout:
    """Which schema features enter feature drift, by group, and which are id-like (unseen-value share instead).

    A categorical with more than ``max_categories`` values in the reference (user_id, item_id, ...) has too few
    rows per value for a distribution test: two samples of the same stream would already look different. What
    does change when such a column drifts is that new ids appear, so its unseen-value share is measured.
    Computed once per monitoring run, so every daily snapshot has the same metrics (dashboard series need it).
    """

    groups: dict[str, list[str]]  # group -> columns tested for distribution drift
    numeric: list[str]
    id_columns: list[str]

    @property
    def columns(self) -> list[str]:
        return [c for cols in self.groups.values() for c in cols]

    @classmethod
    def of(cls, schema: Schema, reference: pd.DataFrame, max_categories: int) -> "FeatureLayout":
        present = [f for f in schema.features if f.name in reference.columns]
        id_like = [f.name for f in present if f.type == "categorical" and reference[f.name].nunique() > max_categories]
        groups: dict[str, list[str]] = {}
        for f in present:
            if f.name not in id_like:
                groups.setdefault(f.group, []).append(f.name)
        if not groups:
            raise ValueError("feature drift: none of the schema's features is in the frames")
        return cls(groups, [f.name for f in present if f.type == "numeric"], id_like)


def feature_drift_snapshot(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    schema: Schema,
    cfg: DriftConfig = DriftConfig(),
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
    detail: bool = True,
    layout: FeatureLayout | None = None,
) -> Snapshot:
    """An Evidently snapshot of raw-feature drift: share of drifted columns overall and per feature group, the
    unseen-value share of id-like columns, and, if both frames hold a ``prediction`` column, prediction drift.
    ``detail=False``: no per-feature ``ValueDrift`` widgets (see token drift)."""
    if len(reference) < 10 or len(current) < 10:
        raise ValueError(f"feature drift needs at least 10 rows per window, got {len(reference)} and {len(current)}")
    ref = reference.iloc[sample_rows(len(reference), cfg.sample_cap, cfg.seed)]
    cur = current.iloc[sample_rows(len(current), cfg.sample_cap, cfg.seed + 1)]
    lay = layout or FeatureLayout.of(schema, ref, cfg.max_categories)
    has_pred = PREDICTION in ref.columns and PREDICTION in cur.columns
    numeric = [c for c in lay.columns if c in lay.numeric]
    categorical = [c for c in lay.columns if c not in lay.numeric]
    num_cols = numeric + ([PREDICTION] if has_pred else [])
    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=categorical + lay.id_columns)

    def share(cols: list[str]) -> DriftedColumnsCount:
        return DriftedColumnsCount(columns=cols, num_method=cfg.column_method, num_threshold=cfg.column_threshold, drift_share=cfg.feature_share)

    metrics: list[Any] = [share(lay.columns)] + [share(cols) for cols in lay.groups.values()]
    metrics += [UnseenValueShare(column=c) for c in lay.id_columns]
    if detail:
        metrics += [ValueDrift(column=c, method=cfg.column_method, threshold=cfg.column_threshold) for c in numeric]
        # Jensen-Shannon for every categorical (Evidently's default switches to a chi-square p-value below 1,000
        # rows, which falls as drift grows): one direction per statistic, so a column compares with its control.
        metrics += [ValueDrift(column=c, method="jensenshannon", threshold=cfg.column_threshold) for c in categorical]
    if has_pred:
        metrics.append(ValueDrift(column=PREDICTION, method=cfg.column_method, threshold=cfg.prediction_threshold))
    label = LABEL if has_pred and LABEL in ref.columns and LABEL in cur.columns else None
    if label is not None and ref[label].nunique() == 2 == cur[label].nunique():
        metrics.append(AUCChange(prediction=PREDICTION, label=label))
    else:
        label = None
    keep = num_cols + categorical + lay.id_columns + ([label] if label else [])
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


def measures(token_snapshot: Snapshot | None, feature_snapshot: Snapshot | None, cfg: DriftConfig = DriftConfig(), schema: Schema | None = None) -> DriftMeasures:
    """The drift numbers read back from the snapshots (per-column statistics where the snapshot has the detail).

    ``schema`` names the group of each per-group feature share (a share over one group's columns)."""
    found: dict[str, Any] = {}
    if token_snapshot is not None:
        levels: dict[int, float] = {}
        dims: dict[str, float] = {}
        for config, value in _metric_values(token_snapshot):
            kind = _type(config)
            if kind == "DriftedColumnsCount":
                found["dim_drift_share"] = float(value["share"])
            elif kind == "DomainClassifierDrift":
                found["embedding_score"] = float(value)
            elif kind == "CodeLevelDrift":
                levels[int(config["level"])] = float(value["share"])
            elif kind == "ValueDrift":
                dims[str(config["column"])] = float(value)
        if levels:
            found["code_level_share"] = levels
        if dims:
            found["dim_stats"] = dims
    if feature_snapshot is not None:
        group_of = {f.name: f.group for f in schema.features} if schema is not None else {}
        groups: dict[str, float] = {}
        unseen: dict[str, float] = {}
        columns: dict[str, float] = {}
        for config, value in _metric_values(feature_snapshot):
            kind = _type(config)
            if kind == "DriftedColumnsCount":
                owners = {group_of.get(c) for c in config["columns"]}
                if len(owners) == 1 and None not in owners:
                    groups[owners.pop()] = float(value["share"])
                else:
                    found["feature_drift_share"] = float(value["share"])
            elif kind == "UnseenValueShare" and (schema is None or group_of.get(config["column"]) in cfg.unseen_groups):
                unseen[str(config["column"])] = float(value)
            elif kind == "AUCChange":
                found["auc_change"] = float(value)
            elif kind == "ValueDrift" and config.get("column") == PREDICTION:
                found["prediction_drift"] = float(value)
            elif kind == "ValueDrift":
                columns[str(config["column"])] = float(value)
        if groups:
            found["feature_group_share"] = groups
        if unseen:
            found["unseen_value_share"] = unseen
        if columns:
            found["column_stats"] = columns
    return DriftMeasures(**found)


def verdict(
    token_snapshot: Snapshot | None,
    feature_snapshot: Snapshot | None,
    cfg: DriftConfig = DriftConfig(),
    schema: Schema | None = None,
    control: DriftMeasures | None = None,
) -> DriftVerdict:
    """Read the drift numbers back from the snapshots and decide (``iat.drift.decide``), against ``control``
    (the numbers of the control pair) when given."""
    groups = {f.name: f.group for f in schema.features} if schema is not None else {}
    return decide(cfg, measures(token_snapshot, feature_snapshot, cfg, schema), control, groups)


@dataclass
class DriftReport:
    verdict: DriftVerdict
    snapshots: dict[str, Snapshot] = field(default_factory=dict)  # "tokens", "features" (+ "control_tokens", ...)
    control_days: tuple[int, int] | None = None  # the control window's days, where a run over a store set one

    def save_html(self, folder: str | Path, prefix: str = "") -> dict[str, Path]:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, snap in self.snapshots.items():
            paths[name] = out / f"{prefix}{name}_drift.html"
            snap.save_html(str(paths[name]))
        return paths


@dataclass(frozen=True)
class Window:
    """One window of a drift comparison: its tokens and, for feature drift, its instance rows."""

    tokens: Any
    rows: pd.DataFrame | None = None


def _snapshots(
    reference: Window, current: Window, cfg: DriftConfig, schema: Schema | None, timestamp: dt.datetime | None,
    tags: Sequence[str], detail: bool, layout: FeatureLayout | None,
) -> dict[str, Snapshot]:
    snaps = {TAG_TOKENS: token_drift_snapshot(reference.tokens, current.tokens, cfg, timestamp, tags, detail=detail)}
    if reference.rows is not None and current.rows is not None:
        if schema is None:
            raise ValueError("feature drift needs the schema of the instance rows")
        snaps[TAG_FEATURES] = feature_drift_snapshot(reference.rows, current.rows, schema, cfg, timestamp, tags, detail=detail, layout=layout)
    return snaps


def drift_report(
    reference_tokens: Any,
    current_tokens: Any,
    cfg: DriftConfig = DriftConfig(),
    reference_rows: pd.DataFrame | None = None,
    current_rows: pd.DataFrame | None = None,
    schema: Schema | None = None,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    detail: bool = True,
    layout: FeatureLayout | None = None,
    control: Window | None = None,
) -> DriftReport:
    """Token drift, plus raw-feature / prediction drift when the windows' instance rows and schema are given.

    ``control``: an earlier window of the same log; the control pair (control -> reference) is measured the same
    way, always in detail, and the verdict judges the current window against it (``iat.drift.decide``). Its
    snapshots are kept as ``control_tokens`` / ``control_features``."""
    ref, cur = Window(reference_tokens, reference_rows), Window(current_tokens, current_rows)
    snaps = _snapshots(ref, cur, cfg, schema, timestamp, tags, detail, layout)
    ctl: DriftMeasures | None = None
    if control is not None:
        ctl_snaps = _snapshots(control, ref, cfg, schema, timestamp, (*tags, TAG_CONTROL), True, layout)
        ctl = measures(ctl_snaps[TAG_TOKENS], ctl_snaps.get(TAG_FEATURES), cfg, schema)
        snaps.update({f"{TAG_CONTROL}_{k}": v for k, v in ctl_snaps.items()})
    return DriftReport(verdict(snaps[TAG_TOKENS], snaps.get(TAG_FEATURES), cfg, schema, ctl), snaps)
