"""Loading instance logs from parquet/csv files: format errors, round trips, string-id hashing."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from _frames import contract_log

from iat.data.files import LogFormatError, hash_id, load_log
from iat.data.io import write_dataset
from iat.schema import SchemaError
from quality import validate_log

PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


@pytest.fixture
def folder(tmp_path):
    _, schema = contract_log()
    schema.to_yaml(tmp_path / "schema.yaml")
    return tmp_path


@pytest.mark.parametrize("name", ["log.parquet", "log.csv", "log.bin"])
def test_binary_that_is_neither_parquet_nor_csv_is_refused(folder, name):
    (folder / name).write_bytes(PNG_HEAD)
    with pytest.raises(LogFormatError, match="not a parquet file|neither parquet nor"):
        load_log(folder / name)


def test_truncated_parquet_is_refused(folder):
    df, _ = contract_log()
    df.to_parquet(folder / "full.parquet")
    (folder / "cut.parquet").write_bytes((folder / "full.parquet").read_bytes()[:200])
    with pytest.raises(LogFormatError, match="cannot read parquet file"):
        load_log(folder / "cut.parquet")


def test_empty_file_is_refused(folder):
    (folder / "log.csv").write_bytes(b"")
    with pytest.raises(LogFormatError, match=r"is empty \(0 bytes\)"):
        load_log(folder / "log.csv")


def test_header_only_csv_and_zero_row_parquet_are_refused(folder):
    df, _ = contract_log()
    (folder / "log.csv").write_text(",".join(df.columns) + "\n")
    with pytest.raises(LogFormatError, match="has no rows"):
        load_log(folder / "log.csv")
    df.iloc[:0].to_parquet(folder / "log.parquet")
    with pytest.raises(LogFormatError, match="has no rows"):
        load_log(folder / "log.parquet")


def test_ragged_csv_is_refused(folder):
    (folder / "log.csv").write_text("instance_id,user_id\n1,2\n3,4,5,6\n")
    with pytest.raises(LogFormatError, match="cannot read csv file"):
        load_log(folder / "log.csv")


def test_missing_log_or_schema_gives_a_clear_error(tmp_path):
    with pytest.raises(LogFormatError, match="instance log not found"):
        load_log(tmp_path / "nope.parquet")
    df, _ = contract_log()
    df.to_parquet(tmp_path / "log.parquet")
    with pytest.raises(SchemaError, match="schema file not found"):
        load_log(tmp_path / "log.parquet")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "dataset"])
def test_round_trip_gives_the_same_clean_log(folder, fmt):
    df, schema = contract_log()
    if fmt == "csv":
        df.to_csv(folder / "log.csv", index=False)
        path = folder / "log.csv"
    elif fmt == "parquet":
        df.to_parquet(folder / "log.parquet", index=False)
        path = folder / "log.parquet"
    else:
        path = write_dataset(folder / "ds", df, schema)
    loaded, loaded_schema = load_log(path)
    assert loaded_schema == schema
    assert list(loaded.columns) == list(df.columns) and len(loaded) == len(df)
    pd.testing.assert_frame_equal(validate_log(loaded, loaded_schema).clean, validate_log(df, schema).clean)


def test_csv_keeps_bad_values_for_validation(folder):
    df, schema = contract_log()
    df["price"] = df["price"].astype(object)
    df.loc[3, "price"] = "abc"
    df.loc[4, "user_id"] = np.nan
    df.to_csv(folder / "log.csv", index=False)
    loaded, _ = load_log(folder / "log.csv")
    assert loaded.loc[3, "price"] == "abc" and len(loaded) == len(df)
    result = validate_log(loaded, schema, max_quarantine_share=1.0)
    assert sorted(result.quarantine.index) == [3, 4]


def test_domain_that_looks_numeric_stays_text(folder):
    df, _ = contract_log()
    df["domain"] = np.where(df.index % 2 == 0, "1", "2").astype(object)
    df.to_csv(folder / "log.csv", index=False)
    loaded, _ = load_log(folder / "log.csv")
    assert loaded["domain"].tolist() == df["domain"].tolist()


def test_hash_id_is_blake2b_8_bytes_non_negative():
    expected = int.from_bytes(hashlib.blake2b(b"user-42", digest_size=8).digest(), "little") & (2**63 - 1)
    assert hash_id("user-42") == expected
    assert hash_id("user-42") != hash_id("user-43")
    assert all(0 <= hash_id(s) < 2**63 for s in ["", "a", "é", "0"])


def test_string_ids_are_hashed_the_same_from_csv_and_parquet(folder):
    df, _ = contract_log(6)
    df["user_id"] = ["alice", "bob", "alice", None, "carol", "bob"]
    df["item_id"] = [f"sku-{i}" for i in range(6)]
    df.to_csv(folder / "log.csv", index=False)
    df.to_parquet(folder / "log.parquet", index=False)
    from_csv, _ = load_log(folder / "log.csv")
    from_parquet, _ = load_log(folder / "log.parquet")
    pd.testing.assert_series_equal(from_csv["user_id"], from_parquet["user_id"])
    users = from_csv["user_id"]
    assert str(users.dtype) == "Int64" and users.isna().tolist() == [False, False, False, True, False, False]
    assert users[0] == users[2] == hash_id("alice") and users[1] == hash_id("bob")
    assert from_parquet["item_id"].dtype == np.int64
    assert from_parquet["item_id"].tolist() == [hash_id(f"sku-{i}") for i in range(6)]


def test_csv_with_byte_order_mark_keeps_column_names(folder):
    df, _ = contract_log()
    df.to_csv(folder / "log.csv", index=False, encoding="utf-8-sig")
    loaded, _ = load_log(folder / "log.csv")
    assert list(loaded.columns) == list(df.columns)


def test_parquet_integers_with_nulls_keep_exact_values(folder):
    df, schema = contract_log()
    big = 2**62 + np.arange(len(df))  # not representable in float64
    df["instance_id"] = pd.array(big, dtype="Int64")
    df.loc[5, "instance_id"] = pd.NA
    df.to_parquet(folder / "log.parquet", index=False)
    loaded, _ = load_log(folder / "log.parquet")
    assert str(loaded["instance_id"].dtype) == "Int64" and loaded["instance_id"][6] == big[6]
    result = validate_log(loaded, schema, max_quarantine_share=1.0)
    assert list(result.quarantine.index) == [5]
    assert result.clean["instance_id"].tolist() == np.delete(big, 5).tolist()


def test_append_csv_rows_keeps_one_header_and_never_shows_a_partial_file(tmp_path):
    from iat.data.io import append_csv_rows

    out = tmp_path / "results.csv"
    append_csv_rows(out, [{"spec": "a", "seed": 0, "auc": 0.7}])
    append_csv_rows(out, [{"spec": "b", "seed": 1, "auc": 0.6}, {"spec": "b", "seed": 2, "auc": 0.65}])
    df = pd.read_csv(out)
    assert list(df["spec"]) == ["a", "b", "b"] and list(df["seed"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # the temporary file was renamed into place
