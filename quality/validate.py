"""Validate an instance log with Great Expectations: clean rows out, bad rows quarantined with reasons.

Flow: (1) the type suite runs on the log as read. A table-level failure (missing column, a dtype that is
not the column's kind, a text column in which no value parses) raises ``ValidationError`` naming the
columns; a row whose value does not parse is quarantined. (2) The remaining rows are parsed and the value
suite runs on them; every failing row is quarantined with the labels of all value expectations it
failed. Rows quarantined in (1) are not checked in (2), and uniqueness is judged among rows that reached
(2): of a repeated ``instance_id`` the first row (input order) is kept and later ones are quarantined.

Quarantine is taken straight from GX's ``unexpected_index_list`` (result format COMPLETE); the only rule
applied on top is keep-first for duplicates, cross-checked against pandas. Every input row ends up in
exactly one of clean / quarantine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iat.schema import Schema
from quality.coerce import parse_columns, to_contract_dtypes
from quality.gx_run import Outcome, run_suite
from quality.result import (
    INPUT_ROW,
    REASON_SEP,
    REASONS_COLUMN,
    QuarantineThresholdError,
    ValidationError,
    ValidationResult,
)
from quality.suite import build_type_suite, build_value_suite, column_kinds

UNIQUE_LABEL = "expect_column_values_to_be_unique(instance_id)"


def validate_log(df: pd.DataFrame, schema: Schema, max_quarantine_share: float = 0.05) -> ValidationResult:
    """Split ``df`` into clean rows (contract dtypes) and quarantined rows (input values + ``reasons``).

    Raises ``ValidationError`` on table-level failures and ``QuarantineThresholdError`` (carrying the full
    result, so the quarantine can still be written) when more than ``max_quarantine_share`` of the rows
    were quarantined.
    """
    if not 0.0 <= max_quarantine_share <= 1.0:
        raise ValueError(f"max_quarantine_share must be in [0, 1], got {max_quarantine_share}")
    result, _ = validate_part(df, schema, max_quarantine_share)
    if not result.passed:
        raise QuarantineThresholdError(result)
    return result


def validate_part(
    df: pd.DataFrame, schema: Schema, max_quarantine_share: float = 1.0, earlier_ids: np.ndarray | None = None
) -> tuple[ValidationResult, np.ndarray]:
    """``validate_log`` without the threshold, for one part of a log validated part by part.

    ``earlier_ids``: instance ids of earlier parts' rows that reached the value suite; a row repeating one
    is a later duplicate, as if the parts were one log. Also returns this part's such ids, for later parts.
    """
    if len(df) == 0:
        raise ValidationError("the instance log has no rows")
    dupes = sorted(set(df.columns[df.columns.duplicated()]))
    if dupes:
        raise ValidationError(f"columns appear more than once: {dupes}")
    raw = _positional(df)  # positions = input rows; GX also needs this index
    kinds = column_kinds(schema)

    type_outcomes = run_suite(raw, build_type_suite(schema, raw))
    _raise_table_failures(type_outcomes, raw)
    type_bad = _failing_rows(type_outcomes)

    type_mask = np.zeros(len(raw), dtype=bool)
    for r in type_bad.values():
        type_mask[r] = True
    keep = np.flatnonzero(~type_mask)
    rows = raw if len(keep) == len(raw) else _positional(raw.iloc[keep])
    value_cols = [c for c in raw.columns if kinds.get(c, "categorical") != "categorical"]
    parsed = parse_columns(rows, kinds, value_cols)
    value_outcomes = run_suite(parsed, build_value_suite(schema, value_cols))
    value_bad = {label: keep[r] for label, r in _failing_rows(value_outcomes).items()}
    ids = parsed["instance_id"]
    if UNIQUE_LABEL in value_bad:
        value_bad[UNIQUE_LABEL] = _later_duplicates(ids, keep, value_bad[UNIQUE_LABEL])
    if earlier_ids is not None and len(earlier_ids):
        again = keep[np.flatnonzero(ids.isin(earlier_ids).to_numpy())]
        if len(again):
            value_bad[UNIQUE_LABEL] = np.union1d(value_bad.get(UNIQUE_LABEL, np.zeros(0, np.int64)), again)
            # suite order, so a row's reasons read as they would for the whole log
            value_bad = {o.label: value_bad[o.label] for o in value_outcomes if o.label in value_bad}

    bad = {**type_bad, **value_bad}
    reasons = _reasons(bad, len(raw))
    is_bad = reasons.notna().to_numpy()
    quarantine = raw[is_bad].assign(**{REASONS_COLUMN: reasons[is_bad]})
    quarantine.index.name = INPUT_ROW
    clean_sel = np.flatnonzero(~is_bad[keep])  # positions within `rows`
    clean = to_contract_dtypes(
        {c: (parsed[c] if c in parsed.columns else rows[c]).iloc[clean_sel] for c in raw.columns}, kinds
    )

    result = ValidationResult(
        clean=clean,
        quarantine=quarantine,
        counts={label: len(positions) for label, positions in bad.items()},
        n_input=len(raw),
        max_quarantine_share=max_quarantine_share,
        outcomes=type_outcomes + value_outcomes,
    )
    return result, ids.dropna().to_numpy(np.int64)


def _positional(df: pd.DataFrame) -> pd.DataFrame:
    n = len(df)
    return df if df.index.equals(pd.RangeIndex(n)) else df.set_axis(pd.RangeIndex(n), axis=0, copy=False)


def _raise_table_failures(outcomes: list[Outcome], raw: pd.DataFrame) -> None:
    problems = []
    missing = [o.columns[0] for o in outcomes if o.label.startswith("expect_column_to_exist") and not o.success]
    if missing:
        problems.append(f"missing required columns {missing}")
    for o in outcomes:
        if o.success or o.label.startswith("expect_column_to_exist"):
            continue
        col = o.columns[0]
        if o.level == "table":
            problems.append(f"column '{col}' has dtype {raw[col].dtype}, which fails: {o.description}")
        elif o.non_null_count and o.unexpected_count == o.non_null_count:
            # Not a few bad rows but a column of the wrong kind: quarantining every row would hide that.
            problems.append(f"column '{col}': no value passes {o.label} (e.g. {list(o.examples[:3])})")
    if problems:
        raise ValidationError("the instance log breaks the contract: " + "; ".join(problems))


def _failing_rows(outcomes: list[Outcome]) -> dict[str, np.ndarray]:
    return {o.label: o.unexpected_rows for o in outcomes if o.level == "row" and o.unexpected_count}


def _later_duplicates(ids: pd.Series, keep: np.ndarray, gx_rows: np.ndarray) -> np.ndarray:
    """Of the rows GX flags as duplicates (all copies), keep the first of each id; return the rest."""
    expected = keep[np.flatnonzero(ids.notna().to_numpy() & ids.duplicated(keep=False).to_numpy())]
    assert np.array_equal(np.sort(gx_rows), expected), "GX and pandas disagree on duplicated instance_id rows"
    later = ids.duplicated(keep="first").to_numpy() & ids.notna().to_numpy()
    return keep[np.flatnonzero(later)]


def _reasons(bad: dict[str, np.ndarray], n: int) -> pd.Series:
    """Per input row: the failed expectation labels joined with '; ' (suite order), or None when clean."""
    if not bad:
        return pd.Series([None] * n, dtype=object)
    rows = np.concatenate(list(bad.values()))
    labels = np.concatenate([np.full(len(r), label, dtype=object) for label, r in bad.items()])
    # Stable sort keeps suite order among one row's labels.
    joined = pd.Series(labels, index=rows).sort_index(kind="stable").groupby(level=0).agg(REASON_SEP.join)
    return joined.reindex(pd.RangeIndex(n))
