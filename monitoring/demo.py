"""Drift you can see happen: a synthetic log whose world changes on a given day, tokens from a temporal source
model trained before the change, and both monitoring jobs run into a workspace (what the README screenshots show).

The token store and dataset are written here directly; in the product they come from the tokens pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from iat.abtest import ABConfig
from iat.data.io import write_dataset
from iat.data.synthetic import generate
from iat.data.synthetic_world import DAY, Shift
from iat.drift import DriftConfig
from iat.features import FeatureEncoder
from iat.models.batching import RowBatches, frame_batch
from iat.models.temporal import TemporalSourceModel
from iat.schema import Schema
from iat.tokens import write_store
from iat.train import TrainConfig, fit, seed_everything
from monitoring.run import run_ab, run_drift

TINY_SOURCE = {"hidden": [64, 64], "d_group": 32, "cross_layers": 1, "cross_rank": 32}


def day_window(df: pd.DataFrame, start: int, end: int) -> pd.DataFrame:
    """Rows on days [start, end) counted from the log's first UTC day."""
    first = int(df["ts"].min()) // DAY * DAY
    return df[(df["ts"] >= first + start * DAY) & (df["ts"] < first + end * DAY)].reset_index(drop=True)


@dataclass
class TinySource:
    """A small temporal source model and its encoder: rows -> tokens, rows -> pCTR."""

    model: TemporalSourceModel
    encoder: FeatureEncoder

    def _batch(self, df: pd.DataFrame) -> dict[str, torch.Tensor]:
        return frame_batch(self.encoder.transform(df))

    def tokens(self, df: pd.DataFrame) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode(self._batch(df)).numpy()

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        with torch.no_grad():
            return self.model.predict(self._batch(df))["p"].numpy()


def train_tiny_source(train: pd.DataFrame, valid: pd.DataFrame, schema: Schema, epochs: int = 1, seed: int = 0) -> TinySource:
    """A temporal source model small enough for tests and demos (one epoch on a few tens of thousands of rows)."""
    enc = FeatureEncoder.fit(train, schema)
    seed_everything(seed)  # the initial weights too: the same data and seed give the same tokens in any process
    model = TemporalSourceModel(enc, TINY_SOURCE)
    cfg = TrainConfig(epochs=epochs, progress=False, seed=seed)
    fit(model, RowBatches(enc.transform(train), 512, seed), RowBatches(enc.transform(valid), 4096, seed), cfg)
    return TinySource(model, enc)


def build_demo(
    workspace: str | Path,
    work_dir: str | Path,
    reports_dir: str | Path = "reports/monitoring",
    users: int = 600,
    seed: int = 0,
    shift_kind: str = "catalogue",
    ab_users: int = 2_000,
    log: Callable[[str], None] = print,
    control: str = "ranker:base",
    treatment: str = "ranker:iat",
) -> None:
    """Days 0..89 with the world shifting on day 60. The source model trains on days 18..38 (valid 39..45); the
    reference is its last training week (32..38); the current window is days 45..73 (two quiet weeks, then two
    weeks after the shift), each daily point covering the week up to its day. Then a 14-day A/B test of ``control``
    against ``treatment`` (scorer specs of ``iat.abtest_scorers``; by default the base ranker and the +IAT ranker)."""
    days, shift_day = 90, 60
    df, schema = generate(users, seed=seed, days=days, progress=False, shift=Shift(at=shift_day / days, kind=shift_kind))
    log(f"log: {len(df):,} rows of {users} users; the world changes ({shift_kind}) on day {shift_day}")
    src = train_tiny_source(day_window(df, 18, 39), day_window(df, 39, 46), schema, seed=seed)
    work = Path(work_dir)
    tokens = src.tokens(df)
    store = write_store(
        work / "store", user_id=df["user_id"], ts=df["ts"], instance_id=df["instance_id"], domain=df["domain"],
        item_id=df["item_id"], category=df["category"], click=df["click"], conversion=df["conversion"],
        conversion_ts=df["conversion_ts"], tokens=tokens, kind="dense", dtype="fp16",
        source={"model": "temporal", "version": "demo", "run_id": "demo", "config_hash": "demo"}, overwrite=True,
    )
    data = write_dataset(work / "data", df.assign(prediction=src.predict(df)), schema)
    report, paths, added = run_drift(store, (32, 39), (45, 74), data, DriftConfig(), workspace, reports_dir)
    log(f"drift: {report.verdict.action} ({'; '.join(report.verdict.reasons)}); {added} snapshots; reports {sorted(map(str, paths.values()))}")
    result, html, added = run_ab(ab_users, seed, ABConfig(start_day=30, days=14), control, treatment, workspace, reports_dir, progress=False)
    ctr = result.summary["ctr"]
    log(f"A/B ({control} vs {treatment}): CTR uplift {ctr.uplift:+.2%} [{ctr.lo:+.2%}, {ctr.hi:+.2%}]; {added} snapshots; report {html}")
