"""Evidently snapshots of an A/B test: one ``daily`` snapshot (that day's impressions) and one ``cumulative``
snapshot (every impression so far) per day, each with CTR / CVR / revenue per impression per arm, the uplift of
each rate with its per-user bootstrap CI, and the sample-ratio test."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot

from iat.abtest import ARMS, METRICS, ABResult
from iat.data.synthetic_world import DAY
from monitoring.metrics import ArmRate, ArmUplift, SampleRatio

TAG_DAILY, TAG_CUMULATIVE = "daily", "cumulative"
_COLUMNS = ["user_id", "arm", "day", "impression", "click", "conversion", "revenue"]


def _report(result: ABResult) -> Report:
    cfg = result.config
    metrics: list[Any] = [ArmRate(arm=arm, rate=rate) for rate in METRICS for arm in ARMS]
    metrics += [ArmUplift(rate=rate, n_boot=cfg.n_boot, alpha=cfg.alpha, seed=cfg.seed) for rate in METRICS]
    metrics.append(SampleRatio(treatment_share=cfg.treatment_share))
    return Report(metrics, include_tests=False)


def _dataset(rows: pd.DataFrame) -> Dataset:
    definition = DataDefinition(
        numerical_columns=["impression", "click", "conversion", "revenue", "day"], categorical_columns=["arm"], id_column="user_id"
    )
    return Dataset.from_pandas(rows[_COLUMNS].reset_index(drop=True), data_definition=definition)


def day_timestamp(start_ts: int, day: int) -> dt.datetime:
    """UTC midnight of ``day`` days after the log's first day (snapshots are placed in time by it)."""
    return dt.datetime.fromtimestamp(start_ts - start_ts % DAY + day * DAY, tz=dt.timezone.utc).replace(tzinfo=None)


def ab_snapshots(result: ABResult, start_ts: int, name: str = "ab") -> list[Snapshot]:
    """Per day of the test: its daily snapshot, then its cumulative one (2 x days snapshots)."""
    imp = result.impressions
    report = _report(result)
    out = []
    for day in sorted(imp["day"].unique()):
        ts = day_timestamp(start_ts, int(day))
        meta = {"experiment": name, "day": str(int(day))}
        for tag, rows in ((TAG_DAILY, imp[imp["day"] == day]), (TAG_CUMULATIVE, imp[imp["day"] <= day])):
            out.append(report.run(_dataset(rows), None, timestamp=ts, tags=[tag, name], metadata=meta, name=f"{name} {tag} day {int(day)}"))
    return out
