"""Cross features from the past only: counts and sums over a key's earlier instances.

"Earlier" means strictly earlier timestamp: instances that share a timestamp do not see each other, the
same rule the token store's fetch applies, so a cross feature never knows more than a fetched history.
A value may also become known later than its row (a delayed conversion label): ``past_sum(..., known_at=...)``
counts a row's value only once its known-at time is strictly before the reading row's ts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def past_sum(df: pd.DataFrame, keys: list[str], value: str | None = None, known_at: str | None = None) -> np.ndarray:
    """For each row, the sum of ``value`` (a count when None) over rows with the same ``keys`` whose ``known_at``
    time (default: their ``ts``) is strictly smaller than this row's ``ts``. Rows whose ``known_at`` or ``value``
    is null count nothing. Any row order; returns values in ``df``'s order."""
    n = len(df)
    if n == 0:
        return np.zeros(0)
    code = df.groupby(keys, sort=False, dropna=False).ngroup().to_numpy(np.int64)
    ts = df["ts"].to_numpy(np.int64)
    v = np.ones(n) if value is None else pd.to_numeric(df[value]).to_numpy(np.float64, na_value=np.nan)
    at = ts if known_at is None else pd.to_numeric(df[known_at]).to_numpy(np.float64, na_value=np.nan)
    counted = ~np.isnan(v) & ~np.isnan(np.asarray(at, np.float64))
    ev_code, ev_at, ev_v = code[counted], np.asarray(at[counted], np.int64), v[counted]
    # one sorted axis of (key, time): a reading row's sum is a difference of two prefix sums on it
    t0 = min(int(ts.min()), int(ev_at.min()) if len(ev_at) else int(ts.min()))
    span = max(int(ts.max()), int(ev_at.max()) if len(ev_at) else 0) - t0 + 2
    ev_key = ev_code * span + (ev_at - t0)
    order = np.argsort(ev_key, kind="stable")
    ev_key, prefix = ev_key[order], np.concatenate([[0.0], np.cumsum(ev_v[order])])
    upto = np.searchsorted(ev_key, code * span + (ts - t0), side="left")  # events of smaller keys, or earlier
    start = np.searchsorted(ev_key, code * span, side="left")  # events of smaller keys
    return prefix[upto] - prefix[start]


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
