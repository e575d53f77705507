"""Great Expectations suites built from a Schema: what a valid instance log looks like.

Two suites, run one after the other (see ``quality.validate``):

- the *type* suite runs on the log as read: required/declared columns exist, each column's dtype fits
  its kind (a whole-column failure stops the run), and every value of a text-typed numeric column looks
  like a number of the right kind (a row-level failure quarantines the row);
- the *value* suite runs on the rows that passed, with numeric columns parsed: non-null ids and ts,
  unique ``instance_id``, labels in {0,1}, a conversion label only where click=1, ``conversion_ts`` only with a
  conversion and ``>= ts``, ts (and conversion_ts) inside the declared range or by default in seconds before 2100
  (``iat.schema``), numeric features finite.

Every expectation carries ``meta``: ``description`` (for people) and ``level`` (``row`` = failing rows are
quarantined, ``table`` = a failure fails the run), and ``reads`` where a row condition reads other columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from great_expectations import ExpectationSuite
import great_expectations.expectations as gxe
from great_expectations.expectations.row_conditions import Column

from iat.schema import LABEL_RULES, OPTIONAL_LABEL_COLUMNS, REQUIRED_COLUMNS, Schema

# Column kinds: int (int64 ids, seconds), label (0/1), str (domain), float (numeric feature),
# categorical (int or str; no value checks).
NUMERIC_KINDS: tuple[str, ...] = ("int", "label", "float")
NOT_NULL_COLUMNS: tuple[str, ...] = ("instance_id", "user_id", "item_id", "ts", "domain", "click")

# Values of a text-typed column that parse as the kind. Integers: up to 18 digits so they fit int64,
# optionally written as "12.0". The same pattern checks a float-typed integer column through
# ``str(value)``: "1.5" and "1e+16" (floats that large are past exact integers) fail it.
INT_PATTERN = r"^\s*[+-]?\d{1,18}(?:\.0*)?\s*$"
FLOAT_PATTERN = r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$|^\s*[+-]?(?i:inf|infinity)\s*$"

# Non-text dtypes a numeric kind accepts (names as GX's expect_column_values_to_be_in_type_list reads them).
_INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
_FLOAT_DTYPES = ["float16", "float32", "float64"]
_NULLABLE_DTYPES = ["Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype", "UInt8Dtype", "UInt16Dtype",
                    "UInt32Dtype", "UInt64Dtype", "Float32Dtype", "Float64Dtype"]
ALLOWED_DTYPES: dict[str, list[str]] = {
    "int": _INT_DTYPES + _FLOAT_DTYPES + _NULLABLE_DTYPES,
    "label": _INT_DTYPES + _FLOAT_DTYPES + _NULLABLE_DTYPES + ["bool", "BooleanDtype"],
    "float": _INT_DTYPES + _FLOAT_DTYPES + _NULLABLE_DTYPES + ["bool", "BooleanDtype"],
    "str": ["StringDtype"],
}
# A numeric feature must survive the cast to float32: |x| above this becomes inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def column_kinds(schema: Schema) -> dict[str, str]:
    """Kind of every column the contract knows: required, optional labels, declared features."""
    kinds = {f.name: ("float" if f.type == "numeric" else "categorical") for f in schema.features}
    kinds.update(OPTIONAL_LABEL_COLUMNS)
    kinds.update(REQUIRED_COLUMNS)  # a feature named user_id/item_id is still an id
    return kinds


def is_text(dtype: Any) -> bool:
    return dtype == object or isinstance(dtype, pd.StringDtype)


def needs_value_parse(kind: str, dtype: Any) -> bool:
    """True when the column's values (not just its dtype) must be checked to be numbers of the kind."""
    if kind not in NUMERIC_KINDS:
        return False
    return is_text(dtype) or (kind == "int" and pd.api.types.is_float_dtype(dtype))


def expectation_columns(kwargs: dict[str, Any]) -> tuple[str, ...]:
    return tuple(kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs)


def expectation_label(cfg: Any) -> str:
    """'expect_x(col)' or 'expect_x(col_a, col_b)': the name a quarantined row's reason carries."""
    return f"{cfg.type}({', '.join(expectation_columns(cfg.kwargs))})"


def build_type_suite(schema: Schema, df: pd.DataFrame) -> ExpectationSuite:
    """Existence and dtype expectations for the log as read (dtype-dependent: text columns get value checks)."""
    kinds = column_kinds(schema)
    expected = schema.columns() + [c for c in OPTIONAL_LABEL_COLUMNS if c in df.columns]
    exps: list[gxe.Expectation] = [
        gxe.ExpectColumnToExist(column=c, meta=_meta(f"column '{c}' is present", "table")) for c in expected
    ]
    for col in expected:
        if col not in df.columns:
            continue
        kind, dtype = kinds[col], df[col].dtype
        if kind == "categorical":
            continue
        if kind == "str" and dtype == object:
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(
                column=col, type_list=["str"], meta=_meta(f"'{col}' values are strings", "row")))
            continue
        if not is_text(dtype):
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(
                column=col, type_list=ALLOWED_DTYPES[kind],
                meta=_meta(f"dtype of '{col}' can hold {_KIND_WORDS[kind]}", "table")))
        if needs_value_parse(kind, dtype):
            pattern = FLOAT_PATTERN if kind == "float" else INT_PATTERN
            exps.append(gxe.ExpectColumnValuesToMatchRegex(
                column=col, regex=pattern, meta=_meta(f"'{col}' values are {_KIND_WORDS[kind]}", "row")))
    return ExpectationSuite(name=f"{schema.name}.types", expectations=exps)


def build_value_suite(schema: Schema, columns: list[str]) -> ExpectationSuite:
    """Value expectations for the parsed log; ``columns`` are those present (optional labels may be absent)."""
    present = set(columns)
    exps: list[gxe.Expectation] = [
        gxe.ExpectColumnValuesToNotBeNull(column=c, meta=_meta(f"'{c}' is not null", "row"))
        for c in NOT_NULL_COLUMNS
    ]
    exps.append(gxe.ExpectColumnValuesToBeUnique(
        column="instance_id",
        meta=_meta("'instance_id' is unique (the first row of a repeated id is kept, later ones quarantined)",
                   "row")))
    exps.append(gxe.ExpectColumnValuesToBeInSet(
        column="click", value_set=[0, 1], meta=_meta(LABEL_RULES["click"], "row")))
    lo, hi = schema.ts_range  # the schema's range, or the default that catches ms / us timestamps
    declared = "declared" if (schema.ts_min, schema.ts_max) != (None, None) else "default (seconds, before 2100)"
    for col in ("ts", "conversion_ts") if "conversion_ts" in present else ("ts",):
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column=col, min_value=lo, max_value=hi, meta=_meta(f"'{col}' inside the {declared} range [{lo}, {hi}]", "row")))
    if "conversion" in present:
        exps.append(gxe.ExpectColumnValuesToBeInSet(
            column="conversion", value_set=[0, 1], meta=_meta("'conversion' is 0, 1 or null", "row")))
        # Where a conversion label is given, the row must be clicked: (click, conversion) in {(1, 0), (1, 1)}.
        exps.append(gxe.ExpectColumnPairValuesToBeInSet(
            column_A="click", column_B="conversion", value_pairs_set=[(1, 0), (1, 1)], ignore_row_if="either_value_is_missing",
            meta=_meta(LABEL_RULES["conversion"], "row")))
    if "conversion_ts" in present:
        exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="conversion_ts", column_B="ts", or_equal=True, ignore_row_if="either_value_is_missing",
            meta=_meta(LABEL_RULES["conversion_ts"], "row")))
        exps.append(gxe.ExpectColumnValuesToBeNull(  # no conversion label: no conversion time
            column="conversion_ts", row_condition=Column("conversion").is_null() if "conversion" in present else None,
            meta={**_meta(LABEL_RULES["conversion_ts"], "row"), "reads": ["conversion"] if "conversion" in present else []}))
    for c in schema.numeric:
        if c in REQUIRED_COLUMNS:
            continue
        # Finite = not NaN (GX map expectations skip nulls, so NaN needs its own expectation) and
        # inside the float32 range (catches +-inf and values that would overflow to inf as float32).
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=c, meta=_meta(f"'{c}' is not NaN", "row")))
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column=c, min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX,
            meta=_meta(f"'{c}' is finite as float32 (no +-inf)", "row")))
    return ExpectationSuite(name=f"{schema.name}.values", expectations=exps)


_KIND_WORDS = {"int": "integers", "label": "0/1 integers", "float": "numbers", "str": "strings"}


def _meta(description: str, level: str) -> dict[str, str]:
    return {"description": description, "level": level}
