"""Time split per domain: train / valid / test = first 80% / next 10% / last 10% of each domain's time range."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iat.schema import SPLIT_COLUMN, SPLITS


def time_split(df: pd.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> pd.Series:
    """Label each row train/valid/test by where its ts falls in its domain's [min, max] time range.

    Splitting by time range (not by row count) matches how a model is trained on the past and served later.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    g = df.groupby("domain")["ts"]
    lo, hi = g.transform("min").to_numpy(np.float64), g.transform("max").to_numpy(np.float64)
    pos = (df["ts"].to_numpy(np.float64) - lo) / np.maximum(hi - lo, 1.0)
    c1, c2 = fractions[0], fractions[0] + fractions[1]
    idx = np.where(pos < c1, 0, np.where(pos < c2, 1, 2))
    return pd.Series(np.array(SPLITS, dtype=object)[idx], index=df.index, name=SPLIT_COLUMN)


def add_split(df: pd.DataFrame, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> pd.DataFrame:
    out = df.copy()
    out[SPLIT_COLUMN] = time_split(df, fractions)
    return out


def split_counts(df: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rows per (domain, split), for logs and reports."""
    t = df.groupby(["domain", SPLIT_COLUMN]).size()
    return {d: {s: int(t.get((d, s), 0)) for s in SPLITS} for d in sorted(df["domain"].unique())}
