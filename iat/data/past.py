"""Cross features from the past only: counts and sums over a user's earlier instances.

"Earlier" means strictly earlier timestamp: instances that share a timestamp do not see each other, the
same rule the token store's fetch applies, so a cross feature never knows more than a fetched history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def past_sum(df: pd.DataFrame, keys: list[str], value: str | None = None) -> np.ndarray:
    """For each row, the sum of ``value`` (a count when None) over rows with the same ``keys`` and smaller ``ts``.

    ``df`` must be sorted by ``keys[0]`` then ``ts`` (any order within ties); returns values in ``df``'s order.
    """
    v = np.ones(len(df), dtype=np.float64) if value is None else df[value].to_numpy(dtype=np.float64)
    g = df[keys].copy()
    g["_v"] = v
    inclusive = g.groupby(keys, sort=False)["_v"].cumsum().to_numpy()
    exclusive = inclusive - v
    # Rows tied on ts take the value of the first row of their tie group: none of them sees another.
    g["_ex"] = exclusive
    g["ts"] = df["ts"].to_numpy()
    return g.groupby(keys + ["ts"], sort=False)["_ex"].transform("first").to_numpy()


def seconds_since_previous(df: pd.DataFrame, key: str = "user_id") -> np.ndarray:
    """Seconds since the same ``key``'s previous instance with a strictly smaller ts; -1 for the first one."""
    ts = df["ts"].to_numpy()
    firsts = df.groupby([key, "ts"], sort=False).ngroup().to_numpy()
    # Distinct (key, ts) groups in sorted order; the previous group of the same key holds the previous ts.
    grp = pd.DataFrame({"k": df[key].to_numpy(), "ts": ts, "g": firsts}).drop_duplicates("g")
    prev = grp.groupby("k", sort=False)["ts"].shift(1)
    prev_by_group = pd.Series(prev.to_numpy(), index=grp["g"].to_numpy())
    prev_ts = prev_by_group.reindex(firsts).to_numpy()
    return np.where(np.isnan(prev_ts), -1.0, ts - np.nan_to_num(prev_ts))
