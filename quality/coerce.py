"""Dtype conversions around the value checks.

``parse_columns`` runs after the type suite, on rows whose values all parse: text numbers become numbers
(nulls stay null) so the value suite can compare them. ``to_contract_dtypes`` runs on the clean rows only,
which passed every check, so each cast is exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quality.suite import is_text


def parse_columns(frame: pd.DataFrame, kinds: dict[str, str], columns: list[str]) -> pd.DataFrame:
    """The int/label/float ``columns`` parsed to numpy int64 (no nulls), Int64 (nulls) or float64; others as is."""
    return _frame({c: _parse(kinds[c], frame[c]) for c in columns})


def _parse(kind: str, s: pd.Series) -> pd.Series:
    if kind in ("int", "label"):
        return _parse_int(s, kind)
    return _parse_float(s) if kind == "float" else s


def to_contract_dtypes(columns: dict[str, pd.Series], kinds: dict[str, str]) -> pd.DataFrame:
    """A fresh frame in clean-output dtypes: ids/ts int64, click int8, conversion Int8, conversion_ts Int64,
    numeric features float32, categorical features int64 (integers) or str, domain str; others as is."""
    return _frame({c: _contract(c, kinds.get(c), s) for c, s in columns.items()})


def _frame(columns: dict[str, pd.Series]) -> pd.DataFrame:
    """A RangeIndex frame from same-length columns, without the extra copy pandas makes of a dict."""
    arrays = {c: s.to_numpy() if isinstance(s.dtype, np.dtype) else s.array for c, s in columns.items()}
    return pd.DataFrame(arrays, copy=False)


def _contract(col: str, kind: str | None, s: pd.Series) -> pd.Series:
    if col == "click":
        return s.astype("int8", copy=False)
    if col == "conversion":
        return s.astype("Int8", copy=False)
    if col == "conversion_ts":
        return s.astype("Int64", copy=False)
    if kind == "int":
        return s.astype("int64", copy=False)
    if kind == "float":
        return s.astype("float32", copy=False)
    if kind == "str":
        return s.astype(object, copy=False)
    if kind == "categorical":
        return _categorical(s)
    return s


def _parse_int(s: pd.Series, kind: str) -> pd.Series:
    if is_text(s.dtype):
        # Values matched INT_PATTERN ("12", " -3 ", "7.000"): strip the zero fraction, parse exactly.
        notna = s.notna().to_numpy()
        text = s[notna].astype(str).str.strip().str.replace(r"\.0*$", "", regex=True)
        values = np.zeros(len(s), dtype=np.int64)
        values[notna] = text.astype("int64").to_numpy()
        return pd.Series(pd.arrays.IntegerArray(values, ~notna), index=s.index, name=s.name)
    if kind == "label" and pd.api.types.is_float_dtype(s.dtype):
        return _float64(s)  # keeps 0.5 or inf visible to the value suite, which flags them
    # Integer kinds held as floats passed the integral-value check, so this cast is exact.
    return s.astype("Int64") if s.isna().any() else s.astype("int64", copy=False)


def _parse_float(s: pd.Series) -> pd.Series:
    # Text values matched FLOAT_PATTERN, which pd.to_numeric accepts (spaces, exponents, inf).
    return _float64(pd.to_numeric(s) if is_text(s.dtype) else s)


def _float64(s: pd.Series) -> pd.Series:
    return pd.Series(s.to_numpy(dtype="float64", na_value=np.nan), index=s.index, name=s.name)


def _categorical(s: pd.Series) -> pd.Series:
    inferred = pd.api.types.infer_dtype(s, skipna=True)
    if inferred in ("integer", "boolean") or (inferred == "floating" and _exact_integers(s)):
        return s.astype("Int64") if s.isna().any() else s.astype("int64", copy=False)
    if inferred == "string":
        return s.astype(object)
    # Mixed or non-integral values: a category is a label, so keep each value's text; nulls stay null.
    return s.map(str, na_action="ignore").astype(object)


def _exact_integers(s: pd.Series) -> bool:
    v = s.dropna().to_numpy(dtype="float64")
    return bool(np.all(np.abs(v) < 2**53) and np.all(v == np.floor(v)))
