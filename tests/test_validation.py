"""Validation with Great Expectations: each way of breaking the contract, quarantine bookkeeping, outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _frames import TS0, contract_log

from quality import (
    QuarantineThresholdError,
    ValidationError,
    ValidationResult,
    validate_log,
    write_validation_outputs,
)


def run(df: pd.DataFrame, share: float = 1.0) -> ValidationResult:
    _, schema = contract_log()
    result = validate_log(df, schema, max_quarantine_share=share)
    assert len(result.clean) + len(result.quarantine) == len(df)
    return result


def assert_quarantined(result: ValidationResult, rows: list[int], reason: str) -> None:
    """Exactly ``rows`` (input positions) are quarantined, each with ``reason`` among its reasons."""
    assert sorted(result.quarantine.index) == sorted(rows)
    for r in rows:
        assert reason in result.quarantine.loc[r, "reasons"].split("; "), result.quarantine.loc[r, "reasons"]
    assert result.counts[reason] == len(rows)
    assert len(result.clean) == result.n_input - len(rows)


def test_valid_log_passes_whole_with_contract_dtypes():
    df, _ = contract_log()
    result = run(df, share=0.0)
    assert len(result.quarantine) == 0 and result.counts == {}
    assert all(o.success for o in result.outcomes)
    c = result.clean
    assert c["instance_id"].tolist() == df["instance_id"].tolist()
    expected = {"instance_id": "int64", "user_id": "int64", "item_id": "int64", "ts": "int64", "domain": "object",
                "click": "int8", "conversion": "Int8", "conversion_ts": "Int64", "category": "int64",
                "device": "object", "price": "float32", "score": "float32"}
    assert {k: str(v) for k, v in c.dtypes.items()} == expected
    assert c["conversion"].isna().sum() == (df["click"] == 0).sum()


def test_missing_columns_fail_the_run_naming_them():
    df, _ = contract_log()
    with pytest.raises(ValidationError, match=r"missing required columns \['click', 'price'\]"):
        run(df.drop(columns=["click", "price"]))


def test_wrong_dtype_of_whole_column_fails_the_run():
    df, _ = contract_log()
    df["ts"] = pd.to_datetime(df["ts"], unit="s")
    with pytest.raises(ValidationError, match=r"column 'ts' has dtype datetime64"):
        run(df)


def test_text_column_without_any_number_fails_the_run():
    df, _ = contract_log()
    df["price"] = "cheap"
    with pytest.raises(ValidationError, match=r"column 'price': no value passes expect_column_values_to_match_regex"):
        run(df)


def test_a_few_non_numeric_strings_are_quarantined_and_the_column_coerced():
    df, _ = contract_log()
    df["price"] = df["price"].astype(object)
    df.loc[[4, 9], "price"] = ["n/a", "12,5"]
    df.loc[5, "price"] = " 7.25 "  # a number written as text is fine
    result = run(df)
    assert_quarantined(result, [4, 9], "expect_column_values_to_match_regex(price)")
    assert result.clean["price"].dtype == np.float32
    assert result.clean.loc[result.clean["instance_id"] == 1005, "price"].item() == pytest.approx(7.25)
    assert result.quarantine.loc[4, "price"] == "n/a"  # the quarantine keeps the value as it came in


def test_non_integer_id_in_a_float_column_is_quarantined():
    df, _ = contract_log()
    df["user_id"] = df["user_id"].astype(float)
    df.loc[6, "user_id"] = 2.5
    result = run(df)
    assert_quarantined(result, [6], "expect_column_values_to_match_regex(user_id)")
    assert result.clean["user_id"].dtype == np.int64


def test_duplicate_instance_id_keeps_the_first_row():
    df, _ = contract_log()
    df.loc[[3, 7], "instance_id"] = df.loc[2, "instance_id"]
    result = run(df)
    assert_quarantined(result, [3, 7], "expect_column_values_to_be_unique(instance_id)")
    assert (result.clean["instance_id"] == df.loc[2, "instance_id"]).sum() == 1
    unique = next(o for o in result.outcomes if o.label == "expect_column_values_to_be_unique(instance_id)")
    assert unique.unexpected_count == 3  # GX flags every copy; the first is kept


@pytest.mark.parametrize("column", ["user_id", "ts"])
def test_null_id_or_ts_is_quarantined(column):
    df, _ = contract_log()
    df[column] = df[column].astype(float)
    df.loc[[1, 8], column] = np.nan
    result = run(df)
    assert_quarantined(result, [1, 8], f"expect_column_values_to_not_be_null({column})")
    assert result.clean[column].dtype == np.int64


def test_click_outside_0_1_is_quarantined():
    df, _ = contract_log()
    df.loc[[2, 11], "click"] = [2, -1]
    result = run(df)
    assert_quarantined(result, [2, 11], "expect_column_values_to_be_in_set(click)")


def test_a_conversion_label_without_click_is_quarantined_even_zero():
    """The contract (and /ingest): a conversion label only on a clicked row; null elsewhere, not 0."""
    df, _ = contract_log()
    assert df.loc[1, "click"] == 0 and df.loc[2, "click"] == 0 and df["conversion"].eq(0).any()
    df.loc[1, "conversion"] = 1
    df.loc[2, "conversion"] = 0
    result = run(df)
    assert_quarantined(result, [1, 2], "expect_column_pair_values_to_be_in_set(click, conversion)")


def test_a_conversion_time_without_a_conversion_label_is_quarantined():
    df, _ = contract_log()
    row = int(df.index[df["click"].eq(0)][0])
    df.loc[row, "conversion_ts"] = df.loc[row, "ts"] + 5
    result = run(df)
    assert_quarantined(result, [row], "expect_column_values_to_be_null(conversion_ts)")


@pytest.mark.parametrize("ts", [1_700_000_000_000, -5])
def test_ts_in_milliseconds_or_negative_is_quarantined_without_a_declared_range(ts):
    """A schema without ts_min / ts_max still holds ts to seconds before 2100 (a ms log is a 1000x time axis)."""
    import dataclasses

    df, schema = contract_log()
    open_schema = dataclasses.replace(schema, ts_min=None, ts_max=None)
    df.loc[3, "ts"] = ts
    result = validate_log(df, open_schema, max_quarantine_share=1.0)
    assert list(result.quarantine.index) == [3]
    assert "expect_column_values_to_be_between(ts)" in result.quarantine.loc[3, "reasons"]
    assert "default (seconds, before 2100)" in result.outcomes[[o.label for o in result.outcomes].index("expect_column_values_to_be_between(ts)")].description


def test_offline_validation_and_ingest_state_one_label_contract():
    """The serving core refuses what validation quarantines, with the same rule text (iat.schema.LABEL_RULES)."""
    from iat.schema import LABEL_RULES, label_problem

    assert label_problem(0, 0, None, 10) == ("conversion", LABEL_RULES["conversion"])
    assert label_problem(1, None, 20, 10) == ("conversion_ts", LABEL_RULES["conversion_ts"])
    assert label_problem(1, 1, 5, 10) == ("conversion_ts", LABEL_RULES["conversion_ts"])
    assert label_problem(2, None, None, 10) == ("click", LABEL_RULES["click"])
    assert label_problem(1, 0, 12, 10) is None and label_problem(0, None, None, 10) is None
    from quality.suite import build_value_suite

    _, schema = contract_log()
    descriptions = {e.meta["description"] for e in build_value_suite(schema, ["conversion", "conversion_ts"]).expectations}
    assert set(LABEL_RULES.values()) <= descriptions


def test_conversion_time_before_impression_is_quarantined():
    df, _ = contract_log()
    converted = df.index[df["conversion"].eq(1).fillna(False)]
    df.loc[converted[0], "conversion_ts"] = df.loc[converted[0], "ts"] - 1
    result = run(df)
    assert_quarantined(result, [converted[0]], "expect_column_pair_values_a_to_be_greater_than_b(conversion_ts, ts)")


def test_nan_numeric_feature_is_quarantined():
    df, _ = contract_log()
    df.loc[[0, 13], "score"] = np.nan
    result = run(df)
    assert_quarantined(result, [0, 13], "expect_column_values_to_not_be_null(score)")


def test_inf_and_float32_overflow_are_quarantined():
    df, _ = contract_log()
    df.loc[[5, 6], "price"] = [np.inf, -np.inf]
    df.loc[7, "price"] = 1e39  # finite as float64, inf as float32
    result = run(df)
    assert_quarantined(result, [5, 6, 7], "expect_column_values_to_be_between(price)")
    assert np.isfinite(result.clean["price"]).all()


def test_ts_outside_declared_range_is_quarantined():
    df, schema = contract_log()
    df.loc[3, "ts"] = schema.ts_max + 1
    df.loc[4, "ts"] = TS0 - 1
    result = run(df)
    assert_quarantined(result, [3, 4], "expect_column_values_to_be_between(ts)")


def test_a_row_failing_several_checks_names_all_of_them():
    df, _ = contract_log()
    df.loc[10, "click"] = 5
    df.loc[10, "price"] = np.nan
    result = run(df)
    assert result.quarantine.loc[10, "reasons"] == (
        "expect_column_values_to_be_in_set(click); expect_column_values_to_not_be_null(price)"
    )


def test_counts_agree_with_great_expectations():
    df, _ = contract_log(200)
    df.loc[[1, 2, 3], "click"] = 9
    df.loc[[4, 5], "score"] = np.nan
    result = run(df)
    gx_counts = {o.label: o.unexpected_count for o in result.outcomes if o.unexpected_count}
    assert gx_counts == result.counts == {
        "expect_column_values_to_be_in_set(click)": 3,
        "expect_column_pair_values_to_be_in_set(click, conversion)": 1,  # row 3 also carries a conversion label
        "expect_column_values_to_not_be_null(score)": 2,
    }


def test_quarantine_share_above_threshold_raises_with_the_full_result(tmp_path):
    df, _ = contract_log(100)
    df.loc[range(0, 100, 10), "click"] = 7  # 10 % of the rows
    message = r"10 of 100 rows .*expect_column_values_to_be_in_set\(click\): 10 rows"
    with pytest.raises(QuarantineThresholdError, match=message) as err:
        run(df, share=0.05)
    result = err.value.result
    assert len(result.quarantine) == 10 and len(result.clean) == 90 and not result.passed
    paths = write_validation_outputs(result, tmp_path)
    assert len(pd.read_parquet(paths["quarantine"])) == 10
    assert run(df, share=0.10).passed  # at the threshold is allowed


def test_write_validation_outputs(tmp_path):
    df, _ = contract_log()
    df["price"] = df["price"].astype(object)
    df.loc[3, "price"] = "oops"  # the quarantine column then mixes floats and text
    df.loc[4, "click"] = 3
    result = run(df)
    paths = write_validation_outputs(result, tmp_path / "out")
    assert {p.name for p in paths.values()} == {
        "clean.parquet", "quarantine.parquet", "validation_report.html", "validation_summary.json"}
    clean = pd.read_parquet(paths["clean"])
    assert len(clean) == len(df) - 2
    assert str(clean["click"].dtype) == "int8" and str(clean["conversion"].dtype) == "Int8"
    q = pd.read_parquet(paths["quarantine"])
    assert q.index.name == "input_row" and sorted(q.index) == [3, 4]
    assert q.loc[3, "price"] == "oops" and q.loc[4, "reasons"] == "expect_column_values_to_be_in_set(click)"
    summary = json.loads(paths["summary"].read_text())
    assert summary["n_input"] == len(df) and summary["n_quarantine"] == 2
    assert summary["counts"] == {"expect_column_values_to_match_regex(price)": 1,
                                 "expect_column_values_to_be_in_set(click)": 1}
    page = paths["report"].read_text()
    assert "expect_column_values_to_be_in_set(click)" in page and "&#x27;oops&#x27;" in page


def test_string_log_as_read_from_csv_validates():
    """Every column text (as pandas reads a csv with one bad value per column): numbers are parsed."""
    df, _ = contract_log(20)
    text = df.astype(str).replace({"<NA>": None})
    text.loc[2, "ts"] = "yesterday"
    result = run(text)
    assert_quarantined(result, [2], "expect_column_values_to_match_regex(ts)")
    pd.testing.assert_series_equal(result.clean["ts"], df["ts"].drop(index=2).reset_index(drop=True))
    assert result.clean["conversion"].tolist() == df["conversion"].drop(index=2).tolist()
