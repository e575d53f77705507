"""A tiny instance log that follows the contract, for tests that break it one way at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from iat.schema import Feature, Schema

TS0 = 1_700_000_000


def contract_schema() -> Schema:
    return Schema(
        name="tiny",
        features=(
            Feature("category", "item", "categorical"),
            Feature("device", "context", "categorical"),
            Feature("price", "item", "numeric"),
            Feature("score", "cross", "numeric"),
        ),
        ts_min=TS0,
        ts_max=TS0 + 10_000_000,
        category_column="category",
    )


def contract_log(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, Schema]:
    """``n`` valid rows: every check passes; conversion is null where click=0."""
    rng = np.random.default_rng(seed)
    click = (np.arange(n) % 3 == 0).astype(np.int64)
    conversion = pd.array(np.where(click == 1, np.arange(n) % 2, 0), dtype="Int8")
    conversion[click == 0] = pd.NA
    ts = TS0 + 100 * np.arange(n, dtype=np.int64)
    conversion_ts = pd.array(ts + 50, dtype="Int64")
    conversion_ts[~(conversion == 1).fillna(False).to_numpy(dtype=bool)] = pd.NA
    df = pd.DataFrame({
        "instance_id": np.arange(n, dtype=np.int64) + 1000,
        "user_id": rng.integers(0, 5, n),
        "item_id": rng.integers(0, 50, n),
        "ts": ts,
        "domain": np.where(np.arange(n) % 2 == 0, "ads", "mall").astype(object),
        "click": click,
        "conversion": conversion,
        "conversion_ts": conversion_ts,
        "category": rng.integers(0, 4, n),
        "device": np.array(["ios", "android"], dtype=object)[np.arange(n) % 2],
        "price": rng.uniform(1, 100, n),
        "score": rng.normal(size=n).astype(np.float32),
    })
    return df, contract_schema()
