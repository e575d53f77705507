"""Side-info columns of token rows: validation and the on-disk encodings.

Stored per row: ``ts``, ``instance_id``, ``item_id``, ``category`` (int64), ``domain`` (int16 code into the
manifest's append-only vocabulary), ``click`` (int8 0/1), ``conversion`` (int8: 1, 0, or -1 = none / null),
``conversion_ts`` (int64: when the conversion label became known; NEVER = it never did).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NEVER = np.iinfo(np.int64).max  # conversion_ts of a label that is never known
CONVERSION_NONE = -1  # stored conversion of a row without a conversion label (no click, or null)
MAX_DOMAINS = int(np.iinfo(np.int16).max)

# columns stored one value per row, with their on-disk dtypes (tokens are stored separately)
ROW_COLUMNS: dict[str, type[np.generic]] = {
    "ts": np.int64,
    "instance_id": np.int64,
    "domain": np.int16,
    "item_id": np.int64,
    "category": np.int64,
    "click": np.int8,
    "conversion": np.int8,
    "conversion_ts": np.int64,
}


def int_column(name: str, x: Any, n: int, fill: int | None = None) -> np.ndarray:
    """int64 column; nulls become ``fill``, or are an error when ``fill`` is None."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
        out = x.astype(np.int64, copy=False)
    else:
        s = pd.Series(x).reset_index(drop=True) if not isinstance(x, pd.Series) else x.reset_index(drop=True)
        if fill is None and s.isna().any():
            raise ValueError(f"{name}: {int(s.isna().sum())} null values; every row needs one")
        try:
            out = s.astype("Int64").to_numpy(dtype=np.int64, na_value=0 if fill is None else fill)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: values must be integers ({e})") from e
    if out.ndim != 1 or len(out) != n:
        raise ValueError(f"{name}: expected a 1-d column of {n} rows, got shape {np.shape(out)}")
    return out


def encode_domains(domain: Any, n: int, vocab: list[str]) -> tuple[np.ndarray, list[str]]:
    """Domain strings -> int16 codes; new domains extend the vocabulary at its end so old codes never change."""
    s = pd.Series(domain).reset_index(drop=True) if not isinstance(domain, pd.Series) else domain.reset_index(drop=True)
    if len(s) != n:
        raise ValueError(f"domain: expected {n} rows, got {len(s)}")
    if s.isna().any():
        raise ValueError(f"domain: {int(s.isna().sum())} null values")
    values = s.astype(str).to_numpy()
    uniq = np.unique(values)
    new_vocab = list(vocab) + [d for d in uniq.tolist() if d not in set(vocab)]
    if len(new_vocab) > MAX_DOMAINS:
        raise ValueError(f"domain: {len(new_vocab)} distinct domains, at most {MAX_DOMAINS} are supported")
    code_of = {d: i for i, d in enumerate(new_vocab)}
    codes = np.array([code_of[d] for d in uniq.tolist()], dtype=np.int16)
    return codes[np.searchsorted(uniq, values)], new_vocab


def prepare_rows(
    *,
    user_id: Any,
    ts: Any,
    instance_id: Any,
    domain: Any,
    item_id: Any,
    category: Any,
    click: Any,
    conversion: Any,
    conversion_ts: Any,
    domains: list[str],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Validate one batch of rows; returns the columns (plus ``user_id``) and the extended domain vocabulary."""
    n = len(user_id)
    cols: dict[str, np.ndarray] = {
        "user_id": int_column("user_id", user_id, n),
        "ts": int_column("ts", ts, n),
        "instance_id": int_column("instance_id", instance_id, n),
        "item_id": int_column("item_id", item_id, n),
        "category": np.full(n, -1, np.int64) if category is None else int_column("category", category, n),
    }
    cols["domain"], vocab = encode_domains(domain, n, domains)
    iid = cols["instance_id"]
    if len(np.unique(iid)) != n:
        u, c = np.unique(iid, return_counts=True)
        raise ValueError(f"instance_id: {int((c > 1).sum())} ids repeat (e.g. {u[c > 1][:5].tolist()})")
    clk = int_column("click", click, n)
    if not np.isin(clk, (0, 1)).all():
        raise ValueError(f"click: values must be 0/1, got {np.unique(clk)[:10].tolist()}")
    cols["click"] = clk.astype(np.int8)
    conv = np.full(n, CONVERSION_NONE, np.int64) if conversion is None else int_column(
        "conversion", conversion, n, fill=CONVERSION_NONE
    )
    if not np.isin(conv, (CONVERSION_NONE, 0, 1)).all():
        raise ValueError(f"conversion: values must be 0/1 or null, got {np.unique(conv)[:10].tolist()}")
    cols["conversion"] = conv.astype(np.int8)
    cts = np.full(n, NEVER, np.int64) if conversion_ts is None else int_column(
        "conversion_ts", conversion_ts, n, fill=NEVER
    )
    early = cts < cols["ts"]
    if early.any():
        raise ValueError(f"conversion_ts: {int(early.sum())} rows have a conversion known before the instance ts")
    cols["conversion_ts"] = cts
    return cols, vocab


def sort_rows(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Order rows by (user, ts, instance_id): the fetch order, with a total order on ts ties."""
    order = np.lexsort((cols["instance_id"], cols["ts"], cols["user_id"]))
    if (order == np.arange(len(order))).all():
        return cols
    return {k: v[order] for k, v in cols.items()}
